"""The exact pass (calibration's ground truth): the float32 top k of the stored rows, to the bit.

Scores are compared for equality with numpy's float32 product over all live rows at once: an
exact scan's blocks of rows change neither the rows chosen, nor their order among ties, nor a
score's last bit. OpenBLAS sums each product over the dimensions the same way whatever the
number of rows, except in products of at most ``engine._SMALL_PRODUCT`` multiply-adds, which
the scan's pieces never are unless its whole blocks were.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from langchain_vq.collection import ROW_KEY_SHIFT, Collection, CollectionConfig
from langchain_vq.quantization import precision
from langchain_vq.quantization.precision import float_rows
from langchain_vq.search import engine
from langchain_vq.search.engine import exact_search, search_segments
from tests.conftest import clustered_vectors

DIM = 48
N = 2400


def _store(rescore_precision: str, kind: str) -> Collection:
    """Three segments, every 7th row deleted."""
    x = clustered_vectors(N, DIM, seed=11) * (1.0 if kind == "ip" else 2.5)
    metric = "cosine" if kind == "ip" else "l2"
    collection = Collection(
        CollectionConfig(metric=metric, quantization="int8", rescore_precision=rescore_precision)
    )
    for part in np.array_split(np.arange(N), 3):
        collection.add(
            [str(i) for i in part], [f"t{i}" for i in part], [{"i": int(i)} for i in part], x[part]
        )
    collection.delete([str(i) for i in range(0, N, 7)])
    return collection


def _reference(collection: Collection, queries: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Keys of every live row in store order, and numpy's float32 scores of the queries against them."""
    keys, rows = [], []
    for index, view in enumerate(collection.snapshot.views):
        live = np.setdiff1d(np.arange(view.segment.rows), view.deleted)
        keys.append((index << ROW_KEY_SHIFT) + live)
        rows.append(float_rows(view.segment, live))
    stored = np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
    scores = queries @ stored.T
    if kind == "l2":
        q_norms = np.einsum("ij,ij->i", queries, queries)[:, None]
        x_norms = np.einsum("ij,ij->i", stored, stored)[None, :]
        scores = -np.maximum(q_norms - 2 * scores + x_norms, 0)
    return np.concatenate(keys), scores


@pytest.mark.parametrize("rescore_precision", ["float16", "int8", "float32"])
@pytest.mark.parametrize("kind", ["ip", "l2"])
def test_exact_pass_equals_numpy_float32_keys_scores_and_ties(rescore_precision, kind, monkeypatch) -> None:
    """Several segments, deletions, sampled stored rows with their own row hidden."""
    collection = _store(rescore_precision, kind)
    monkeypatch.setattr(engine, "_EXACT_HEAD_ROWS", 64)  # then merges
    snapshot = collection.snapshot
    assert len(snapshot.views) == 3 and all(v.deleted.size for v in snapshot.views)
    assert {v.segment.precision for v in snapshot.views} == {rescore_precision}
    sampled, queries = collection.sample_rows(30, seed=4)
    all_keys, scores = _reference(collection, queries, kind)
    k = 10
    # Best score first, ties by key (the engine's segment, then row order).
    order = np.lexsort((np.broadcast_to(all_keys, scores.shape), -scores), axis=1)[:, : k + 1]
    hits = search_segments(list(snapshot.views), queries, k + 1, kind=kind, quantizer=None)
    found = (hits.segments << ROW_KEY_SHIFT) + hits.rows
    np.testing.assert_array_equal(found, all_keys[order])
    np.testing.assert_array_equal(hits.scores, np.take_along_axis(scores, order, axis=1))
    # Calibration's ground truth: the same ranking with each query's own row left out.
    truth = collection.search_keys(queries, k, exact=True, exclude=sampled)
    for i, row in enumerate(all_keys[order].tolist()):
        assert truth[i].tolist() == [key for key in row if key != sampled[i]][:k]


def test_float16_rows_are_widened_by_the_scan_not_the_codec(monkeypatch) -> None:
    """The exact pass widens float16 itself (bit shifts into one reused buffer), exactly as the cast."""
    collection = _store("float16", "ip")
    sampled, queries = collection.sample_rows(20, seed=2)
    expected = collection.search_keys(queries, 10, exact=True, exclude=sampled)

    def refused(self, stored):
        msg = "an exact pass decoded float16 rows through VectorCodec.decode"
        raise AssertionError(msg)

    monkeypatch.setattr(precision.VectorCodec, "decode", refused)
    np.testing.assert_array_equal(collection.search_keys(queries, 10, exact=True, exclude=sampled), expected)


def test_exact_search_widens_float16_like_numpys_cast() -> None:
    """Including subnormals, zeros of both signs, the largest halves, and an infinity (numpy's cast)."""
    rng = np.random.default_rng(8)
    rows = rng.standard_normal((700, 16)).astype(np.float16)
    rows[0, :4] = [np.float16(6e-8), np.float16(-0.0), np.float16(65504), np.float16(-65504)]
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    want = exact_search(rows.astype(np.float32), queries, 9)
    got = exact_search(rows, queries, 9)
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.scores, want.scores)
    rows[3, 2] = np.inf  # the scaling cannot give it: numpy's cast takes over
    got = exact_search(rows, queries, 9)
    want = exact_search(rows.astype(np.float32), queries, 9)
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.scores, want.scores)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_exact_scan_allocates_no_block_sized_arrays(dtype, monkeypatch) -> None:
    """Each block is widened and scored in this thread's scratch buffers, not in fresh arrays.

    Fresh blocks had the kernel zero new pages for each (system time of every ingest that
    calibrates); once the buffers exist, a scan's peak allocation stays well below one block's
    scores (1 MB here; the comparison with the k-th best scores takes a quarter of it).
    The old scan's fresh scores and widened rows of a block were 1 MB each.
    """
    monkeypatch.setattr(engine, "_EXACT_HEAD_ROWS", 64)
    rng = np.random.default_rng(3)
    # Positive scores, the first rows' four times the others': after them none enters the top k,
    # whose selections would otherwise allocate more than the blocks.
    scale = np.where(np.arange(20_000) < 64, 4.0, 1.0)[:, None]
    rows = (np.abs(rng.standard_normal((20_000, 64))) * scale).astype(dtype)
    queries = np.abs(rng.standard_normal((64, 64))).astype(np.float32)
    first = exact_search(rows, queries, 10)  # creates the scratch buffers
    tracemalloc.start()
    try:
        again = exact_search(rows, queries, 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(again.rows, first.rows)
    np.testing.assert_array_equal(again.scores, first.scores)
    block_scores = queries.shape[0] * 4096 * 4  # a piece's
    assert peak < block_scores // 2


@pytest.mark.parametrize("kind", ["ip", "l2"])
def test_pieces_score_rows_as_whole_blocks_and_as_numpy(kind) -> None:
    """20k float16 rows, 64 queries: 4k-row pieces and a last piece of 3,616, to the bit."""
    rng = np.random.default_rng(6)
    rows = rng.standard_normal((20_000, 64)).astype(np.float16)
    queries = rng.standard_normal((64, 64)).astype(np.float32)
    assert list(engine._exact_blocks(20_000, 64 * 64)) == [
        (0, 4096),
        (4096, 8192),
        (8192, 12288),
        (12288, 16384),
        (16384, 20_000),
    ]
    hits = exact_search(rows, queries, 10, kind)
    scores = engine.similarity(queries, rows.astype(np.float32), kind)  # one product of all rows
    want_scores, want_rows = engine.top_k(scores, 10)
    np.testing.assert_array_equal(hits.rows, want_rows)
    np.testing.assert_array_equal(hits.scores, want_scores)


@pytest.mark.parametrize(
    ("n_rows", "width", "expected"),
    [
        (40_000, 200 * 384, [4096] * 8 + [7232]),  # 40k = 2 x 16,384 + 7,232: its own last piece
        (16_384 + 9_000, 200 * 384, [4096] * 4 + [4096, 4904]),  # the rest joins the last piece
        (16_384 + 12, 200 * 384, [4096] * 4 + [12]),  # as small as its whole block was
        (40_000, 2 * 64, [16_384, 16_384, 7232]),  # pieces would be small products: whole blocks
        (0, 200 * 384, []),
    ],
)
def test_exact_blocks_cut_whole_blocks_into_pieces_never_smaller(n_rows, width, expected) -> None:
    blocks = list(engine._exact_blocks(n_rows, width))
    assert [stop - start for start, stop in blocks] == expected
    assert [start for start, _ in blocks] == [0, *np.cumsum(expected)[:-1].tolist()][: len(blocks)]
    outer = engine._EXACT_CHUNK_ROWS
    assert all(start // outer == (stop - 1) // outer for start, stop in blocks)  # within one block
