"""One fast-scan index over several code arrays: the candidates of searching them one by one.

Each array's last block is padded to 32 rows with zero codes, which the kernel scores like real
rows; these tests make those zero codes the best possible rows and check they never show.
"""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest

from langchain_vq.code_blocks import StoredCodes, to_blocked
from langchain_vq.quantization import BinaryQuantizer, ProductQuantizer
from langchain_vq.quantization._fast_scan import FastScanCache
from tests.conftest import clustered_vectors

DIM = 40
SPLITS = (0, 33, 73, 80, 400, 431)  # five arrays, none a multiple of 32: padding between all


def _arrays(quantizer, codes: np.ndarray) -> list[StoredCodes]:
    """The arrays as segments store them: blocked, zero-copy views."""
    return [StoredCodes(to_blocked(codes[a:b]), blocked=True) for a, b in itertools.pairwise(SPLITS)]


def _setup(name: str):
    x = clustered_vectors(SPLITS[-1], DIM, seed=11)
    if name == "binary":
        quantizer = BinaryQuantizer(DIM).fit(x)
    else:
        quantizer = ProductQuantizer(DIM, m=10, nbits=4).fit(x)
    return x, quantizer, quantizer.encode(x)


def _zero_code_queries(quantizer, x: np.ndarray) -> np.ndarray:
    """Queries for which an all-zero code is (one of) the best rows, and ordinary ones."""
    if isinstance(quantizer, BinaryQuantizer):
        # q . x_hat = q . low + (q * (high - low)) . bits, and high > low: q < 0 prefers no bits.
        worst = -np.ones((2, DIM), np.float32)
    else:
        zero = quantizer.decode(np.zeros((1, quantizer.code_size), np.uint8))
        worst = np.concatenate([zero, 2 * zero]).astype(np.float32)
    return np.concatenate([worst, clustered_vectors(6, DIM, seed=12)])


def _pairs(arrays_idx: np.ndarray, rows: np.ndarray) -> list[list[tuple[int, int]]]:
    return [list(zip(a.tolist(), r.tolist(), strict=True)) for a, r in zip(arrays_idx, rows, strict=True)]


@pytest.mark.parametrize("name", ["binary", "pq4"])
@pytest.mark.parametrize("k", [1, 10, 50, 431])
def test_joined_index_gives_the_candidates_of_the_arrays_searched_one_by_one(name: str, k: int) -> None:
    x, quantizer, codes = _setup(name)
    arrays = _arrays(quantizer, codes)
    queries = _zero_code_queries(quantizer, x)
    got = quantizer.search_many(queries, arrays, k, joined=True)
    assert len(quantizer._fast_scans) == 1  # the joined index only; no per-array indexes
    want = quantizer.search_many(queries, arrays, k)
    assert got[0].tobytes() == want[0].tobytes()
    assert _pairs(got[1], got[2]) == _pairs(want[1], want[2])
    sizes = np.diff(SPLITS)
    assert (got[2] < sizes[got[1]]).all()  # never a padding row
    if k == SPLITS[-1]:  # every row exactly once
        assert all(len(set(row)) == k for row in _pairs(got[1], got[2]))


@pytest.mark.parametrize("name", ["binary", "pq4"])
def test_joined_index_honours_masks_and_pads_short_results(name: str) -> None:
    x, quantizer, codes = _setup(name)
    arrays = _arrays(quantizer, codes)
    queries = _zero_code_queries(quantizer, x)
    rng = np.random.default_rng(3)
    masks = [rng.random(a.shape[0]) > 0.3 for a in arrays]
    masks[2] = None  # an array without deletions beside masked ones
    for k in (5, 40, 431):
        want = quantizer.search_many(queries, arrays, k, masks=masks)
        got = quantizer.search_many(queries, arrays, k, masks=masks, joined=True)
        assert got[0].tobytes() == want[0].tobytes()
        assert _pairs(got[1], got[2]) == _pairs(want[1], want[2])
        for a, r in zip(got[1].ravel(), got[2].ravel(), strict=True):
            assert a == -1 or masks[a] is None or masks[a][r]
    kept = sum(int(m.sum()) if m is not None else arrays[i].shape[0] for i, m in enumerate(masks))
    got = quantizer.search_many(queries, arrays, 431, masks=masks, joined=True)
    assert ((got[2] >= 0).sum(axis=1) == kept).all()  # the rest is padding: row and array -1
    assert np.isinf(got[0][:, kept:]).all() and (got[1][:, kept:] == -1).all()


def test_joined_index_is_kept_per_set_of_arrays_and_never_served_stale() -> None:
    x, quantizer, codes = _setup("binary")
    arrays = _arrays(quantizer, codes)
    queries = clustered_vectors(3, DIM, seed=13)
    first = quantizer._fast_scans.get_joined(arrays, quantizer._build_fast_scan)
    assert quantizer._fast_scans.get_joined(arrays, quantizer._build_fast_scan) is first
    # Another set (a new version after an add) replaces it: one joined copy of the codes in RAM.
    fewer = arrays[:3]
    second = quantizer._fast_scans.get_joined(fewer, quantizer._build_fast_scan)
    assert second is not first and len(quantizer._fast_scans) == 1
    # An array with the same shape but other bytes (a new segment) is never served the old index.
    swapped = [*fewer[:2], StoredCodes(to_blocked(codes[SPLITS[3] : SPLITS[3] + 7]), blocked=True)]
    third = quantizer._fast_scans.get_joined(swapped, quantizer._build_fast_scan)
    assert third is not second
    want = quantizer.search_many(queries, swapped, 20)
    got = quantizer.search_many(queries, swapped, 20, joined=True)
    assert _pairs(got[1], got[2]) == _pairs(want[1], want[2])
    # Refitting changes the levels: every index goes.
    quantizer.fit(x[::-1])
    assert len(quantizer._fast_scans) == 0


def test_joined_entry_goes_with_its_arrays() -> None:
    _, quantizer, codes = _setup("pq4")
    cache = FastScanCache()
    arrays = _arrays(quantizer, codes)
    cache.get_joined(arrays, quantizer._build_fast_scan)
    assert len(cache) == 1
    del arrays[1]
    gc.collect()
    assert len(cache) == 0


def test_joined_capacity_keeps_the_most_recently_used_sets() -> None:
    _, quantizer, codes = _setup("binary")
    arrays = _arrays(quantizer, codes)
    cache = FastScanCache(joined_capacity=2)
    a = cache.get_joined(arrays[:2], quantizer._build_fast_scan)
    b = cache.get_joined(arrays[2:], quantizer._build_fast_scan)
    assert cache.get_joined(arrays[:2], quantizer._build_fast_scan) is a  # now the most recent
    cache.get_joined(arrays[1:3], quantizer._build_fast_scan)  # evicts b, the least recently used
    assert cache.get_joined(arrays[:2], quantizer._build_fast_scan) is a
    assert cache.get_joined(arrays[2:], quantizer._build_fast_scan) is not b
    single = cache.get(arrays[0], quantizer._build_fast_scan)  # per-array entries are not bounded
    assert cache.get(arrays[0], quantizer._build_fast_scan) is single
    assert len(cache) == 3


@pytest.mark.parametrize("name", ["binary", "pq4"])
def test_dense_masks_are_over_fetched_and_a_short_fetch_gives_none(name: str) -> None:
    _, quantizer, codes = _setup(name)
    arrays = _arrays(quantizer, codes)
    queries = clustered_vectors(4, DIM, seed=13)
    # Every other row kept: a dense filter; the joined index answers as the arrays one by one.
    masks = [np.arange(a.shape[0]) % 2 == 0 for a in arrays]
    got = quantizer.joined_candidates(queries, arrays, 10, masks)
    assert got is not None
    kept = [StoredCodes(a.row_major[m]) for a, m in zip(arrays, masks, strict=True)]
    want = quantizer.search_many(queries, kept, 10)
    kept_rows = [np.flatnonzero(m) for m in masks]
    mapped = [[(a, int(kept_rows[a][r])) for a, r in row] for row in _pairs(want[1], want[2])]
    assert _pairs(got[1], got[2]) == mapped
    np.testing.assert_array_equal(got[0], want[0])
    # Hiding the query's best rows defeats the expected over-fetch: None, never too few rows.
    scores = quantizer.score(queries[:1], codes)[0]
    best = set(np.argsort(-scores, kind="stable")[:300].tolist())
    start, masks = 0, []
    for array in arrays:
        masks.append(np.array([start + r not in best for r in range(array.shape[0])]))
        start += array.shape[0]
    assert quantizer.joined_candidates(queries[:1], arrays, 10, masks) is None
