"""The search engine against exact numpy search: masks, deletions, segments, rescoring, padding."""

from __future__ import annotations

import itertools

import faiss
import numpy as np
import pytest

from langchain_vq.quantization import BinaryQuantizer, ScalarQuantizer
from langchain_vq.search import engine
from langchain_vq.search.engine import Hits, SegmentView, exact_search, search_segments, similarity
from langchain_vq.storage import build_segment
from langchain_vq.topk import top_k
from tests.conftest import clustered_vectors

DIM = 24


def numpy_scores(queries: np.ndarray, vectors: np.ndarray, kind: str) -> np.ndarray:
    """``[n_queries, n]`` similarities computed the plain way (float64)."""
    q, x = queries.astype(np.float64), vectors.astype(np.float64)
    if kind == "ip":
        return q @ x.T
    return -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def make_view(vectors: np.ndarray, name: str, *, codes=None, deleted=()) -> SegmentView:
    n = vectors.shape[0]
    segment = build_segment(
        name, [f"{name}-{i}" for i in range(n)], [""] * n, ["{}"] * n, vectors.astype(np.float32), codes
    )
    return SegmentView(segment, np.asarray(sorted(deleted), dtype=np.int64))


def pairs(hits: Hits, query: int) -> list[tuple[int, int]]:
    """(segment, row) of one query's real hits, best first (padding dropped)."""
    return [(int(s), int(r)) for s, r in zip(hits.segments[query], hits.rows[query], strict=True) if s >= 0]


def exact_pairs(views: list[SegmentView], queries: np.ndarray, k: int, kind: str, masks=None) -> list:
    """The true top-k (segment, row) per query over live, unmasked rows, ties by position."""
    keys, vectors = [], []
    for index, view in enumerate(views):
        keep = np.ones(view.segment.rows, dtype=bool)
        keep[view.deleted] = False
        if masks is not None and masks[index] is not None:
            keep &= masks[index]
        rows = np.flatnonzero(keep)
        keys += [(index, int(r)) for r in rows]
        vectors.append(np.asarray(view.segment.vectors)[rows])
    scores = numpy_scores(queries, np.concatenate(vectors), kind)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[keys[j] for j in row] for row in order]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered_vectors(1300, DIM, seed=3)
    return x[:1200], x[1200:]


# -- exact parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ip", "l2"])
def test_similarity_is_the_inner_product_or_the_negated_squared_distance(data, kind) -> None:
    corpus, queries = data
    np.testing.assert_allclose(
        similarity(queries, corpus[:50], kind), numpy_scores(queries, corpus[:50], kind), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("kind", ["ip", "l2"])
def test_exact_search_equals_numpy_in_order_and_score(data, kind, monkeypatch) -> None:
    corpus, queries = data
    monkeypatch.setattr(engine, "_EXACT_CHUNK_ROWS", 100)  # 12 chunks: the merge across chunks counts
    hits = exact_search(corpus, queries, 7, kind)
    truth = numpy_scores(queries, corpus, kind)
    expected = np.argsort(-truth, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(hits.rows, expected)
    np.testing.assert_allclose(hits.scores, np.take_along_axis(truth, expected, axis=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kind", "k", "keep_every"), [("ip", 1, 1), ("ip", 5, 3), ("l2", 5, 1), ("ip", 12, 2)]
)
def test_exact_search_across_chunks_equals_one_top_k_over_all_rows_ties_included(
    kind, k, keep_every, monkeypatch
) -> None:
    """Chunks merged by threshold give the one top k of all rows: same rows, same ties, same padding.

    Small integer vectors score exactly in float32 whatever the chunking, and tie often; k=12
    is wider than a chunk (7 rows), so the first merges see fewer than k rows.
    """
    rng = np.random.default_rng(5)
    vectors = rng.integers(-1, 2, size=(200, 6)).astype(np.float32)
    queries = rng.integers(-1, 2, size=(9, 6)).astype(np.float32)
    mask = None
    if keep_every > 1:  # dense: scanned whole, masked rows scored -inf; chunk 0 keeps none
        mask = np.zeros(200, dtype=bool)
        mask[14::keep_every] = True
    monkeypatch.setattr(engine, "_EXACT_CHUNK_ROWS", 7)
    monkeypatch.setattr(engine, "_EXACT_HEAD_ROWS", 3)  # the first selection: max(k, 3) rows
    hits = exact_search(vectors, queries, k, kind, mask)
    scores = similarity(queries, vectors, kind)
    if mask is not None:
        scores[:, ~mask] = -np.inf
    expected_scores, expected_rows = engine.top_k(scores, k)
    expected_rows[~np.isfinite(expected_scores)] = -1
    np.testing.assert_array_equal(hits.rows, expected_rows)
    np.testing.assert_array_equal(hits.scores, expected_scores)
    np.testing.assert_array_equal(hits.segments, np.where(expected_rows >= 0, 0, -1))
    # The k-th place is tied in some query: the row order decides which rows are returned.
    assert ((scores == expected_scores[:, -1:]).sum(axis=1) > 1).any()


def test_exact_search_pads_places_no_kept_row_fills_across_chunks(monkeypatch) -> None:
    monkeypatch.setattr(engine, "_EXACT_CHUNK_ROWS", 4)
    vectors = np.arange(40, dtype=np.float32).reshape(10, 4)
    mask = np.zeros(10, dtype=bool)
    mask[[1, 9]] = True  # 2 of 10: scanned whole, the rest -inf in every chunk
    hits = exact_search(vectors, np.ones((2, 4), np.float32), 5, "ip", mask)
    assert hits.rows.tolist() == [[9, 1, -1, -1, -1]] * 2
    assert hits.segments.tolist() == [[0, 0, -1, -1, -1]] * 2
    assert np.isneginf(hits.scores[:, 2:]).all()


def test_exact_search_orders_tied_scores_by_row() -> None:
    vectors = np.ones((6, 4), np.float32)  # every row scores the same
    hits = exact_search(vectors, np.ones((2, 4), np.float32), 4)
    np.testing.assert_array_equal(hits.rows, [[0, 1, 2, 3], [0, 1, 2, 3]])


def test_exact_search_with_k_above_the_rows_returns_every_row(data) -> None:
    corpus, queries = data
    hits = exact_search(corpus[:5], queries[:3], 50)
    assert hits.rows.shape == (3, 5)
    assert all(sorted(row) == [0, 1, 2, 3, 4] for row in hits.rows.tolist())


@pytest.mark.parametrize("keep_every", [2, 20])  # dense mask: scored and skipped; selective: gathered
def test_exact_search_never_returns_masked_rows_and_finds_the_best_kept(data, keep_every) -> None:
    corpus, queries = data
    mask = np.zeros(corpus.shape[0], dtype=bool)
    mask[::keep_every] = True
    hits = exact_search(corpus, queries, 10, "ip", mask)
    kept = np.flatnonzero(mask)
    expected = kept[np.argsort(-numpy_scores(queries, corpus[kept], "ip"), axis=1, kind="stable")[:, :10]]
    np.testing.assert_array_equal(hits.rows, expected)
    assert mask[hits.rows].all()


def test_exact_search_marks_places_only_masked_rows_could_fill(data) -> None:
    corpus, queries = data
    dense = np.zeros(10, dtype=bool)  # keeps 2 of 10: scanned whole, masked rows scored -inf
    dense[[3, 7]] = True
    hits = exact_search(corpus[:10], queries[:2], 5, "ip", dense)
    for row, scores in zip(hits.rows.tolist(), hits.scores.tolist(), strict=True):
        assert sorted(row[:2]) == [3, 7]
        assert row[2:] == [-1, -1, -1]
        assert scores[2:] == [-np.inf] * 3
    selective = np.zeros(corpus.shape[0], dtype=bool)  # keeps 2 of 1200: only they are scanned
    selective[[3, 700]] = True
    hits = exact_search(corpus, queries[:2], 5, "ip", selective)
    assert [sorted(row) for row in hits.rows.tolist()] == [[3, 700], [3, 700]]


# -- search_segments without a quantizer: exact -----------------------------------------------------
@pytest.mark.parametrize("kind", ["ip", "l2"])
def test_exact_engine_over_segments_with_deletions_equals_numpy(data, kind) -> None:
    corpus, queries = data
    views = [
        make_view(corpus[:500], "a", deleted=range(0, 500, 3)),
        make_view(corpus[500:501], "b"),  # one row
        make_view(corpus[501:1200], "c", deleted=[0, 1, 2, 698]),
    ]
    hits = search_segments(views, queries, 10, kind=kind, quantizer=None)
    expected = exact_pairs(views, queries, 10, kind)
    assert [pairs(hits, q) for q in range(len(queries))] == expected
    for q in range(3):  # the scores are the exact similarities of the rows returned
        for (seg, row), score in zip(pairs(hits, q), hits.scores[q], strict=False):
            vector = views[seg].segment.vectors[row][None, :]
            np.testing.assert_allclose(score, numpy_scores(queries[q : q + 1], vector, kind)[0, 0], atol=1e-4)


def test_deleted_rows_and_masked_rows_are_never_returned(data) -> None:
    corpus, queries = data
    views = [make_view(corpus[:600], "a", deleted=range(0, 600, 2)), make_view(corpus[600:], "b")]
    masks = [None, np.arange(600) % 3 == 0]
    hits = search_segments(views, queries, 25, kind="ip", quantizer=None, masks=masks)
    for q in range(len(queries)):
        for seg, row in pairs(hits, q):
            assert row not in set(views[seg].deleted.tolist())
            assert seg == 0 or masks[1][row]
    assert [pairs(hits, q) for q in range(len(queries))] == exact_pairs(views, queries, 25, "ip", masks)


def test_k_above_the_live_rows_returns_each_live_row_once_then_padding(data) -> None:
    corpus, queries = data
    views = [make_view(corpus[:4], "a", deleted=[1]), make_view(corpus[4:6], "b")]
    hits = search_segments(views, queries[:2], 9, kind="ip", quantizer=None)
    assert hits.rows.shape == (2, 9)
    for q in range(2):
        assert sorted(pairs(hits, q)) == [(0, 0), (0, 2), (0, 3), (1, 0), (1, 1)]
        assert (hits.segments[q, 5:] == -1).all() and (hits.rows[q, 5:] == -1).all()
        assert np.isneginf(hits.scores[q, 5:]).all()


def test_segments_without_live_rows_are_skipped_and_no_segments_give_padding(data) -> None:
    corpus, queries = data
    gone = make_view(corpus[:3], "gone", deleted=[0, 1, 2])
    alive = make_view(corpus[3:10], "alive")
    hits = search_segments([gone, alive], queries[:2], 3, kind="ip", quantizer=None)
    assert all(seg == 1 for q in range(2) for seg, _ in pairs(hits, q))
    empty = search_segments([gone], queries[:2], 3, kind="ip", quantizer=None)
    assert (empty.rows == -1).all() and (empty.segments == -1).all() and np.isneginf(empty.scores).all()
    nothing = search_segments([], queries[:2], 3, kind="ip", quantizer=None)
    assert nothing.rows.shape == (2, 3) and (nothing.rows == -1).all()


# -- two stages: code scan, then float rescoring ----------------------------------------------------
@pytest.fixture(scope="module")
def coded(data):
    corpus, _ = data
    qz = ScalarQuantizer(DIM).fit(corpus)
    views = [
        make_view(corpus[:700], "a", codes=qz.encode(corpus[:700]), deleted=range(0, 700, 5)),
        make_view(corpus[700:], "b", codes=qz.encode(corpus[700:])),
    ]
    return qz, views


def test_rescored_scores_are_the_exact_float_scores(data, coded) -> None:
    _, queries = data
    qz, views = coded
    hits = search_segments(views, queries, 10, kind="ip", quantizer=qz, rescore=True, rescore_multiplier=2)
    for q in range(len(queries)):
        for (seg, row), score in zip(pairs(hits, q), hits.scores[q], strict=True):
            exact = float(views[seg].segment.vectors[row] @ queries[q])
            assert score == pytest.approx(exact, abs=1e-5)


def test_two_stage_recall_against_exact_search(data, coded) -> None:
    _, queries = data
    qz, views = coded
    hits = search_segments(views, queries, 10, kind="ip", quantizer=qz, rescore=True, rescore_multiplier=4)
    truth = exact_pairs(views, queries, 10, "ip")
    recall = np.mean([len(set(pairs(hits, q)) & set(truth[q])) / 10 for q in range(len(queries))])
    assert recall >= 0.95  # int8 codes with 40 candidates: near exact


def test_enough_candidates_make_two_stages_exact(data, coded) -> None:
    _, queries = data
    qz, views = coded
    # 10 * 200 candidates exceed every segment's live rows: each is searched exactly.
    hits = search_segments(views, queries, 10, kind="ip", quantizer=qz, rescore=True, rescore_multiplier=200)
    assert [pairs(hits, q) for q in range(len(queries))] == exact_pairs(views, queries, 10, "ip")


def test_without_rescoring_scores_come_from_the_codes(data, coded) -> None:
    _, queries = data
    qz, views = coded
    hits = search_segments(views, queries[:5], 10, kind="ip", quantizer=qz, rescore=False)
    for q in range(5):
        for (seg, row), score in zip(pairs(hits, q), hits.scores[q], strict=True):
            decoded = qz.decode(views[seg].segment.codes[row : row + 1])[0]
            assert score == pytest.approx(float(decoded @ queries[q]), abs=1e-4)
            assert row not in set(views[seg].deleted.tolist())


@pytest.mark.parametrize("keep_every", [2, 50])  # over-fetch from a full scan / scan only kept rows
def test_masks_with_codes_return_only_kept_rows(data, coded, keep_every) -> None:
    _, queries = data
    qz, views = coded
    masks = [np.arange(v.segment.rows) % keep_every == 0 for v in views]
    hits = search_segments(
        views, queries, 10, kind="ip", quantizer=qz, rescore=True, rescore_multiplier=4, masks=masks
    )
    truth = exact_pairs(views, queries, 10, "ip", masks)
    for q in range(len(queries)):
        found = pairs(hits, q)
        assert len(found) == 10  # enough rows are kept: never fewer than k
        assert all(masks[seg][row] and row not in set(views[seg].deleted.tolist()) for seg, row in found)
    recall = np.mean([len(set(pairs(hits, q)) & set(truth[q])) / 10 for q in range(len(queries))])
    assert recall >= 0.95


def test_a_segment_without_codes_is_searched_exactly_beside_coded_ones(data) -> None:
    corpus, queries = data
    qz = BinaryQuantizer(DIM).fit(corpus)
    views = [
        make_view(corpus[:1000], "coded", codes=qz.encode(corpus[:1000])),
        make_view(corpus[1000:], "plain"),
    ]
    hits = search_segments(views, queries, 10, kind="ip", quantizer=qz, rescore=True, rescore_multiplier=200)
    assert [pairs(hits, q) for q in range(len(queries))] == exact_pairs(views, queries, 10, "ip")


def test_segment_view_live_mask_and_count() -> None:
    view = make_view(np.eye(4, dtype=np.float32), "s")
    assert view.live_mask is None and view.live_count == 4
    view = make_view(np.eye(4, dtype=np.float32), "s", deleted=[1, 3])
    np.testing.assert_array_equal(view.live_mask, [True, False, True, False])
    assert view.live_count == 2


# -- fast paths: one segment or several, one query or a batch, give the same answer ---------------
def test_rescoring_from_one_segment_or_several_gives_the_same_hits(data, coded) -> None:
    """The one-segment gather and the per-segment gather put every vector in the same place."""
    _, queries = data
    qz, views = coded
    rng = np.random.default_rng(0)
    rows = np.stack([rng.choice(500, 40, replace=False) for _ in range(len(queries))])
    scores = rng.standard_normal(rows.shape).astype(np.float32)
    one = engine._rescore(views[1:], Hits(scores, np.zeros_like(rows), rows), queries, 10, "ip", qz, True)
    halves = rng.integers(0, 2, size=rows.shape)  # the same segment seen twice, rows split at random
    two = engine._rescore(views[1:] * 2, Hits(scores, halves, rows), queries, 10, "ip", qz, True)
    assert one.scores.tobytes() == two.scores.tobytes()
    np.testing.assert_array_equal(one.rows, two.rows)
    missing = rows.copy()
    missing[:, ::7] = -1  # candidates a scan could not fill: the per-segment path
    with_gaps = engine._rescore(
        views[1:], Hits(scores, np.where(missing >= 0, 0, -1), missing), queries, 10, "ip", qz, True
    )
    valid = missing >= 0
    for q in range(len(queries)):
        expected = sorted(
            (
                (float(s), int(r))
                for s, r, ok in zip(
                    engine._pairwise_similarity(
                        queries[q : q + 1], np.asarray(views[1].segment.vectors)[missing[q]][None], "ip"
                    )[0],
                    missing[q],
                    valid[q],
                    strict=True,
                )
                if ok
            ),
            key=lambda p: -p[0],
        )[:10]
        assert sorted(with_gaps.rows[q].tolist()) == sorted(r for _, r in expected)


@pytest.mark.parametrize("kind", ["ip", "l2"])
@pytest.mark.parametrize("precision", [np.float32, np.float16])
@pytest.mark.parametrize("n_queries", [1, 6])
def test_one_segment_and_its_rows_split_in_four_give_identical_hits(data, precision, n_queries, kind) -> None:
    """Same rows, same codes: one segment (compacted) and four (after adds) answer bit for bit alike.

    int8 code scores rank the candidates without ties at the cut, so the only differences could
    come from the engine's paths: pooled candidates, the gathers, the merge. Duplicate rows make
    exact ties, which both order by row. (A segment with no more live rows than candidates is
    scanned exactly instead, with BLAS, whose last bits may differ: none is that small here.)
    """
    corpus, queries = data
    x = np.concatenate([corpus[:600], corpus[:200]])  # rows 600-799 repeat rows 0-199
    qz = ScalarQuantizer(DIM, metric=kind).fit(x)
    codes = qz.encode(x)
    deleted = np.arange(3, x.shape[0], 11)
    splits = (0, 200, 430, 600, x.shape[0])  # each keeps more live rows than candidates

    def view(a: int, b: int) -> SegmentView:
        segment = build_segment(f"s{a}", [str(i) for i in range(a, b)], [""] * (b - a), ["{}"] * (b - a),
                                x[a:b].astype(precision), codes[a:b])  # fmt: skip
        gone = deleted[(deleted >= a) & (deleted < b)] - a
        return SegmentView(segment, gone.astype(np.int64))

    one_view = [view(0, x.shape[0])]
    views = [view(a, b) for a, b in itertools.pairwise(splits)]
    starts = np.asarray(splits[:-1])
    for multiplier in (1, 4, 12):
        kwargs = {"kind": kind, "quantizer": qz, "rescore_multiplier": multiplier}
        one = search_segments(one_view, queries[:n_queries], 10, **kwargs)
        many = search_segments(views, queries[:n_queries], 10, **kwargs)
        assert one.scores.tobytes() == many.scores.tobytes()
        np.testing.assert_array_equal(
            np.where(many.rows >= 0, starts[many.segments] + many.rows, -1), one.rows
        )


def _probe_counter(data, monkeypatch):
    """Two segments whose ``prefetch`` calls are recorded; returns (probes of the next query, residency)."""
    corpus, queries = data
    qz = ScalarQuantizer(DIM).fit(corpus)
    views = [
        make_view(corpus[:600], "w1", codes=qz.encode(corpus[:600])),
        make_view(corpus[600:], "w2", codes=qz.encode(corpus[600:])),
    ]
    calls: list[tuple[str, int]] = []
    resident = {"w1": True, "w2": True}

    def prefetch(self, rows, *, probes):
        calls.append((self.name, probes))
        return resident[self.name]

    monkeypatch.setattr(type(views[0].segment), "prefetch", prefetch)
    monkeypatch.setattr(engine, "_WARM_QUERIES", 3)
    monkeypatch.setattr(engine, "_WARM_PROBE_EVERY", 3)

    def probes_of_next_query() -> dict[str, int]:
        calls.clear()
        search_segments(views, queries[:1], 10, kind="ip", quantizer=qz, rescore=True, rescore_multiplier=8)
        return dict(calls)

    return probes_of_next_query, resident


def test_a_segment_found_warm_is_probed_with_one_row_now_and_then_until_a_probe_finds_it_cold(
    data, monkeypatch
) -> None:
    """``mincore`` probes: each segment's share while cold or new; once warm, one row every 3rd query."""
    probes_of_next_query, resident = _probe_counter(data, monkeypatch)
    assert [probes_of_next_query() for _ in range(3)] == [{"w1": 4, "w2": 4}] * 3
    assert [probes_of_next_query() for _ in range(6)] == [{}, {}, {"w1": 1, "w2": 1}] * 2
    resident["w2"] = False  # evicted: the next probe finds w2 cold; w1 stays warm
    assert [probes_of_next_query() for _ in range(3)] == [{}, {}, {"w1": 1, "w2": 1}]
    assert [probes_of_next_query() for _ in range(3)] == [{"w2": 4}, {"w2": 4}, {"w1": 1, "w2": 4}]


def test_a_slow_gather_has_the_next_query_probe_a_warm_segment(data, monkeypatch) -> None:
    """A gather that took page faults (slower than the threshold per row) brings the probe forward."""
    probes_of_next_query, _ = _probe_counter(data, monkeypatch)
    monkeypatch.setattr(engine, "_WARM_PROBE_EVERY", 5)
    assert [probes_of_next_query() for _ in range(4)] == [{"w1": 4, "w2": 4}] * 3 + [{}]
    monkeypatch.setattr(engine, "_SLOW_GATHER_SECONDS_PER_ROW", -1.0)  # every gather is slow
    assert [probes_of_next_query() for _ in range(3)] == [{}] + [{"w1": 1, "w2": 1}] * 2
    monkeypatch.setattr(engine, "_SLOW_GATHER_SECONDS_PER_ROW", 1.0)
    both = {"w1": 1, "w2": 1}
    assert [probes_of_next_query() for _ in range(6)] == [both] + [{}] * 4 + [both]


def test_faiss_threads_sets_and_restores_the_count_only_when_it_differs(monkeypatch) -> None:
    """One query runs FAISS on one thread; a process already on one thread makes no OpenMP calls."""
    current = {"threads": 2}
    calls: list[int] = []
    monkeypatch.setattr(faiss, "omp_get_max_threads", lambda: current["threads"])

    def set_threads(n: int) -> None:
        calls.append(n)
        current["threads"] = n

    monkeypatch.setattr(faiss, "omp_set_num_threads", set_threads)
    with engine._faiss_threads(1):
        assert current["threads"] == 1
    assert (current["threads"], calls) == (2, [1, 2])
    calls.clear()
    current["threads"] = 1
    with engine._faiss_threads(1), engine._faiss_threads(None):
        assert current["threads"] == 1
    assert calls == []


def _reference_rescore(views, candidates: Hits, queries: np.ndarray, k: int, kind: str) -> Hits:
    """Rescoring as the engine did before its scratch arrays and grouped gathers (numpy's own cast)."""
    n_queries, n_candidates = candidates.rows.shape
    vectors = np.zeros((n_queries * n_candidates, queries.shape[1]), np.float32)
    for place, (s, r) in enumerate(zip(candidates.segments.ravel(), candidates.rows.ravel(), strict=True)):
        if r >= 0:
            segment = views[s].segment
            row = np.asarray(segment.vectors)[r : r + 1]
            vectors[place] = row.astype(np.float32) if segment.precision != "int8" else 0
    scores = engine._pairwise_similarity(queries, vectors.reshape(n_queries, n_candidates, -1), kind)
    scores[candidates.rows < 0] = -np.inf
    best, at = top_k(scores, k)
    queries_of = np.arange(n_queries)[:, None]
    return Hits(best, candidates.segments[queries_of, at], candidates.rows[queries_of, at])


@pytest.mark.parametrize("kind", ["ip", "l2"])
@pytest.mark.parametrize("precision", [np.float32, np.float16])
@pytest.mark.parametrize("n_queries", [1, 5])
@pytest.mark.parametrize("segments_used", [1, 3])
@pytest.mark.parametrize("scratch", ["kept", "too small"])
def test_rescoring_gives_the_bits_of_gathering_in_candidate_order(
    data, kind, precision, n_queries, segments_used, scratch, monkeypatch
) -> None:
    """Scratch arrays, the in-place float16 widening and (one query) the per-segment slices: the
    scores, rows and their order are those of gathering every candidate in place and casting with
    numpy, query after query (scratch arrays reused), with duplicate rows (exact ties) and gaps.
    Candidates past the scratch size (big batches) are gathered as stored and decoded in one go."""
    if scratch == "too small":
        monkeypatch.setattr(engine, "_SCRATCH_BYTES", 64)
    corpus, queries = data
    x = np.concatenate([corpus[:500], corpus[:100]])  # rows 500-599 repeat rows 0-99: exact ties
    splits = (0, 150, 420, x.shape[0])

    def view(a: int, b: int) -> SegmentView:
        ids = [str(i) for i in range(a, b)]
        return SegmentView(
            build_segment(f"p{a}", ids, [""] * (b - a), ["{}"] * (b - a), x[a:b].astype(precision), None)
        )

    views = [view(a, b) for a, b in itertools.pairwise(splits)]
    assert {view.segment.precision for view in views} == {np.dtype(precision).name}
    rng = np.random.default_rng(7)
    for trial in range(6):
        segments = rng.integers(0, segments_used, size=(n_queries, 60))
        rows = rng.integers(0, 150, size=segments.shape)  # within every segment
        if trial % 2:
            rows[:, ::9] = -1  # places no candidate filled
            segments[:, ::9] = -1
        candidates = Hits(np.zeros(rows.shape, np.float32), segments, rows)
        got = engine._rescore(views, candidates, queries[trial : trial + n_queries], 10, kind, None, True)
        want = _reference_rescore(views, candidates, queries[trial : trial + n_queries], 10, kind)
        assert got.scores.tobytes() == want.scores.tobytes()
        np.testing.assert_array_equal(got.rows, want.rows)
        np.testing.assert_array_equal(got.segments, want.segments)


def test_scratch_arrays_are_per_thread_and_large_requests_get_fresh_ones() -> None:
    """A thread reuses its own scratch array; one past the limit is a fresh array each time."""
    import threading

    first = engine._scratch("t", (10, 4), np.float32)
    assert engine._scratch("t", (5, 4), np.float32).base is first.base  # reused
    seen = {}
    worker = threading.Thread(target=lambda: seen.update(a=engine._scratch("t", (10, 4), np.float32)))
    worker.start()
    worker.join()
    assert seen["a"].base is not first.base
    rows = engine._SCRATCH_BYTES // (4 * 4) + 1
    large = engine._scratch("t", (rows, 4), np.float32)
    assert not np.shares_memory(large, engine._scratch("t", (rows, 4), np.float32))
