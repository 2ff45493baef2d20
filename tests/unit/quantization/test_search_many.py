"""``Quantizer.search_many``: several stored code arrays searched as one array of all their rows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization import make_quantizer
from langchain_vq.search.engine import SegmentView, search_segments
from langchain_vq.storage import build_segment
from tests.conftest import clustered_vectors

DIM = 40
SPLITS = (0, 700, 1500, 1530, 3000)  # four arrays of unequal sizes, one tiny


def _setup(name: str, options: dict | None = None):
    x = clustered_vectors(3000, DIM, seed=5)
    queries = clustered_vectors(12, DIM, seed=6)
    quantizer = make_quantizer(name, DIM, **(options or {})).fit(x)
    codes = quantizer.encode(x)
    arrays = [codes[a:b] for a, b in itertools.pairwise(SPLITS)]
    return x, queries, quantizer, codes, arrays


def _global_rows(arrays_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    starts = np.asarray(SPLITS[:-1])
    return np.where(rows >= 0, starts[np.maximum(arrays_idx, 0)] + rows, -1)


@pytest.mark.parametrize(("name", "options"), [("binary", {"fast_scan": True}), ("int8", {}), ("pq", {})])
def test_split_arrays_give_the_candidates_of_one_array(name: str, options: dict) -> None:
    _, queries, quantizer, codes, arrays = _setup(name, options)
    want_scores, want_rows = quantizer.search(queries, codes, 50, reuse=True)
    scores, arrays_idx, rows = quantizer.search_many(queries, arrays, 50)
    assert scores.shape == rows.shape == arrays_idx.shape == (12, 50)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    got = _global_rows(arrays_idx, rows)
    # Same rows, up to the order of tied scores.
    assert np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want_rows, strict=True)]) > 0.98


def test_binary_pools_the_hamming_stage_across_arrays() -> None:
    # Hamming distances are integers with many ties at the cut, which one array and four break
    # differently: the candidates agree up to those ties, and are as good.
    _, queries, quantizer, codes, arrays = _setup("binary")
    want_scores, want_rows = quantizer.search(queries, codes, 50)
    scores, arrays_idx, rows = quantizer.search_many(queries, arrays, 50)
    got = _global_rows(arrays_idx, rows)
    assert np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want_rows, strict=True)]) > 0.9
    assert abs(float(scores.mean() - want_scores.mean())) < 0.01 * float(np.abs(want_scores).mean())


def test_masks_hide_rows_and_short_results_are_padded() -> None:
    _, queries, quantizer, _, arrays = _setup("binary")
    masks = [np.ones(a.shape[0], dtype=bool) for a in arrays]
    hidden = {(0, 3), (1, 10), (3, 0)}
    for a, r in hidden:
        masks[a][r] = False
    scores, arrays_idx, rows = quantizer.search_many(queries, arrays, 40, masks=masks)
    found = {(int(a), int(r)) for a, r in zip(arrays_idx.ravel(), rows.ravel(), strict=True)}
    assert not found & hidden
    tiny = [arrays[2][:5]]
    scores, arrays_idx, rows = quantizer.search_many(
        queries, tiny, 10, masks=[np.array([1, 0, 1, 1, 0], bool)]
    )
    assert scores.shape == (12, 5)
    assert (rows[:, 3:] == -1).all() and (arrays_idx[:, 3:] == -1).all() and np.isinf(scores[:, 3:]).all()
    assert sorted(rows[0, :3].tolist()) == [0, 2, 3]


def test_mask_count_must_match_arrays() -> None:
    _, queries, quantizer, _, arrays = _setup("binary")
    with pytest.raises(InvalidInputError, match="masks"):
        quantizer.search_many(queries, arrays, 5, masks=[None])


@pytest.mark.parametrize("name", ["binary", "int8"])
def test_engine_over_segments_answers_as_over_one_segment(name: str) -> None:
    x, queries, quantizer, codes, _ = _setup(name)
    ids = [str(i) for i in range(3000)]

    def view(a: int, b: int) -> SegmentView:
        return SegmentView(build_segment(f"s{a}", ids[a:b], ids[a:b], ["{}"] * (b - a), x[a:b], codes[a:b]))

    one = search_segments([view(0, 3000)], queries, 10, kind="ip", quantizer=quantizer, rescore_multiplier=4)
    views = [view(a, b) for a, b in itertools.pairwise(SPLITS)]
    many = search_segments(views, queries, 10, kind="ip", quantizer=quantizer, rescore_multiplier=4)
    starts = np.asarray(SPLITS[:-1])
    got = starts[many.segments] + many.rows
    if name == "int8":  # code scores do not tie: the very same answer
        np.testing.assert_allclose(many.scores, one.scores, rtol=1e-5, atol=1e-6)
        assert np.array_equal(got, one.rows)
    else:  # Hamming ties at the cut are broken differently: the same answers, nearly
        overlap = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, one.rows, strict=True)])
        assert overlap >= 0.95
