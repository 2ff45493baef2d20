"""The fast-scan block layout: FAISS's own packing reproduced, and stored codes read back exactly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest

from langchain_vq.code_blocks import StoredCodes, pack_blocks, to_blocked, unpack_blocks

WIDTH = 48


def _codes(n: int, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, width), dtype=np.uint8)


def _faiss_blocks(codes: np.ndarray) -> np.ndarray:
    """FAISS's packing: an ``IndexPQ`` holding the codes, converted to ``IndexPQFastScan``."""
    n_sub = 2 * codes.shape[1]
    flat = faiss.IndexPQ(n_sub * 2, n_sub, 4, faiss.METRIC_INNER_PRODUCT)
    flat.is_trained = True
    flat.add_sa_codes(codes)
    fast = faiss.IndexPQFastScan(flat)  # type: ignore[arg-type]
    return np.array(faiss.rev_swig_ptr(fast.codes.get(), fast.codes.size()), copy=True)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 100, 1000])
def test_packing_matches_faiss_byte_for_byte(n: int) -> None:
    codes = _codes(n, seed=n)
    assert np.array_equal(pack_blocks(codes), _faiss_blocks(codes))


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 1000, 1031])
def test_blocked_codes_read_back_row_by_row(n: int) -> None:
    codes = _codes(n, seed=n + 1)
    stored = to_blocked(codes)
    assert stored.shape == codes.shape  # the same bytes as row-major codes
    if n >= 32:
        assert not np.array_equal(stored, codes)  # the full blocks really are interleaved
    assert np.array_equal(unpack_blocks(pack_blocks(codes), n, WIDTH), codes)
    rows = np.random.default_rng(n).integers(0, max(n, 1), 64) if n else np.empty(0, np.int64)
    assert np.array_equal(StoredCodes(stored, blocked=True).take(rows), codes[rows])
    blocked = StoredCodes(stored, blocked=True)
    assert np.array_equal(blocked.blocks(), pack_blocks(codes))
    assert np.array_equal(blocked.row_major, codes)
    assert np.array_equal(blocked.take(rows), codes[rows])  # from the unpacked copy now
    assert np.array_equal(StoredCodes(codes).blocks(), pack_blocks(codes))


def test_row_major_codes_with_padding_pack_their_first_bytes_only() -> None:
    codes = _codes(40, width=64)
    assert np.array_equal(
        StoredCodes(codes).blocks(WIDTH), pack_blocks(np.ascontiguousarray(codes[:, :WIDTH]))
    )
    with pytest.raises(ValueError, match="Blocked codes hold 64 bytes per row"):
        StoredCodes(to_blocked(codes), blocked=True).blocks(WIDTH)


def test_gathers_from_several_threads_while_the_rows_unpack_agree() -> None:
    codes = _codes(20_000, seed=7)
    stored = StoredCodes(to_blocked(codes), blocked=True)
    picks = [np.random.default_rng(seed).integers(0, 20_000, 500) for seed in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:  # the first take starts the unpacking thread
        taken = list(pool.map(stored.take, picks))
    for rows, got in zip(picks, taken, strict=True):
        assert np.array_equal(got, codes[rows])
    assert np.array_equal(stored.row_major, codes)


def test_unpacked_for_one_use_is_not_kept() -> None:
    codes = np.random.default_rng(5).integers(0, 256, size=(100, 6), dtype=np.uint8)
    stored = StoredCodes(to_blocked(codes), blocked=True)
    np.testing.assert_array_equal(stored.unpacked(), codes)
    assert stored._unpacked is None  # not kept: row_major keeps its own copy when asked
    assert stored.unpacked() is not stored.unpacked()
    np.testing.assert_array_equal(stored.row_major, codes)
    assert stored.unpacked() is stored.row_major  # the kept copy, once there is one
