"""The few file operations a commit needs, behind one small interface.

Every write of the store goes through a :class:`FileOps`, so tests can substitute a double that
injects I/O errors or simulates power loss (dropping writes that were not fsynced) without
patching the ``os`` module (the test suite's ``tests/reliability/faults.py``). Reads use ``os`` directly.
Errors are raised as the plain ``OSError`` of the failed call; :class:`StoreDirectory` turns them
into typed :class:`~langchain_vq.errors.StoreWriteError` with the path and the fix.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


class FileOps:
    """Durable file operations on the real file system."""

    def write_new(self, path: Path, chunks: Iterable[bytes | memoryview]) -> None:
        """Create ``path`` (it must not exist), write ``chunks``, fsync and close it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view.nbytes:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.remove(path)
            raise
        os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        """Make the entries of directory ``path`` (new names, links, removals) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def link(self, src: Path, dst: Path) -> None:
        """Give ``src`` the second name ``dst``; raises ``FileExistsError`` if ``dst`` exists."""
        os.link(src, dst)

    def mkdir(self, path: Path) -> None:
        """Create directory ``path`` if absent (its parent must exist)."""
        path.mkdir(exist_ok=True)

    def remove(self, path: Path) -> None:
        """Remove file ``path`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
