"""Memory hints for mapped segments: residency probe and prefetch behave and never raise."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from langchain_vq.storage.advice import MADV_RANDOM, advise, all_resident, will_need_rows


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
