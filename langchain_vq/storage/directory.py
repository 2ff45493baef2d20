"""A store directory: its layout, the commit protocol, cleanup, and checks of every file.

Layout (format version 1)::

    <store>/
      _lock                                 flock: one writer process at a time
      _versions/00000000000000000042.json   manifest of version 42
      _segments/<uuid>.arrow                immutable segment (Arrow IPC, uncompressed)
      _deletions/<segment>-<version>-<uuid8>.arrow  deleted row offsets of a segment, cumulative
      _quantizers/<uuid>.arrow              quantizer state

Every data file gets a fresh name, so a file left behind by a failed or killed commit can never
block a later commit; readers trust only files a manifest lists.

Commit: write and fsync the new data files, fsync their directories, write the manifest to a
temporary file and fsync it, ``os.link`` it to the next version's name (which fails if another
writer got there first), then fsync ``_versions``. A version is either fully there or absent.
Creating a store also fsyncs the parent of every directory it creates. A failed commit removes
the files it wrote (or leaves them unreferenced for :meth:`StoreDirectory.cleanup`) and raises a
typed error; the store stays at its previous version.

Readers and cleanup (no reader ever takes a lock or writes a file):

* Once a reader has opened a version, its segment files are memory-mapped and its deletion and
  quantizer files are read into memory, so removing them later does not affect it (POSIX keeps
  an unlinked file's data alive while it is mapped or open).
* The only window in which a reader needs files that are not yet open is between reading a
  manifest and opening the files it lists. :meth:`StoreDirectory.cleanup` therefore keeps every
  version whose successor was committed less than ``grace_seconds`` ago (judged by the
  successor manifest's modification time), with all files those versions list; and it keeps any
  unlisted file younger than ``grace_seconds`` (a commit in flight).
* A reader that still finds a listed file missing (it stalled for longer than the grace period)
  retries with the newest version (``Collection.refresh``) instead of failing.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import itertools
import json
import logging
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from langchain_vq.errors import (
    CommitConflictError,
    CorruptStoreError,
    NotAStoreError,
    StoreWriteError,
)
from langchain_vq.storage.fs import FileOps
from langchain_vq.storage.lock import WriteLock
from langchain_vq.storage.manifest import FileEntry, Manifest, SegmentEntry
from langchain_vq.storage.schema import (
    DELETIONS_SCHEMA,
    FALLBACK_METADATA,
    FALLBACK_TYPES,
    FORMAT_NAME,
    LIST_COLUMN,
    METADATA_PREFIX,
    PARTITION_COLUMN,
    QUANTIZER_STATE_SCHEMA,
    SEGMENT_FORMAT_KEY,
    segment_schema,
)
from langchain_vq.storage.segment import (
    Segment,
    check_list_runs,
    check_segment_table,
    checksum,
    file_checksum,
    read_arrow_file,
    serialize_chunks,
)

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)

VERSIONS = "_versions"
SEGMENTS = "_segments"
DELETIONS = "_deletions"
QUANTIZERS = "_quantizers"
LOCK = "_lock"
_SUBDIRS = (VERSIONS, SEGMENTS, DELETIONS, QUANTIZERS)
_VERSION_DIGITS = 20
#: The only file names a manifest may list: one level below a data folder, no ``..``, no links.
_LISTED_FILE = re.compile(r"(_segments|_deletions|_quantizers)/[A-Za-z0-9_-]+\.arrow")
_TMP_PREFIX = ".tmp-"
#: Times the newest manifest is read again when cleanup removed it under the reader.
_READ_ATTEMPTS = 5
_FIXES = {
    errno_codes.ENOSPC: "free disk space (or move the store to a larger disk) and retry",
    errno_codes.EDQUOT: "free space within your disk quota and retry",
    errno_codes.EACCES: "make the store directory and its files writable by this user and retry",
    errno_codes.EPERM: "make the store directory and its files writable by this user and retry",
    errno_codes.EROFS: "the file system is read-only; remount it read-write or copy the store",
}


def write_error(action: str, path: Path, exc: OSError, detail: str = "") -> StoreWriteError:
    """A typed error for a failed write step: what failed, where, why, and the fix."""
    fix = _FIXES.get(exc.errno or 0, "check the disk and retry")
    reason = exc.strerror or str(exc)
    msg = f"Could not {action} {path}: {reason}. {detail or 'The store is unchanged.'} Fix: {fix}."
    return StoreWriteError(msg, str(path), exc.errno)


def version_file_name(version: int) -> str:
    """File name of the manifest of ``version``."""
    return f"{version:0{_VERSION_DIGITS}d}.json"


class StoreDirectory:
    """Reads and writes the files of one store; knows nothing of search or LangChain."""

    def __init__(self, path: str | os.PathLike[str], fs: FileOps | None = None) -> None:
        self.path = Path(path)
        self.fs = fs or FileOps()
        self.lock = WriteLock(self.path / LOCK)
        self._uncommitted: list[Path] = []  # files written for a commit that has not happened yet

    # -- create / open -----------------------------------------------------------------------
    def exists(self) -> bool:  # noqa: C901 - one check per way a folder can be wrong
        """Whether ``path`` holds a store (raises if it holds something else).

        A directory left by a creation that was interrupted before its first version was
        committed (only empty store folders) counts as absent, so it is created again.
        """
        if self.path.is_symlink():
            msg = (
                f"Store path {self.path} is a symbolic link (to {self.path.readlink()}); stores "
                "are opened only through their real directory. Pass os.path.realpath() of it."
            )
            raise NotAStoreError(msg)
        if not self.path.exists():
            return False
        if not self.path.is_dir():
            msg = (
                f"Store path {self.path} is a file, expected a directory. Pass a directory "
                "path (it is created if absent)."
            )
            raise NotAStoreError(msg)
        if (self.path / VERSIONS).is_dir():
            for sub in _SUBDIRS:
                if (self.path / sub).is_symlink():
                    msg = (
                        f"{self.path / sub} is a symbolic link; a store's folders must be real "
                        "directories inside it. Replace the link with the directory it points to."
                    )
                    raise NotAStoreError(msg)
            if self.versions():
                return True
            if any(self._holds_data(self.path / sub) for sub in _SUBDIRS):
                msg = f"Store {self.path} has data files but no committed version in {VERSIONS}/; damaged."
                raise CorruptStoreError(msg, str(self.path / VERSIONS))
            return False
        names = set(os.listdir(self.path))
        if names <= {*_SUBDIRS, LOCK} and not any(self._holds_data(self.path / n) for n in names - {LOCK}):
            return False  # empty, or a creation interrupted before _versions/ was made
        if names:
            msg = (
                f"Directory {self.path} is not empty and holds no langchain_vq store (no "
                f"{VERSIONS}/ folder). Pass an empty or new directory, or the folder of an "
                "existing langchain_vq store."
            )
            raise NotAStoreError(msg)
        return False

    @staticmethod
    def _holds_data(folder: Path) -> bool:
        """Whether a store folder holds anything but temporary files of an unfinished commit."""
        return folder.is_dir() and any(not n.startswith(_TMP_PREFIX) for n in os.listdir(folder))

    def create(self, manifest: Manifest) -> bool:
        """Lay out a new, empty store whose first version is ``manifest``.

        Returns False if another process created the store first (its version 0 stands).
        """
        missing = []
        for directory in [self.path, *self.path.parents]:
            if directory.exists():
                break
            missing.append(directory)
        try:
            for directory in reversed(missing):
                self.fs.mkdir(directory)
            for sub in _SUBDIRS:
                self.fs.mkdir(self.path / sub)
            self.fs.fsync_dir(self.path)
            for directory in missing:  # make each new directory's name durable in its parent
                self.fs.fsync_dir(directory.parent)
        except OSError as exc:
            raise write_error("create the store directory", self.path, exc) from exc  # noqa: EM101
        try:
            self.commit(manifest)
        except CommitConflictError:
            return False
        return True

    def versions(self) -> list[int]:
        """Committed version numbers, ascending."""
        found = []
        for entry in os.listdir(self.path / VERSIONS):
            stem, dot, ext = entry.partition(".")
            if dot and ext == "json" and stem.isdigit() and len(stem) == _VERSION_DIGITS:  # not .tmp-
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
        """The manifest of ``version`` (default: the newest).

        Without ``version``, a manifest that cleanup removed between listing the versions and
        reading it (a newer version was committed meanwhile) is retried with the newer one.
        """
        if version is not None:
            return self._read_manifest(version)
        for _ in range(_READ_ATTEMPTS):
            newest = self.latest_version()
            try:
                return self._read_manifest(newest)
            except CorruptStoreError:
                if self.latest_version() == newest:
                    raise
        return self._read_manifest(self.latest_version())

    def _read_manifest(self, version: int) -> Manifest:
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

    def info(self) -> dict[str, Any]:
        """Rows, segments, settings, versions and bytes on disk per part, of the newest version.

        Reads only the manifest and file sizes (no segment is opened), so it is cheap on any
        store size. ``bytes.total`` is what the newest version and the manifests kept occupy.
        """
        manifest = self.read_manifest()
        manifest_bytes = 0
        versions = self.versions()
        for version in versions:
            with contextlib.suppress(FileNotFoundError):  # removed by a concurrent cleanup
                manifest_bytes += (self.path / VERSIONS / version_file_name(version)).stat().st_size
        sizes = {
            "segments": sum(s.data.bytes for s in manifest.segments),
            "deletions": sum(s.deletions.bytes for s in manifest.segments if s.deletions),
            "quantizer_state": manifest.quantizer_state.bytes if manifest.quantizer_state else 0,
            "manifests": manifest_bytes,
        }
        quantization = manifest.quantization or {}
        return {
            "path": str(self.path),
            "rows": manifest.live_rows,
            "deleted_rows": sum(s.deleted for s in manifest.segments),
            "segments": len(manifest.segments),
            "dimension": manifest.dim,
            "metric": manifest.metric,
            "quantization": quantization.get("name"),
            "quantizer_options": quantization.get("options") or {},
            "quantizer_trained": manifest.quantizer_state is not None,
            # Stores written before the option kept float32 vectors.
            "rescore_precision": quantization.get("rescore_precision", "float32"),
            "embedding_model": manifest.embedding_model,
            "version": manifest.version,
            "versions_kept": len(versions),
            "format_version": manifest.format_version,
            "bytes": {**sizes, "total": sum(sizes.values())},
        }

    # -- data files --------------------------------------------------------------------------
    def write_segment(self, segment: Segment, *, blocked_codes: bool = False) -> FileEntry:
        """Write ``segment`` durably as ``_segments/<name>.arrow``.

        ``blocked_codes``: store its codes in the fast-scan block layout (``code_blocks``), for
        quantizers that scan them with the fast-scan kernel; the file says which layout it holds.
        Rows grouped by list keep row-major codes all the same: only the partitioned scan reads
        them, and it packs each list into blocks of its own, from row-major codes without
        unpacking (``_ivf.list_blocks``; ``benchmarks/measure_grouped_lists.py``).
        """
        blocked = blocked_codes and not segment.grouped
        table = segment.blocked_table() if blocked else segment.row_major_table()
        return self._write_table(f"{SEGMENTS}/{segment.name}.arrow", table)

    def write_deletions(self, segment: str, version: int, rows: npt.NDArray[np.int64]) -> FileEntry:
        """Write the cumulative deleted row offsets of ``segment`` as of ``version``."""
        table = pa.table({"row": pa.array(np.sort(rows).astype(np.uint32), pa.uint32())}, DELETIONS_SCHEMA)
        # A unique suffix: a file left by a failed commit of this version never blocks a retry.
        return self._write_table(f"{DELETIONS}/{segment}-{version}-{uuid.uuid4().hex[:8]}.arrow", table)

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
        chunks = serialize_chunks(table)
        path = self.path / relative
        try:
            self.fs.write_new(path, chunks)
        except OSError as exc:
            self.discard_uncommitted()
            raise write_error("write", path, exc) from exc  # noqa: EM101
        self._uncommitted.append(path)
        size = sum(memoryview(chunk).nbytes for chunk in chunks)
        return FileEntry(file=relative, bytes=size, checksum=checksum(chunks))

    def discard_uncommitted(self) -> None:
        """Remove the files written since the last commit (called when a write fails)."""
        for path in self._uncommitted:
            try:
                self.fs.remove(path)
            except OSError as exc:  # left unreferenced; cleanup() removes it later
                logger.warning("Could not remove %s after a failed commit (%s).", path, exc)
        self._uncommitted.clear()

    def read_segment(self, entry: SegmentEntry, dim: int, code_size: int | None) -> Segment:
        """Memory-map a segment file and check it against its manifest entry."""
        path = self._checked_path(entry.data)
        codes = code_size if entry.has_codes else None

        def expected(found: pa.Schema) -> pa.Schema:
            """Format 1 exactly; format 2: the fixed columns around the file's own metadata columns.

            A format-2 fallback column may be of any of the ``FALLBACK_TYPES``.
            """
            partitioned = codes is not None and found.get_field_index(PARTITION_COLUMN) >= 0
            grouped = codes is not None and found.get_field_index(LIST_COLUMN) >= 0
            if SEGMENT_FORMAT_KEY not in (found.metadata or {}):
                return segment_schema(dim, codes, partitioned=partitioned, grouped=grouped)
            metadata_fields = [f for f in found if f.name.startswith(METADATA_PREFIX)]
            index = found.get_field_index(FALLBACK_METADATA)
            fallback = found.field(index).type if index >= 0 else None
            fallback = fallback if fallback is not None and fallback in FALLBACK_TYPES else None
            return segment_schema(
                dim,
                codes,
                metadata_fields,
                entry.vectors,
                fallback_type=fallback,
                partitioned=partitioned,
                grouped=grouped,
            )

        table = read_arrow_file(path, expected, entry.rows)
        check_segment_table(table, path)
        check_list_runs(table, str(path))
        return Segment(entry.name, table, path=str(path))

    def read_deletions(self, entry: SegmentEntry) -> npt.NDArray[np.int64]:
        """Deleted row offsets of a segment (empty if none)."""
        if entry.deletions is None:
            return np.empty(0, dtype=np.int64)
        path = self._checked_path(entry.deletions, verify_checksum=True)
        table = read_arrow_file(path, DELETIONS_SCHEMA, entry.deleted)
        rows = table.column("row").to_numpy().astype(np.int64)
        if rows.size and (rows.max() >= entry.rows or np.unique(rows).size != rows.size):
            msg = f"Deletion file {path} lists rows outside segment {entry.name} or twice; damaged."
            raise CorruptStoreError(msg, str(path))
        return rows

    def read_quantizer_state(self, entry: FileEntry) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config and learned arrays written by :meth:`write_quantizer_state`."""
        path = self._checked_path(entry, verify_checksum=True)
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

    def _listed_path(self, entry: FileEntry) -> Path:
        """Path of a file a manifest lists, refusing names that leave the store's folders."""
        if not isinstance(entry.file, str) or not _LISTED_FILE.fullmatch(entry.file):
            msg = (
                f"The manifest of store {self.path} lists the file {entry.file!r}, which is not a "
                "data file inside the store (expected _segments/, _deletions/ or _quantizers/ "
                "<name>.arrow); the manifest is damaged or was forged."
            )
            raise CorruptStoreError(msg, str(self.path / VERSIONS))
        return self.path / entry.file

    def _checked_path(self, entry: FileEntry, *, verify_checksum: bool = False) -> Path:
        """Path of a listed file after cheap checks: a regular file (no link) of the right size.

        Small files (deletions, quantizer state) are also checksummed; segments are
        checksummed by :meth:`verify` only, since reading them whole would defeat memory mapping.
        """
        path = self._listed_path(entry)
        try:
            info = path.lstat()
        except FileNotFoundError as exc:
            msg = f"Store file {path} listed in the manifest is missing; the store is damaged."
            raise CorruptStoreError(msg, str(path)) from exc
        if not stat.S_ISREG(info.st_mode):
            msg = (
                f"Store file {path} is a symbolic link or not a regular file; store files must be "
                "regular files inside the store. The store was tampered with; restore the file."
            )
            raise CorruptStoreError(msg, str(path))
        if info.st_size != entry.bytes:
            msg = f"Store file {path} has {info.st_size} bytes, the manifest says {entry.bytes}; damaged."
            raise CorruptStoreError(msg, str(path))
        if verify_checksum and (found := file_checksum(path)) != entry.checksum:
            msg = f"Store file {path} has checksum {found}, the manifest says {entry.checksum}; damaged."
            raise CorruptStoreError(msg, str(path))
        return path

    # -- commit ------------------------------------------------------------------------------
    def commit(self, manifest: Manifest) -> None:
        """Publish ``manifest`` as its version, atomically and durably.

        Raises:
            CommitConflictError: that version already exists (another writer won).
            StoreWriteError: a write step failed; the version was not published and the files
                written for it are removed (except when only the final directory fsync failed:
                then the version is visible but may not survive a power loss, as the message says).
        """
        versions = self.path / VERSIONS
        target = versions / version_file_name(manifest.version)
        tmp = versions / f"{_TMP_PREFIX}{uuid.uuid4().hex}.json"
        step = "write"
        try:
            for sub in (SEGMENTS, DELETIONS, QUANTIZERS):
                step = "fsync the directory"
                self.fs.fsync_dir(self.path / sub)
            step = "write"
            self.fs.write_new(tmp, [manifest.to_json()])
            step = "publish version"
            self.fs.link(tmp, target)
        except FileExistsError as exc:
            self._remove_quietly(tmp)
            self.discard_uncommitted()
            msg = (
                f"Version {manifest.version} of store {self.path} was committed by another "
                "writer first. Call refresh() and retry."
            )
            raise CommitConflictError(msg) from exc
        except OSError as exc:
            self._remove_quietly(tmp)
            self.discard_uncommitted()
            where = Path(exc.filename) if exc.filename else tmp
            raise write_error(step, where, exc) from exc
        # Published: the files now belong to a version. A leftover temporary name is harmless
        # (readers ignore it, cleanup() removes it).
        self._uncommitted.clear()
        self._remove_quietly(tmp)
        try:
            self.fs.fsync_dir(versions)
        except OSError as exc:
            detail = (
                f"Version {manifest.version} is visible to readers but may not survive a power "
                "loss until the next successful commit."
            )
            raise write_error("fsync the directory", versions, exc, detail) from exc  # noqa: EM101

    def _remove_quietly(self, path: Path) -> None:
        try:
            self.fs.remove(path)
        except OSError as exc:
            logger.warning("Could not remove %s (%s); cleanup() will remove it later.", path, exc)

    # -- checks and cleanup ------------------------------------------------------------------
    def verify(self, manifest: Manifest) -> list[str]:
        """Every problem found in ``manifest``'s files (checksums included); empty if none."""
        problems = []
        for entry in manifest.files():
            try:
                path = self._listed_path(entry)
            except CorruptStoreError as exc:
                problems.append(str(exc))
                continue
            try:
                info = path.lstat()
            except FileNotFoundError:
                problems.append(f"{path}: missing")
                continue
            if not stat.S_ISREG(info.st_mode):
                problems.append(f"{path}: not a regular file (a symbolic link?)")
            elif info.st_size != entry.bytes:
                problems.append(f"{path}: {info.st_size} bytes, expected {entry.bytes}")
            elif (found := file_checksum(path)) != entry.checksum:
                problems.append(f"{path}: checksum {found}, expected {entry.checksum}")
        return problems

    def cleanup(self, keep: Manifest, grace_seconds: float) -> list[str]:  # noqa: C901, PLR0912
        """Remove older manifests and files that no version a reader may be opening needs.

        Call it holding the write lock, with ``keep`` the newest version. Kept: ``keep`` and
        every version whose successor was committed less than ``grace_seconds`` ago, with all
        the files they list, and any other file younger than ``grace_seconds``. A file that
        cannot be removed is logged and left for the next cleanup. Returns the removed paths,
        relative to the store.
        """
        now = time.time()
        protected = {keep.version}
        needed = {entry.file for entry in keep.files()}
        versions = self.versions()
        for older, newer in itertools.pairwise(versions):
            try:
                successor_age = now - (self.path / VERSIONS / version_file_name(newer)).stat().st_mtime
            except FileNotFoundError:
                continue
            if older >= keep.version or successor_age < grace_seconds:
                protected.add(older)
                try:
                    needed.update(entry.file for entry in self.read_manifest(older).files())
                except CorruptStoreError:
                    continue  # a damaged old manifest cannot be opened anyway
        protected.update(v for v in versions if v > keep.version)
        removed = []
        for sub in (SEGMENTS, DELETIONS, QUANTIZERS, VERSIONS):
            for name in sorted(os.listdir(self.path / sub)):
                relative = f"{sub}/{name}"
                if relative in needed:
                    continue
                stem, _, ext = name.partition(".")
                if sub == VERSIONS and ext == "json" and stem.isdigit() and int(stem) in protected:
                    continue
                path = self.path / relative
                try:
                    if now - path.lstat().st_mtime < grace_seconds:
                        continue
                    self.fs.remove(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("Could not remove %s (%s); the next cleanup retries.", path, exc)
                    continue
                removed.append(relative)
        if removed:
            for sub in (SEGMENTS, DELETIONS, QUANTIZERS, VERSIONS):
                try:
                    self.fs.fsync_dir(self.path / sub)
                except OSError as exc:
                    logger.warning("Could not fsync %s after cleanup (%s).", self.path / sub, exc)
        return removed


def store_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:meth:`StoreDirectory.info` of the store at ``path``; raises if none is there."""
    directory = StoreDirectory(path)
    if not directory.exists():
        msg = f"No langchain_vq store at {path}; create one by adding documents to a store at that path."
        raise NotAStoreError(msg)
    return directory.info()


__all__ = ["FORMAT_NAME", "StoreDirectory", "store_info", "version_file_name", "write_error"]
