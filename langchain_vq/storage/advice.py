"""Memory access hints for memory-mapped segments (Linux ``madvise``); best effort, never raise.

Two-stage search reads a few scattered float rows per query. ``MADV_RANDOM`` stops the kernel
from reading ahead around each one, and ``WILLNEED`` for all of a query's candidate rows lets
their disk reads overlap when the page cache is cold (measured on a cold 200k-row store: first
50 queries p50 8 ms with the hint, 26 ms without). The hints for one query go to the kernel in
one ``process_madvise`` call (Linux 5.10+); where that call is refused, one ``madvise`` per row.

Fresh buffers that are filled at once (a fast-scan index's copy of 1M codes, 48 MB) are asked
for transparent huge pages: one fault per 2 MB instead of per 4 KB (``huge_pages``).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

MADV_RANDOM = 1
MADV_WILLNEED = 3
MADV_HUGEPAGE = 14
_PAGE = mmap.PAGESIZE
_HUGE_PAGE = 2 << 20
_IOV_MAX = 1024
_SYS_PIDFD_OPEN = 434  # same number on x86_64 and arm64 (asm-generic)
_SYS_PROCESS_MADVISE = 440
_libc = ctypes.CDLL(None, use_errno=True)
_mincore = _libc.mincore
_mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_mincore.restype = ctypes.c_int
_pidfd: dict[int, int] = {}  # pid -> pidfd of this process (reopened after fork)
_batch_works = True
_buffers = threading.local()  # .by_pages: page count -> this thread's mincore status buffer


def _madvise(address: int, length: int, advice: int) -> None:
    start = address - address % _PAGE
    _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length + address - start), advice)


def advise(array: npt.NDArray[np.generic], advice: int) -> None:
    """Give the kernel an access-pattern hint for the memory behind ``array``."""
    if array.size:
        _madvise(array.ctypes.data, array.nbytes, advice)


def huge_pages(array: npt.NDArray[np.generic]) -> None:
    """Ask for transparent huge pages behind ``array``, a fresh buffer not yet written.

    The whole 2 MB pages inside it are faulted in 2 MB at a time on first write. Copying 1M
    blocked codes (48 MB) into a new FAISS buffer: 34.6 ms with 4 KB pages, 8.2 ms with huge
    pages (worst of 7: 39.9 against 10.9 ms; ``benchmarks/measure_code_blocks.py``); in an
    ad-hoc run at load 3.3, 43 against 7.5 ms (worst of 9: 53 against 34 ms). Ignored where the
    kernel has no huge pages.
    """
    if array.nbytes >= 2 * _HUGE_PAGE:
        _madvise(array.ctypes.data, array.nbytes, MADV_HUGEPAGE)


def will_need_rows(array: npt.NDArray[np.generic], rows: npt.NDArray[np.int64]) -> None:
    """Ask the kernel to start reading these rows of ``array`` (a 2-D mapped array) now."""
    global _batch_works  # noqa: PLW0603 - a process-wide capability, probed once
    rows = np.unique(rows[rows >= 0])
    if rows.size == 0:
        return
    row_bytes = array.strides[0]
    starts = array.ctypes.data + rows.astype(np.uint64) * np.uint64(row_bytes)
    aligned = starts - starts % np.uint64(_PAGE)
    iov = np.empty((rows.size, 2), dtype=np.uint64)  # struct iovec {void *base; size_t len;}
    iov[:, 0] = aligned
    iov[:, 1] = starts + np.uint64(row_bytes) - aligned
    if _batch_works:
        pidfd = _own_pidfd()
        for start in range(0, rows.size, _IOV_MAX):
            chunk = np.ascontiguousarray(iov[start : start + _IOV_MAX])
            done = _libc.syscall(
                _SYS_PROCESS_MADVISE, pidfd, ctypes.c_void_p(chunk.ctypes.data), len(chunk), MADV_WILLNEED, 0
            )
            if done < 0:
                _batch_works = False
                break
        else:
            return
    for base, length in iov.tolist():
        _libc.madvise(ctypes.c_void_p(base), ctypes.c_size_t(length), MADV_WILLNEED)


def all_resident(array: npt.NDArray[np.generic], rows: npt.NDArray[np.int64], probes: int = 8) -> bool:
    """Whether a sample of these rows of ``array`` is in memory (``mincore``), without reading.

    Runs once per segment of every query, so it is kept to a few C calls: picks by slicing,
    one status buffer, ``mincore`` called with declared argument types.
    """
    if rows.size == 0:
        return True
    picks = rows[:: max(1, rows.size // probes)][:probes].tolist()
    row_bytes = array.strides[0]
    base = array.__array_interface__["data"][0]
    status = _status_buffer(row_bytes // _PAGE + 2)
    for row in picks:
        if row < 0:
            continue
        address = base + row * row_bytes
        start = address - address % _PAGE
        length = address + row_bytes - start
        if _mincore(start, length, status) != 0:
            return True  # not a mapping mincore can answer for (heap memory): nothing to prefetch
        for page in range((length + _PAGE - 1) // _PAGE):
            if not status[page] & 1:
                return False
    return True


def _status_buffer(pages: int) -> ctypes.Array[ctypes.c_ubyte]:
    """A ``mincore`` status buffer of ``pages`` bytes, one per thread and size (made once)."""
    buffers: dict[int, ctypes.Array[ctypes.c_ubyte]] | None = getattr(_buffers, "by_pages", None)
    if buffers is None:
        buffers = _buffers.by_pages = {}
    buffer = buffers.get(pages)
    if buffer is None:
        buffer = buffers[pages] = (ctypes.c_ubyte * pages)()
    return buffer


def _own_pidfd() -> int:
    pid = os.getpid()
    fd = _pidfd.get(pid)
    if fd is None:
        fd = _libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
        _pidfd.clear()
        _pidfd[pid] = fd
    return fd
