"""Test doubles of :class:`~langchain_vq.storage.fs.FileOps`: injected I/O errors and power loss.

:class:`JournalingFileOps` performs every operation on the real file system (so the store works
normally) and records it as a :class:`Step` in a journal: ``mkdir``, ``create``, ``write``,
``fsync``, ``close``, ``link``, ``remove``, ``fsync_dir``, plus ``mark`` steps the caller adds
(e.g. "commit 3 acknowledged"). It can fail a chosen step with an ``OSError`` (``ENOSPC``,
``EACCES``...), for I/O error tests.

:func:`crash_image` replays a prefix of the journal on a model of what is *durable* and writes
one on-disk state that a power loss at that point could leave, in the manner of SQLite's crash
VFS and of ALICE (Pillai et al., OSDI 2014):

* file content written but not fsynced may be lost, kept, cut at any length, or torn (a region
  replaced by zeros or garbage); content fsynced survives;
* a directory entry created, linked or removed since the directory's last fsync may or may not
  have reached the disk, independently of the others; a directory whose own entry did not
  persist vanishes with everything in it.

The journal must start on an empty directory (the base state, assumed durable); the store is
created inside it. Test-only: it lives in the test tree, outside the package.
"""

from __future__ import annotations

import errno as errno_codes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from langchain_vq.storage.fs import FileOps

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

StepKind = Literal["mkdir", "create", "write", "fsync", "close", "link", "remove", "fsync_dir", "mark"]
#: Step kinds that touch the disk (and so can fail); ``mark`` and ``close`` never fail.
FALLIBLE: frozenset[str] = frozenset({"mkdir", "create", "write", "fsync", "link", "remove", "fsync_dir"})
CrashMode = Literal["random", "nothing", "everything"]


@dataclass(frozen=True)
class Step:
    """One recorded file operation."""

    kind: StepKind
    path: Path
    data: bytes = b""
    target: Path | None = None  # the new name of a ``link``
    label: str = ""  # the caller's text of a ``mark``


class JournalingFileOps(FileOps):
    """Real file operations that are journaled and can fail on purpose.

    Args:
        fail_at: Index of the step (counting fallible steps only, from 0) that raises ``OSError``.
        error: The ``errno`` of the injected error (default ``ENOSPC``).
        fail_kinds: Only steps of these kinds are counted for ``fail_at`` (default: all fallible).
    """

    def __init__(
        self,
        *,
        fail_at: int | None = None,
        error: int = errno_codes.ENOSPC,
        fail_kinds: Iterable[str] = FALLIBLE,
    ) -> None:
        self.steps: list[Step] = []
        self.fail_at = fail_at
        self.error = error
        self.fail_kinds = frozenset(fail_kinds)
        self.fallible_seen = 0  # fallible steps attempted so far
        self.failed: Step | None = None

    def mark(self, label: str) -> None:
        """Record a caller's marker (e.g. that a commit was acknowledged)."""
        self.steps.append(Step("mark", Path(), label=label))

    def _step(self, kind: StepKind, path: Path, data: bytes = b"", target: Path | None = None) -> None:
        step = Step(kind, path, data, target)
        if kind in self.fail_kinds:
            index = self.fallible_seen
            self.fallible_seen += 1
            if index == self.fail_at:
                self.failed = step
                raise OSError(self.error, os.strerror(self.error), str(path))
        self.steps.append(step)

    # -- FileOps -----------------------------------------------------------------------------
    def write_new(self, path: Path, chunks: Iterable[bytes | memoryview]) -> None:
        self._step("create", path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in chunks:
                data = bytes(chunk)
                self._step("write", path, data)
                view = memoryview(data)
                while view.nbytes:
                    view = view[os.write(fd, view) :]
            self._step("fsync", path)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.steps.append(Step("close", path))
            self.remove(path)
            raise
        os.close(fd)
        self.steps.append(Step("close", path))

    def fsync_dir(self, path: Path) -> None:
        self._step("fsync_dir", path)
        super().fsync_dir(path)

    def link(self, src: Path, dst: Path) -> None:
        self._step("link", src, target=dst)
        os.link(src, dst)

    def mkdir(self, path: Path) -> None:
        if path.is_dir():
            return
        self._step("mkdir", path)
        path.mkdir()

    def remove(self, path: Path) -> None:
        if not path.exists():
            return
        self._step("remove", path)
        path.unlink()


# -- power loss ------------------------------------------------------------------------------
@dataclass(eq=False)
class _File:
    data: bytearray = field(default_factory=bytearray)
    synced: bytes | None = None  # content as of the last fsync; None if never fsynced


@dataclass(eq=False)
class _Dir:
    durable: dict[str, _File | _Dir] = field(default_factory=dict)
    pending: list[tuple[str, str, _File | _Dir | None]] = field(default_factory=list)

    def current(self) -> dict[str, _File | _Dir]:
        entries = dict(self.durable)
        for op, name, node in self.pending:
            _apply(entries, op, name, node)
        return entries


def _apply(entries: dict[str, _File | _Dir], op: str, name: str, node: _File | _Dir | None) -> None:
    if op == "add" and node is not None:
        entries[name] = node
    else:
        entries.pop(name, None)


class _Model:
    """What the disk holds (durably and in the page cache) after replaying journal steps."""

    def __init__(self, root: Path) -> None:
        self.root_path = root
        self.root = _Dir()

    def _resolve(self, path: Path) -> _File | _Dir:
        node: _File | _Dir = self.root
        for part in path.relative_to(self.root_path).parts:
            if not isinstance(node, _Dir):
                raise NotADirectoryError(path)
            node = node.current()[part]
        return node

    def _parent(self, path: Path) -> _Dir:
        parent = self._resolve(path.parent)
        if not isinstance(parent, _Dir):
            raise NotADirectoryError(path)
        return parent

    def apply(self, step: Step) -> None:
        if step.kind == "mkdir":
            self._parent(step.path).pending.append(("add", step.path.name, _Dir()))
        elif step.kind == "create":
            self._parent(step.path).pending.append(("add", step.path.name, _File()))
        elif step.kind == "write":
            node = self._resolve(step.path)
            assert isinstance(node, _File)
            node.data += step.data
        elif step.kind == "fsync":
            node = self._resolve(step.path)
            assert isinstance(node, _File)
            node.synced = bytes(node.data)
        elif step.kind == "link":
            assert step.target is not None
            self._parent(step.target).pending.append(("add", step.target.name, self._resolve(step.path)))
        elif step.kind == "remove":
            self._parent(step.path).pending.append(("del", step.path.name, None))
        elif step.kind == "fsync_dir":
            node = self._resolve(step.path)
            assert isinstance(node, _Dir)
            node.durable = node.current()
            node.pending = []


def crash_image(
    root: Path, steps: list[Step], upto: int, dest: Path, rng: np.random.Generator, mode: CrashMode = "random"
) -> None:
    """Write into ``dest`` a state of ``root`` that power loss after ``steps[:upto]`` could leave.

    Args:
        root: The directory the journal started on (empty at the start).
        steps: The journal of a :class:`JournalingFileOps`.
        upto: How many steps happened before the power went out.
        dest: An empty or absent directory; receives what ``root`` would hold after reboot.
        rng: Source of the random choices (seed it to reproduce a case).
        mode: ``"random"`` (each unsynced change survives or not, files may be torn),
            ``"nothing"`` (only what was fsynced survives) or ``"everything"`` (all survived).
    """
    model = _Model(root)
    for step in steps[:upto]:
        model.apply(step)
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[int, Path] = {}
    _materialize(model.root, dest, rng, mode, written)


def _materialize(
    node: _Dir, dest: Path, rng: np.random.Generator, mode: CrashMode, written: dict[int, Path]
) -> None:
    entries = dict(node.durable)
    for op, name, child in node.pending:
        if mode == "everything" or (mode == "random" and rng.random() < 0.5):
            _apply(entries, op, name, child)
    for name, child in sorted(entries.items()):
        path = dest / name
        if isinstance(child, _Dir):
            path.mkdir()
            _materialize(child, path, rng, mode, written)
        elif id(child) in written:
            os.link(written[id(child)], path)  # a hard link: both names show one content
        else:
            path.write_bytes(_content_after_crash(child, rng, mode))
            written[id(child)] = path


def _content_after_crash(node: _File, rng: np.random.Generator, mode: CrashMode) -> bytes:
    data = bytes(node.data)
    synced = node.synced or b""
    if node.synced == data or mode == "everything":
        return data
    if mode == "nothing":
        return synced
    choice = int(rng.integers(4))
    if choice == 0:  # the unsynced writes were lost
        return synced
    if choice == 1:  # cut at any length
        return data[: int(rng.integers(0, len(data) + 1))]
    if choice == 2:  # all there
        return data
    torn = bytearray(data)  # a region of the file holds zeros or garbage
    start = int(rng.integers(0, max(len(torn), 1)))
    stop = min(len(torn), start + int(rng.integers(1, 4097)))
    filler = bytes(stop - start) if rng.random() < 0.5 else rng.bytes(stop - start)
    torn[start:stop] = filler
    return bytes(torn)


__all__ = ["FALLIBLE", "CrashMode", "JournalingFileOps", "Step", "crash_image"]
