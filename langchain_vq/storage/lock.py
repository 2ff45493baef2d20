"""The store's write lock: one writer process at a time, readers never wait.

A writer takes an exclusive ``flock`` on ``<store>/_lock`` for the span of one commit. The
caller chooses what a second writer does: fail at once (``timeout=0``), wait up to ``timeout``
seconds, or wait forever (``timeout=None``).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from langchain_vq.errors import StoreLockedError, StoreWriteError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_POLL_SECONDS = 0.01


class WriteLock:
    """An inter-process (``flock``) and inter-thread lock on one store directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self, timeout: float | None) -> Iterator[None]:
        """Hold the lock for the ``with`` block; re-entrant within one thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise self._locked_error(timeout)
        try:
            if self._depth == 0:
                self._acquire_file(deadline, timeout)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release_file()
        finally:
            self._thread_lock.release()

    def _acquire_file(self, deadline: float | None, timeout: float | None) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            msg = (
                f"Cannot open the write lock {self.path}: {exc.strerror or exc}. Writing needs a "
                "writable store directory; fix its permissions (reading works without it)."
            )
            raise StoreWriteError(msg, str(self.path), exc.errno) from exc
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._locked_error(timeout) from None
                time.sleep(_POLL_SECONDS)
            else:
                self._fd = fd
                return

    def _release_file(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _locked_error(self, timeout: float | None) -> StoreLockedError:
        waited = "without waiting" if not timeout else f"after waiting {timeout:g} s"
        msg = (
            f"The store is locked by another writer ({self.path}), {waited}. Only one process "
            "writes at a time; retry later or pass a longer lock_timeout (None waits forever)."
        )
        return StoreLockedError(msg)
