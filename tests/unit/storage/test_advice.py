"""Memory hints for mapped segments: residency probe and prefetch behave and never raise."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from langchain_vq.storage.advice import MADV_RANDOM, advise, all_resident, huge_pages, will_need_rows


def test_heap_memory_counts_as_resident_and_hints_are_harmless() -> None:
    x = np.ones((100, 384), dtype=np.float32)
    assert all_resident(x, np.array([0, 50, 99]))
    advise(x, MADV_RANDOM)
    will_need_rows(x, np.array([3, 3, -1, 7]))
    assert float(x.sum()) == 100 * 384


def test_mapped_rows_become_resident_after_prefetch(tmp_path) -> None:
    path = tmp_path / "rows.bin"
    rows, width = 2048, 384
    np.arange(rows * width, dtype=np.float32).tofile(path)
    with path.open("rb") as fh:
        fd = fh.fileno()
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    array = np.frombuffer(mapped, dtype=np.float32).reshape(rows, width)
    advise(array, MADV_RANDOM)
    wanted = np.array([5, 700, 1500, 2047])
    if all_resident(array, wanted):
        pytest.skip("the kernel kept the pages it was asked to drop; nothing to prefetch here")
    will_need_rows(array, wanted)
    expected = wanted[:, None] * width + np.arange(width)
    assert np.array_equal(array[wanted], expected.astype(np.float32))
    assert all_resident(array, wanted)
    del array
    mapped.close()


def _huge_page_kb(address: int) -> int | None:
    """``AnonHugePages`` of the mapping holding ``address`` (None: no smaps to read)."""
    try:
        text = open("/proc/self/smaps").read()  # noqa: PTH123, SIM115
    except OSError:
        return None
    inside = False
    for line in text.splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= address < end
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return None


def test_huge_pages_back_a_fresh_buffer_where_the_kernel_offers_them() -> None:
    modes = "/sys/kernel/mm/transparent_hugepage/enabled"
    try:
        offered = "[never]" not in open(modes).read()  # noqa: PTH123, SIM115
    except OSError:
        offered = False
    # Fresh anonymous pages not yet written (numpy's own large allocations ask for huge pages
    # themselves, so they would not show whether huge_pages did).
    memory = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer = np.frombuffer(memory, dtype=np.uint8)
    huge_pages(buffer)
    buffer[:] = 7
    assert int(buffer.sum(dtype=np.int64)) == 7 * buffer.size
    huge_pages(np.ones(100, dtype=np.uint8))  # too small for one huge page: nothing to do
    huge_pages(buffer[1::3])  # any view: never raises
    kb = _huge_page_kb(buffer.ctypes.data)
    if not offered or kb is None:
        pytest.skip(f"this kernel offers no transparent huge pages ({modes}) or no smaps")
    assert kb >= 2048  # at least one 2 MB page behind the 16 MB buffer
    del buffer
    memory.close()
