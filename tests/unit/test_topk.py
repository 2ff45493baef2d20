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


@pytest.mark.parametrize("levels", [3, 40, 1000])
def test_scores_already_best_first_are_ordered_as_lexsort_orders_them(levels: int) -> None:
    # A kernel's output: best first, ties in any order. One integer sort orders each tied run by
    # index; the result is lexsort's, ties, -inf and large pooled keys (array << 40 | row) included.
    rng = np.random.default_rng(levels)
    for trial in range(200):
        n = int(rng.integers(topk._SORT_ALL_MAX + 1, 3000))
        k = int(rng.integers(1, n + 1))
        scores = np.sort(rng.integers(1, levels + 1, n).astype(np.float32) / 8)[::-1].copy()
        if trial % 4 == 0:
            scores[-int(rng.integers(1, 20)) :] = -np.inf
        keys = rng.choice(1 << int(rng.integers(12, 48)), n, replace=False).astype(np.int64)
        assert topk._ranked_best_first(scores, k, keys) is not None
        order = np.lexsort((keys, -scores))[:k]
        got = top_k(scores[None], k, keys[None])
        assert got[0].tobytes() == scores[order][None].tobytes()
        np.testing.assert_array_equal(got[1], keys[order][None])


def test_scores_not_best_first_or_with_zeros_nan_or_negative_keys_take_the_full_sort() -> None:
    rng = np.random.default_rng(3)
    scores = np.sort(rng.integers(1, 50, 900).astype(np.float32))[::-1].copy()
    keys = rng.permutation(900).astype(np.int64)
    for bad_scores, bad_keys in [
        (scores[::-1].copy(), keys),  # worst first
        (np.where(scores == scores[400], 0.0, scores).astype(np.float32), keys),  # 0.0 and -0.0 tie
        (np.where(np.arange(900) == 5, np.nan, scores).astype(np.float32), keys),
        (scores, np.where(np.arange(900) == 7, -1, keys)),
    ]:
        assert topk._ranked_best_first(bad_scores, 10, bad_keys) is None
        order = np.lexsort((bad_keys, -bad_scores))[:10]
        got = top_k(bad_scores[None], 10, bad_keys[None])
        np.testing.assert_array_equal(got[1], bad_keys[order][None])
