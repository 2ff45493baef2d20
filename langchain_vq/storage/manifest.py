"""Manifests: the JSON document that says which files make up one version of a store.

Readers trust only files that the newest manifest lists. A manifest carries a checksum of its own
content, so a damaged manifest is detected instead of being half-understood.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from langchain_vq.errors import CorruptStoreError, UnsupportedFormatError
from langchain_vq.storage.schema import FORMAT_NAME, FORMAT_VERSION


@dataclass(frozen=True)
class FileEntry:
    """A file of the store with the size and checksum it had when committed."""

    file: str  # relative to the store directory
    bytes: int
    checksum: str  # "crc32:<8 hex digits>"


@dataclass(frozen=True)
class SegmentEntry:
    """One immutable segment and the deletions applied to it in this version."""

    name: str
    rows: int
    data: FileEntry
    has_codes: bool
    deleted: int = 0
    deletions: FileEntry | None = None
    #: How the rescoring vectors are stored: "float32" (and every segment written before this
    #: field existed), "float16", "int8", or "none" (codes only).
    vectors: str = "float32"


@dataclass(frozen=True)
class Manifest:
    """The complete description of one committed version."""

    version: int
    dim: int | None
    metric: str
    quantization: dict[str, Any] | None
    quantizer_state: FileEntry | None = None
    embedding_model: str | None = None
    segments: tuple[SegmentEntry, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def live_rows(self) -> int:
        """Rows not deleted, across all segments."""
        return sum(s.rows - s.deleted for s in self.segments)

    def next(self, **changes: Any) -> Manifest:
        """A copy for the next version with ``changes`` applied, in the current format version.

        Committing to an older store upgrades its manifest: this code writes only segments it
        can read back, and reads the older segments as they are.
        """
        return replace(self, version=self.version + 1, format_version=FORMAT_VERSION, **changes)

    def files(self) -> list[FileEntry]:
        """Every data file this version needs."""
        entries = [self.quantizer_state] if self.quantizer_state else []
        for seg in self.segments:
            entries.append(seg.data)
            if seg.deletions:
                entries.append(seg.deletions)
        return entries

    # -- JSON --------------------------------------------------------------------------------
    def to_json(self) -> bytes:
        """Canonical JSON bytes with a checksum over the rest of the document."""
        body = asdict(self)
        body["segments"] = list(body["segments"])
        body["format"] = FORMAT_NAME
        body["checksum"] = _body_checksum(body)
        return json.dumps(body, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        """Parse and check a manifest; ``source`` names the file in errors."""
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"Manifest {source} is not valid JSON ({exc}); the file is damaged."
            raise CorruptStoreError(msg, source) from exc
        if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
            msg = f"{source} is not a langchain_vq manifest (no 'format': '{FORMAT_NAME}' field)."
            raise CorruptStoreError(msg, source)
        version = body.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            msg = (
                f"{source} uses store format version {version}; this langchain_vq reads up to "
                f"version {FORMAT_VERSION}. Upgrade langchain-vq to open this store."
            )
            raise UnsupportedFormatError(msg)
        expected = body.pop("checksum", None)
        if expected != _body_checksum(body):
            msg = f"Manifest {source} fails its checksum; the file is damaged."
            raise CorruptStoreError(msg, source)
        body.pop("format")
        try:
            body["segments"] = tuple(_segment_from_dict(s) for s in body["segments"])
            if body["quantizer_state"] is not None:
                body["quantizer_state"] = FileEntry(**body["quantizer_state"])
            return cls(**body)
        except (KeyError, TypeError) as exc:
            msg = f"Manifest {source} has a missing or unexpected field ({exc}); it is damaged."
            raise CorruptStoreError(msg, source) from exc


def _segment_from_dict(raw: dict[str, Any]) -> SegmentEntry:
    raw = dict(raw)
    raw["data"] = FileEntry(**raw["data"])
    if raw.get("deletions") is not None:
        raw["deletions"] = FileEntry(**raw["deletions"])
    return SegmentEntry(**raw)


def _body_checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"crc32:{zlib.crc32(canonical):08x}"
