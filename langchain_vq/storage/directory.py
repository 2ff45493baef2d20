"""A store directory: its layout, the commit protocol, and checks of every file.

Layout (format version 1)::

    <store>/
      _lock                                 flock: one writer process at a time
      _versions/00000000000000000042.json   manifest of version 42
      _segments/<uuid>.arrow                immutable segment (Arrow IPC, uncompressed)
      _deletions/<segment>-<version>.arrow  deleted row offsets of a segment, cumulative
      _quantizers/<uuid>.arrow              quantizer state

Commit: write and fsync the new data files, fsync their directories, write the manifest to a
temporary file and fsync it, ``os.link`` it to the next version's name (which fails if another
writer got there first), then fsync ``_versions``. A version is either fully there or absent.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from langchain_vq.errors import CommitConflictError, CorruptStoreError, NotAStoreError
from langchain_vq.storage.fs import FileOps
from langchain_vq.storage.lock import WriteLock
from langchain_vq.storage.manifest import FileEntry, Manifest, SegmentEntry
from langchain_vq.storage.schema import (
    DELETIONS_SCHEMA,
    FORMAT_NAME,
    QUANTIZER_STATE_SCHEMA,
    segment_schema,
)
from langchain_vq.storage.segment import (
    Segment,
    checksum,
    file_checksum,
    read_arrow_file,
    serialize_table,
)

if TYPE_CHECKING:
    import numpy.typing as npt

VERSIONS = "_versions"
SEGMENTS = "_segments"
DELETIONS = "_deletions"
QUANTIZERS = "_quantizers"
LOCK = "_lock"
_SUBDIRS = (VERSIONS, SEGMENTS, DELETIONS, QUANTIZERS)
_VERSION_DIGITS = 20


def version_file_name(version: int) -> str:
    """File name of the manifest of ``version``."""
    return f"{version:0{_VERSION_DIGITS}d}.json"


class StoreDirectory:
    """Reads and writes the files of one store; knows nothing of search or LangChain."""

    def __init__(self, path: str | os.PathLike[str], fs: FileOps | None = None) -> None:
        self.path = Path(path)
        self.fs = fs or FileOps()
        self.lock = WriteLock(self.path / LOCK)

    # -- create / open -----------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether ``path`` holds a store (raises if it holds something else)."""
        if not self.path.exists():
            return False
        if not self.path.is_dir():
            msg = (
                f"Store path {self.path} is a file, expected a directory. Pass a directory "
                "path (it is created if absent)."
            )
            raise NotAStoreError(msg)
        if (self.path / VERSIONS).is_dir():
            return True
        if any(self.path.iterdir()):
            msg = (
                f"Directory {self.path} is not empty and holds no langchain_vq store (no "
                f"{VERSIONS}/ folder). Pass an empty or new directory, or the folder of an "
                "existing langchain_vq store."
            )
            raise NotAStoreError(msg)
        return False

    def create(self, manifest: Manifest) -> None:
        """Lay out a new, empty store whose first version is ``manifest``."""
        self.fs.mkdir(self.path)
        for sub in _SUBDIRS:
            self.fs.mkdir(self.path / sub)
        self.fs.fsync_dir(self.path)
        self.commit(manifest)

    def versions(self) -> list[int]:
        """Committed version numbers, ascending."""
        found = []
        for entry in os.listdir(self.path / VERSIONS):
            stem, dot, ext = entry.partition(".")
            if dot and ext == "json" and stem.isdigit() and len(stem) == _VERSION_DIGITS:
                found.append(int(stem))
        return sorted(found)

    def latest_version(self) -> int:
        """The newest committed version number."""
        versions = self.versions()
        if not versions:
            msg = f"Store {self.path} has no committed version in {VERSIONS}/; it is damaged."
            raise CorruptStoreError(msg, str(self.path / VERSIONS))
        return versions[-1]

    def read_manifest(self, version: int | None = None) -> Manifest:
        """The manifest of ``version`` (default: the newest)."""
        version = self.latest_version() if version is None else version
        path = self.path / VERSIONS / version_file_name(version)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            msg = f"Manifest {path} is missing."
            raise CorruptStoreError(msg, str(path)) from exc
        manifest = Manifest.from_json(data, str(path))
        if manifest.version != version:
            msg = f"Manifest {path} says version {manifest.version}; it is damaged."
            raise CorruptStoreError(msg, str(path))
        return manifest

    # -- data files --------------------------------------------------------------------------
    def write_segment(self, segment: Segment) -> FileEntry:
        """Write ``segment`` durably as ``_segments/<name>.arrow``."""
        return self._write_table(f"{SEGMENTS}/{segment.name}.arrow", segment.table)

    def write_deletions(self, segment: str, version: int, rows: npt.NDArray[np.int64]) -> FileEntry:
        """Write the cumulative deleted row offsets of ``segment`` as of ``version``."""
        table = pa.table({"row": pa.array(np.sort(rows).astype(np.uint32), pa.uint32())}, DELETIONS_SCHEMA)
        return self._write_table(f"{DELETIONS}/{segment}-{version}.arrow", table)

    def write_quantizer_state(self, config: dict[str, Any], state: dict[str, np.ndarray]) -> FileEntry:
        """Write a quantizer's config (schema metadata) and learned arrays as an Arrow file."""
        names = sorted(state)
        table = pa.table(
            {
                "name": pa.array(names, pa.string()),
                "dtype": pa.array([state[n].dtype.str for n in names], pa.string()),
                "shape": pa.array([list(state[n].shape) for n in names], pa.list_(pa.int64())),
                "data": pa.array(
                    [np.ascontiguousarray(state[n]).tobytes() for n in names], pa.large_binary()
                ),
            },
            schema=QUANTIZER_STATE_SCHEMA.with_metadata({"config": json.dumps(config)}),
        )
        return self._write_table(f"{QUANTIZERS}/{uuid.uuid4().hex}.arrow", table)

    def _write_table(self, relative: str, table: pa.Table) -> FileEntry:
        data = serialize_table(table)
        self.fs.write_new(self.path / relative, [memoryview(data)])
        return FileEntry(file=relative, bytes=data.size, checksum=checksum(data))

    def read_segment(self, entry: SegmentEntry, dim: int, code_size: int | None) -> Segment:
        """Memory-map a segment file and check it against its manifest entry."""
        path = self._checked_path(entry.data)
        schema = segment_schema(dim, code_size if entry.has_codes else None)
        return Segment(entry.name, read_arrow_file(path, schema, entry.rows))

    def read_deletions(self, entry: SegmentEntry) -> npt.NDArray[np.int64]:
        """Deleted row offsets of a segment (empty if none)."""
        if entry.deletions is None:
            return np.empty(0, dtype=np.int64)
        path = self._checked_path(entry.deletions)
        table = read_arrow_file(path, DELETIONS_SCHEMA, entry.deleted)
        rows = table.column("row").to_numpy().astype(np.int64)
        if rows.size and (rows.max() >= entry.rows or np.unique(rows).size != rows.size):
            msg = f"Deletion file {path} lists rows outside segment {entry.name} or twice; damaged."
            raise CorruptStoreError(msg, str(path))
        return rows

    def read_quantizer_state(self, entry: FileEntry) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config and learned arrays written by :meth:`write_quantizer_state`."""
        path = self._checked_path(entry)
        table = read_arrow_file(path, None, None)
        try:
            config = json.loads(table.schema.metadata[b"config"])
            if not table.schema.remove_metadata().equals(QUANTIZER_STATE_SCHEMA):
                raise ValueError("unexpected columns")  # noqa: EM101, TRY301
            state = {}
            for row in table.to_pylist():
                array = np.frombuffer(row["data"], dtype=np.dtype(row["dtype"]))
                state[row["name"]] = array.reshape(row["shape"]).copy()
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            msg = f"Quantizer state {path} cannot be decoded ({exc}); the file is damaged."
            raise CorruptStoreError(msg, str(path)) from exc
        return config, state

    def _checked_path(self, entry: FileEntry) -> Path:
        """Path of a listed file after a cheap size check (checksums are for :meth:`verify`)."""
        path = self.path / entry.file
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            msg = f"Store file {path} listed in the manifest is missing; the store is damaged."
            raise CorruptStoreError(msg, str(path)) from exc
        if size != entry.bytes:
            msg = f"Store file {path} has {size} bytes, the manifest says {entry.bytes}; damaged."
            raise CorruptStoreError(msg, str(path))
        return path

    # -- commit ------------------------------------------------------------------------------
    def commit(self, manifest: Manifest) -> None:
        """Publish ``manifest`` as its version, atomically and durably.

        Raises:
            CommitConflictError: that version already exists (another writer won).
        """
        for sub in (SEGMENTS, DELETIONS, QUANTIZERS):
            self.fs.fsync_dir(self.path / sub)
        versions = self.path / VERSIONS
        tmp = versions / f".tmp-{uuid.uuid4().hex}.json"
        self.fs.write_new(tmp, [manifest.to_json()])
        try:
            self.fs.link(tmp, versions / version_file_name(manifest.version))
        except FileExistsError as exc:
            msg = (
                f"Version {manifest.version} of store {self.path} was committed by another "
                "writer first. Call refresh() and retry."
            )
            raise CommitConflictError(msg) from exc
        finally:
            self.fs.remove(tmp)
        self.fs.fsync_dir(versions)

    # -- checks and cleanup ------------------------------------------------------------------
    def verify(self, manifest: Manifest) -> list[str]:
        """Every problem found in ``manifest``'s files (checksums included); empty if none."""
        problems = []
        for entry in manifest.files():
            path = self.path / entry.file
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                problems.append(f"{path}: missing")
                continue
            if size != entry.bytes:
                problems.append(f"{path}: {size} bytes, expected {entry.bytes}")
            elif (found := file_checksum(path)) != entry.checksum:
                problems.append(f"{path}: checksum {found}, expected {entry.checksum}")
        return problems

    def cleanup(self, keep: Manifest, grace_seconds: float) -> list[str]:
        """Remove files and older manifests that ``keep`` (the newest version) does not need.

        Files younger than ``grace_seconds`` are kept, so a reader that opened an older version
        moments ago can still map its files.
        """
        needed = {entry.file for entry in keep.files()}
        now = time.time()
        removed = []
        for sub in (SEGMENTS, DELETIONS, QUANTIZERS, VERSIONS):
            for name in os.listdir(self.path / sub):
                relative = f"{sub}/{name}"
                if relative in needed or (sub == VERSIONS and name == version_file_name(keep.version)):
                    continue
                path = self.path / relative
                try:
                    if now - path.stat().st_mtime < grace_seconds:
                        continue
                except FileNotFoundError:
                    continue
                self.fs.remove(path)
                removed.append(relative)
        if removed:
            for sub in (SEGMENTS, DELETIONS, QUANTIZERS, VERSIONS):
                self.fs.fsync_dir(self.path / sub)
        return removed


__all__ = ["FORMAT_NAME", "StoreDirectory", "version_file_name"]
