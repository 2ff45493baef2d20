"""top_k: best first, ties within the kept set by index, -inf last; one query and a batch agree."""

from __future__ import annotations

import numpy as np
import pytest

from langchain_vq import topk
from langchain_vq.topk import top_k


def _reference(scores: np.ndarray, k: int, indices: np.ndarray) -> tuple[list, list]:
    out_s, out_i = [], []
    for row, ids in zip(scores.tolist(), indices.tolist(), strict=True):
        best = sorted(zip(row, ids, strict=True), key=lambda p: (-p[0], p[1]))[:k]
        out_s.append([s for s, _ in best])
        out_i.append([i for s, i in best if s > -np.inf])  # which skipped (-inf) ones fill up is open
    return out_s, out_i


def _finite(scores: np.ndarray, indices: np.ndarray) -> list[list[int]]:
    return [
        [i for s, i in zip(r, ids, strict=True) if s > -np.inf]
        for r, ids in zip(scores, indices, strict=True)
    ]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_top_k_matches_a_sorted_reference_for_one_and_many_queries(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    scores = rng.standard_normal((4, n)).astype(np.float32)
    scores[:, : n // 3] = scores[:, n // 3 : 2 * (n // 3)]  # exact ties, kept in index order
    scores[rng.random((4, n)) < 0.15] = -np.inf
    indices = rng.permutation(1000)[:n][None, :].repeat(4, axis=0).astype(np.int64)
    want_s, want_i = _reference(scores, k, indices)
    got_s, got_i = top_k(scores, k, indices)
    assert got_s.tolist() == want_s
    assert _finite(got_s, got_i) == want_i
    for q in range(4):  # the single-query path
        one_s, one_i = top_k(scores[q : q + 1], k, indices[q : q + 1])
        assert one_s.dtype == np.float32
        assert one_i.dtype == np.int64
        assert one_s.tolist() == [want_s[q]]
        assert _finite(one_s, one_i) == [want_i[q]]
    default_s, default_i = top_k(scores[:1], k)
    assert _finite(default_s, default_i) == _reference(scores[:1], k, np.arange(n)[None, :])[1]


@pytest.mark.parametrize("sort_all_max", [0, topk._SORT_ALL_MAX])  # partition first, or order all
@pytest.mark.parametrize("seed", range(10))
def test_single_query_path_equals_the_batch_path_exactly(seed: int, sort_all_max: int, monkeypatch) -> None:
    """The one-query fast path picks the same rows in the same order as the batch path, -inf fill included."""
    monkeypatch.setattr(topk, "_SORT_ALL_MAX", sort_all_max)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    scores = rng.integers(-5, 5, size=(6, n)).astype(np.float32)  # many exact ties
    scores[rng.random((6, n)) < 0.3] = -np.inf
    indices = rng.permutation(10_000)[:n][None, :].repeat(6, axis=0).astype(np.int64)
    for k in (1, 2, n // 2 + 1, n - 1, n, n + 5):
        for given in (indices, None):
            batch_s, batch_i = top_k(scores, k, given)
            for q in range(6):
                one_s, one_i = top_k(scores[q : q + 1], k, None if given is None else given[q : q + 1])
                assert one_s.tolist() == batch_s[q : q + 1].tolist()
                assert one_i.tolist() == batch_i[q : q + 1].tolist()
