"""VQVectorStore behaviour beyond the standard suite: quantized search, upserts, deletes, compact."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_vq import InvalidInputError, VQVectorStore
from langchain_vq import calibration as calibration_module
from tests.conftest import clustered_vectors

DIM = 384
MODES = ["binary", "int8", "pq", "none"]


def exact_top(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :k]


def recall(got: list[list[int]], expected: np.ndarray) -> float:
    k = expected.shape[1]
    return float(np.mean([len(set(g) & set(e.tolist())) / k for g, e in zip(got, expected, strict=True)]))


def fill(store: VQVectorStore, x: np.ndarray, offset: int = 0) -> list[str]:
    ids = [str(offset + i) for i in range(len(x))]
    texts = [f"text {offset + i}" for i in range(len(x))]
    metas = [{"i": offset + i, "even": (offset + i) % 2 == 0} for i in range(len(x))]
    return store.add_embeddings(texts, x, metadatas=metas, ids=ids)


def search_ids(store: VQVectorStore, queries: np.ndarray, k: int, **kwargs) -> list[list[int]]:
    return [[int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k, **kwargs)]


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    return clustered_vectors(4000, DIM, seed=0), clustered_vectors(40, DIM, seed=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("on_disk", [False, True])
def test_quantized_search_recall_against_exact(mode, on_disk, corpus, tmp_path) -> None:
    x, q = corpus
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=DIM),
        path=tmp_path / "s" if on_disk else None,
        quantization=mode,
    )
    fill(store, x)
    snapshot = store.collection.snapshot
    if mode == "none":
        assert snapshot.quantizer is None
    else:  # enough rows to train: the code path is really exercised
        assert snapshot.quantizer is not None
        assert all(v.segment.codes is not None for v in snapshot.views)
    got = search_ids(store, q, 10, rescore_multiplier=16)
    assert recall(got, exact_top(q, x, 10)) >= 0.97
    # Scores are cosine similarities from the rescoring vectors, best first: exact with float32
    # (exact search), to float16's three digits with the quantized stores' default.
    pairs = store.similarity_search_with_score_by_vector(q[0], k=5)
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    expected = [float(q[0] @ x[int(d.id)]) for d, _ in pairs]
    precision = store.collection.rescore_precision
    assert precision == ("float32" if mode == "none" else "float16")
    assert np.allclose(scores, expected, atol=1e-5 if precision == "float32" else 2e-3)


def test_binary_fast_scan_option_is_kept_and_searches_like_two_stages(corpus, tmp_path) -> None:
    """``quantizer_options={"fast_scan": True}``: saved with the store, same quality, deleted rows
    and a filter keeping half the rows (both over-fetched from the fast scan) honoured."""
    x, q = corpus
    path = tmp_path / "s"
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=DIM),
        path=path,
        quantization="binary",
        quantizer_options={"fast_scan": True},
    )
    fill(store, x)
    store.delete([str(i) for i in range(0, 4000, 7)])  # deleted rows: masked, over-fetched
    live = np.array([i for i in range(4000) if i % 7])
    expected = live[exact_top(q, x[live], 10)]
    got = search_ids(store, q, 10, rescore_multiplier=16)
    assert recall(got, expected) >= 0.97
    assert not {i for r in got for i in r} & set(range(0, 4000, 7))
    quantizer = store.collection.snapshot.quantizer
    assert quantizer is not None
    assert quantizer.fast_scan  # type: ignore[attr-defined]
    assert len(quantizer._fast_scans) == 1  # type: ignore[attr-defined]
    evens = search_ids(store, q[:5], 10, filter={"even": True})
    assert all(i % 2 == 0 and i % 7 for r in evens for i in r)
    assert all(len(r) == 10 for r in evens)

    reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path)
    assert reopened.collection.snapshot.quantizer.get_config()["fast_scan"] is True  # type: ignore[union-attr]
    assert search_ids(reopened, q, 10, rescore_multiplier=16) == got
    two_stage = VQVectorStore(
        DeterministicFakeEmbedding(size=DIM), quantization="binary", quantizer_options={"fast_scan": False}
    )
    fill(two_stage, x)
    two_stage.delete([str(i) for i in range(0, 4000, 7)])
    assert (
        abs(recall(search_ids(two_stage, q, 10, rescore_multiplier=16), expected) - recall(got, expected))
        <= 0.03
    )
    default = VQVectorStore(DeterministicFakeEmbedding(size=DIM))
    fill(default, x[:500])
    assert default.collection.snapshot.quantizer.get_config()["fast_scan"] is True  # type: ignore[union-attr]


def test_pq_stores_use_4_bit_fast_scan_codes_and_8_bit_stores_keep_theirs(corpus, tmp_path) -> None:
    """Default PQ: 4-bit codes (48 bytes at 384 dims) scanned by fast scan, with deleted rows and
    a filter honoured; a store created with ``nbits=8`` reopens with its 96-byte codes."""
    x, q = corpus
    dead = set(range(0, 4000, 7))
    live = np.array([i for i in range(4000) if i not in dead])
    expected = live[exact_top(q, x[live], 10)]
    for nbits, code_size in ((None, 48), (8, 96)):
        path = tmp_path / f"pq-{nbits}"
        options = {} if nbits is None else {"nbits": nbits}
        store = VQVectorStore(
            DeterministicFakeEmbedding(size=DIM), path=path, quantization="pq", quantizer_options=options
        )
        fill(store, x)
        store.delete([str(i) for i in sorted(dead)])
        got = search_ids(store, q, 10)  # the default multiplier
        assert recall(got, expected) >= 0.95
        assert not {i for r in got for i in r} & dead
        evens = search_ids(store, q[:5], 10, filter={"even": True})
        assert all(i % 2 == 0 and i not in dead for r in evens for i in r)
        assert all(len(r) == 10 for r in evens)
        reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path)
        quantizer = reopened.collection.snapshot.quantizer
        assert quantizer is not None
        assert quantizer.code_size == code_size
        assert quantizer.get_config()["nbits"] == (nbits or 4)
        assert search_ids(reopened, q, 10) == got


@pytest.mark.parametrize("mode", ["binary", "int8", "pq"])
def test_rescore_multiplier_trades_recall(mode, corpus) -> None:
    x, q = corpus
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization=mode)
    fill(store, x)
    expected = exact_top(q, x, 10)
    low = recall(search_ids(store, q, 10, rescore_multiplier=1), expected)
    high = recall(search_ids(store, q, 10, rescore_multiplier=32), expected)
    assert high >= low
    assert high >= 0.99


def test_rescore_off_returns_code_ranking(corpus) -> None:
    x, q = corpus
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization="int8", rescore=False)
    fill(store, x)
    got = search_ids(store, q, 10)
    assert recall(got, exact_top(q, x, 10)) >= 0.8
    assert all(len(r) == 10 for r in got)


def test_quantizer_trains_when_enough_rows_arrive(corpus, tmp_path) -> None:
    x, q = corpus
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s", quantization="pq")
    fill(store, x[:10])
    assert store.collection.snapshot.quantizer is None  # too few rows: exact search
    assert search_ids(store, q[:1], 3)[0] == exact_top(q[:1], x[:10], 3)[0].tolist()
    fill(store, x[10:], offset=10)
    snapshot = store.collection.snapshot
    assert snapshot.quantizer is not None and snapshot.quantizer.is_fitted
    assert all(v.segment.codes is not None for v in snapshot.views)  # old rows re-encoded
    assert recall(search_ids(store, q, 10), exact_top(q, x, 10)) >= 0.95


@pytest.mark.parametrize("mode", MODES)
def test_upsert_delete_and_compact(mode, corpus, tmp_path) -> None:
    x, q = corpus
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s", quantization=mode)
    fill(store, x)
    # Upsert: row "7" gets the vector of the first query; no duplicate appears.
    store.add_embeddings(["replaced"], q[:1], metadatas=[{"new": True}], ids=["7"])
    assert len(store) == len(x)
    top = store.similarity_search_by_vector(q[0].tolist(), k=1)[0]
    assert (top.id, top.page_content, top.metadata) == ("7", "replaced", {"new": True})
    # Delete: deleted rows never come back, and counts follow.
    deleted = [str(i) for i in exact_top(q[1:2], x, 5)[0]]
    store.delete(deleted)
    assert len(store) == len(x) - 5
    assert not set(deleted) & {d.id for d in store.similarity_search_by_vector(q[1].tolist(), k=20)}
    assert store.get_by_ids(deleted) == []
    before = search_ids(store, q, 10, rescore_multiplier=32)
    versions_before = store.collection.snapshot.version
    store.compact()
    assert store.collection.snapshot.version == versions_before + 1
    assert len(store.collection.snapshot.views) == 1
    assert all(v.deleted.size == 0 for v in store.collection.snapshot.views)
    assert len(store) == len(x) - 5
    assert search_ids(store, q, 10, rescore_multiplier=32) == before
    assert store.verify() == []


def test_delete_everything_and_reuse(tmp_path) -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8), path=tmp_path / "s")
    store.add_texts(["a", "b", "c"], ids=["1", "2", "3"])
    store.delete()
    assert len(store) == 0
    assert store.similarity_search("a", k=3) == []
    store.add_texts(["d"], ids=["1"])
    assert [d.page_content for d in store.get_by_ids(["1", "2"])] == ["d"]


def test_get_by_ids_keeps_requested_order_and_skips_missing() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts(["a", "b", "c"], ids=["1", "2", "3"])
    assert [d.id for d in store.get_by_ids(["3", "x", "1", "3"])] == ["3", "1"]


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_metrics_rank_and_score_like_exact_search(metric) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (300, 16)).astype(np.float32) * rng.uniform(0.5, 2, (300, 1)).astype(np.float32)
    q = rng.normal(0, 1, 16).astype(np.float32)
    store = VQVectorStore(DeterministicFakeEmbedding(size=16), metric=metric, quantization="none")
    store.add_embeddings([str(i) for i in range(300)], x, ids=[str(i) for i in range(300)])
    pairs = store.similarity_search_with_score_by_vector(q, k=5)
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        ref = xn @ (q / np.linalg.norm(q))
        order, scores = np.argsort(-ref)[:5], np.sort(ref)[::-1][:5]
    elif metric == "dot":
        ref = x @ q
        order, scores = np.argsort(-ref)[:5], np.sort(ref)[::-1][:5]
    else:
        ref = np.linalg.norm(x - q, axis=1)
        order, scores = np.argsort(ref)[:5], np.sort(ref)[:5]
    assert [int(d.id) for d, _ in pairs] == order.tolist()
    assert np.allclose([s for _, s in pairs], scores, rtol=1e-4, atol=1e-4)
    relevance = [s for _, s in store.similarity_search_with_relevance_scores("anything", k=50)]
    assert all(0.0 <= s <= 1.0 for s in relevance)
    assert relevance == sorted(relevance, reverse=True)


def test_relevance_threshold_retriever() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_texts(["alpha", "beta", "gamma"])
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99}
    )
    docs = retriever.invoke("alpha")
    assert [d.page_content for d in docs] == ["alpha"]


def test_mmr_prefers_diverse_results() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=4), quantization="none")
    vectors = np.array([[1, 0, 0, 0], [1, 0.01, 0, 0], [0.7, 0.7, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    store.add_embeddings(["a", "a-copy", "b", "far"], vectors, ids=["a", "a2", "b", "far"])
    plain = store.similarity_search_by_vector([1, 0.05, 0, 0], k=2)
    assert [d.id for d in plain] == ["a2", "a"]
    mmr = store.max_marginal_relevance_search_by_vector([1, 0.05, 0, 0], k=2, fetch_k=4, lambda_mult=0.5)
    assert [d.id for d in mmr] == ["a2", "b"]


async def test_async_twins_match_sync() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=16))
    ids = await store.aadd_texts(["one", "two", "three"])
    assert len(ids) == 3
    assert await store.asimilarity_search("two", k=2) == store.similarity_search("two", k=2)
    assert await store.amax_marginal_relevance_search("two", k=2) == store.max_marginal_relevance_search(
        "two", k=2
    )
    await store.adelete([ids[0]])
    assert await store.aget_by_ids(ids) == store.get_by_ids(ids[1:])
    other = await VQVectorStore.afrom_texts(["x"], DeterministicFakeEmbedding(size=16), ids=["x"])
    assert [d.id for d in other.get_by_ids(["x"])] == ["x"]


def test_from_documents_keeps_document_ids_and_does_not_mutate(tmp_path) -> None:
    docs = [Document(page_content="a", id="doc-a"), Document(page_content="b")]
    store = VQVectorStore.from_documents(docs, DeterministicFakeEmbedding(size=8), path=tmp_path / "s")
    assert docs[1].id is None
    assert {d.id for d in store.get_by_ids(["doc-a"])} == {"doc-a"}
    assert len(store) == 2


def test_k_larger_than_store_returns_everything() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts(["a", "b"])
    assert len(store.similarity_search("a", k=10**9)) == 2


def test_odd_dimensions_and_tiny_corpora(tmp_path) -> None:
    for dim in (5, 12, 97):
        for mode in MODES:
            x = clustered_vectors(700, dim, seed=dim)
            store = VQVectorStore(
                DeterministicFakeEmbedding(size=dim), path=tmp_path / f"{dim}-{mode}", quantization=mode
            )
            assert store.similarity_search_by_vector(x[0].tolist(), k=3) == []
            fill(store, x[:1])
            assert [d.id for d in store.similarity_search_by_vector(x[0].tolist(), k=3)] == ["0"]
            fill(store, x[1:3], offset=1)
            assert len(store.similarity_search_by_vector(x[0].tolist(), k=3)) == 3
            fill(store, x[3:], offset=3)  # crosses every training threshold
            got = search_ids(store, x[:5], 3, rescore_multiplier=32)
            assert all(g[0] == i for i, g in enumerate(got)), (dim, mode, got)
            assert math.isclose(len(store), 700)


def test_many_small_adds_are_merged_into_few_segments(tmp_path) -> None:
    x = clustered_vectors(400, 32, seed=4)
    store = VQVectorStore(DeterministicFakeEmbedding(size=32), path=tmp_path / "s", quantization="binary")
    for i in range(0, 400, 10):
        fill(store, x[i : i + 10], offset=i)
    store.delete([str(i) for i in range(0, 400, 7)])
    fill(store, x[:1])  # re-adds row 0 (deleted above)
    snapshot = store.collection.snapshot
    assert len(snapshot.views) <= 3  # one tier below the merge floor: fewer than segments_per_tier
    assert len(store) == 400 - len(range(0, 400, 7)) + 1
    assert all(v.segment.codes is not None for v in snapshot.views)
    got = search_ids(store, x[1:4], 1, rescore_multiplier=400)
    assert got == [[1], [2], [3]]
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=32), path=tmp_path / "s")
    assert len(reopened) == len(store)
    assert reopened.verify() == []


def calibrations(store: VQVectorStore) -> list[tuple[int, int, int]]:
    """(version, rows, multiplier) of the calibration saved with every version on disk."""
    directory = store.collection.directory
    assert directory is not None
    seen = []
    for version in range(1, store.collection.snapshot.version + 1):
        saved = directory.read_manifest(version).settings.get("calibration")
        seen.append((version, saved["rows"], saved["multiplier"]) if saved else (version, 0, 0))
    return seen


def test_default_store_calibrates_in_the_commit_of_the_add_that_trains_its_quantizer(tmp_path) -> None:
    x = clustered_vectors(4000, 64, seed=21)
    store = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s")
    assert store.recall_target == 0.99
    fill(store, x[:50])  # below binary's min_train_size: exact search, nothing to calibrate
    assert store.collection.snapshot.quantizer is None
    assert store.calibration is None
    assert store.rescore_multiplier == 16  # the per-quantization default until calibrated
    fill(store, x[50:1000], offset=50)  # trains the quantizer, and calibrates in the same commit
    calibration = store.calibration
    assert calibration is not None and calibration.met
    assert (calibration.rows, calibration.version) == (1000, store.collection.snapshot.version)
    assert calibrations(store) == [(1, 0, 0), (2, 1000, calibration.multiplier)]  # one version per add
    assert calibration.margin == calibration_module.DEFAULT_MARGIN
    measured = calibration.recall_by_multiplier
    assert measured[calibration.multiplier] >= 0.99 + calibration.margin
    assert calibration.z == calibration_module.DEFAULT_CONFIDENCE_Z
    assert calibration.meets(calibration.multiplier)
    assert not any(calibration.meets(m) for m in measured if m < calibration.multiplier)  # smallest
    assert store.rescore_multiplier == calibration.multiplier
    queries = clustered_vectors(200, 64, seed=22)  # held back: recall holds on new queries too
    assert recall(search_ids(store, queries, 10), exact_top(queries, x[:1000], 10)) >= 0.985


def test_recalibrates_after_growth_and_compact_but_not_after_small_adds_or_deletes(
    tmp_path, monkeypatch
) -> None:
    x = clustered_vectors(4000, 64, seed=23)
    store = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s")
    measured_on: list[int] = []
    real = calibration_module.calibrate_multiplier

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        measured_on.append(result.rows)
        return result

    monkeypatch.setattr("langchain_vq.vectorstore.calibrate_multiplier", spy)
    assert calibration_module.RECALIBRATE_GROWTH == 2.0
    fill(store, x[:1000])
    fill(store, x[1000:1900], offset=1000)  # 1.9x: reuses the calibration
    store.delete([str(i) for i in range(100)])
    fill(store, x[1900:2100], offset=1900)  # 2000 live rows = 2x the 1000 measured on
    assert measured_on == [1000, 2000]
    grown = store.calibration
    assert grown is not None and grown.rows == 2000
    # Every calibration walks from the last multiplier, down as well as up.
    last = calibrations(store)[0][2]
    assert last in grown.recall_by_multiplier
    assert grown.meets(last) == (min(grown.recall_by_multiplier) < last)
    store.compact()  # new codes: measured again, in the compaction's commit
    assert measured_on == [1000, 2000, 2000]
    assert store.calibration is not None
    assert store.calibration.version == store.collection.snapshot.version


def test_explicit_settings_win_over_the_calibration(tmp_path, monkeypatch) -> None:
    x = clustered_vectors(2000, 64, seed=24)
    fixed = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "fixed", rescore_multiplier=3)
    fill(fixed, x)
    assert fixed.recall_target is None
    assert fixed.calibration is None  # a fixed multiplier: no measurement at all
    assert "calibration" not in fixed.collection.snapshot.settings
    assert fixed.rescore_multiplier == 3

    calibrated = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s", recall_target=0.9)
    fill(calibrated, x)
    low = calibrated.calibration
    assert low is not None and low.target == 0.9
    reopened_fixed = VQVectorStore(
        DeterministicFakeEmbedding(size=64), path=tmp_path / "s", rescore_multiplier=5
    )
    assert reopened_fixed.rescore_multiplier == 5
    assert reopened_fixed.calibration is None
    other_target = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s", recall_target=0.99)
    assert other_target.calibration is None  # measured for another target: not used
    fill(other_target, x[:1], offset=5000)  # its next add measures for its own target
    assert other_target.calibration is not None and other_target.calibration.target == 0.99
    assert other_target.rescore_multiplier >= low.multiplier
    # A multiplier passed to one search wins over everything.
    calls: list[int] = []
    real = other_target.collection.search

    def spy(*args, **kwargs):
        calls.append(kwargs["rescore_multiplier"])
        return real(*args, **kwargs)

    monkeypatch.setattr(other_target.collection, "search", spy)
    other_target.similarity_search_by_vector(x[0].tolist(), k=3, rescore_multiplier=7)
    other_target.similarity_search_by_vector(x[0].tolist(), k=3)
    assert calls == [7, other_target.calibration.multiplier]


def test_reopened_store_uses_the_saved_calibration_without_measuring(tmp_path, monkeypatch) -> None:
    x = clustered_vectors(1500, 64, seed=25)
    store = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s")
    fill(store, x)
    saved = store.calibration
    assert saved is not None

    def fail(*args, **kwargs):
        msg = "reopening or searching must not measure"
        raise AssertionError(msg)

    monkeypatch.setattr("langchain_vq.vectorstore.calibrate_multiplier", fail)
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s")
    assert reopened.calibration == saved
    assert reopened.rescore_multiplier == saved.multiplier
    assert reopened.recall_target == 0.99
    assert len(reopened.similarity_search_by_vector(x[0].tolist(), k=5)) == 5
    reopened.delete(["0"])  # deletes never measure
    reopened.calibrate(force=False)  # nothing due: the saved one is kept
    assert reopened.calibration == saved


def test_small_stores_search_well_with_the_default(tmp_path) -> None:
    x = clustered_vectors(3000, 64, seed=26)
    queries = clustered_vectors(50, 64, seed=27)
    for n in (1, 3, 63, 64, 200, 3000):
        store = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / str(n))
        fill(store, x[:n])
        got = search_ids(store, queries, 10)
        assert recall(got, exact_top(queries, x[:n], min(10, n))) >= (1.0 if n < 64 else 0.97), n
        assert all(len(r) == min(10, n) for r in got)


def test_unreachable_recall_target_warns_and_uses_the_largest_multiplier(
    tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(calibration_module, "DEFAULT_MULTIPLIERS", (1, 2))
    x = clustered_vectors(1000, 64, seed=5)
    store = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "s", recall_target=1.0)
    with caplog.at_level(logging.WARNING, logger="langchain_vq.vectorstore"):
        fill(store, x)
    calibration = store.calibration
    assert calibration is not None and not calibration.met
    assert store.rescore_multiplier == 2
    assert "recall_target=1.0 is not reached" in caplog.text
    assert "largest rescore_multiplier tried (2)" in caplog.text


def test_recall_target_arguments_are_checked() -> None:
    emb = DeterministicFakeEmbedding(size=8)
    with pytest.raises(InvalidInputError, match="pass one"):
        VQVectorStore(emb, rescore_multiplier=4, recall_target=0.9)
    with pytest.raises(InvalidInputError, match="recall_target"):
        VQVectorStore(emb, recall_target=1.5)
    with pytest.raises(InvalidInputError, match="rescore_multiplier"):
        VQVectorStore(emb, rescore_multiplier=0)
    assert VQVectorStore(emb, rescore_multiplier="auto").recall_target == 0.99


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        # cos of [1,0] with [1,0], [.6,.8], [0,1], [-1,0]: 1, .6, 0, -1, clipped to [0, 1]
        ("cosine", [1.0, 0.6, 0.0, 0.0]),
        # vectors and query scaled by 2: logistic of the inner products 4, 2.4, 0, -4
        ("dot", [1 / (1 + np.exp(-4)), 1 / (1 + np.exp(-2.4)), 0.5, 1 / (1 + np.exp(4))]),
        # 1 / (1 + Euclidean distance), distances 0, |(-.8, 1.6)|, |(-2, 2)|, 4
        ("l2", [1.0, 1 / (1 + np.sqrt(3.2)), 1 / (1 + np.sqrt(8)), 1 / 5]),
    ],
)
def test_relevance_scores_per_metric(metric: str, expected: list[float]) -> None:
    scale = 1.0 if metric == "cosine" else 2.0  # unequal lengths would not change cosine
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32) * scale
    query = np.array([1, 0], dtype=np.float32) * scale
    store = VQVectorStore(DeterministicFakeEmbedding(size=2), metric=metric, quantization="none")
    store.add_embeddings(["same", "near", "orthogonal", "opposite"], vectors, ids=["a", "b", "c", "d"])
    store.embedding = _FixedQuery(query.tolist())
    pairs = store.similarity_search_with_relevance_scores("q", k=4)
    assert [d.id for d, _ in pairs] == ["a", "b", "c", "d"]
    assert np.allclose([s for _, s in pairs], expected, atol=1e-6)


def test_cosine_score_threshold_keeps_only_similar_documents() -> None:
    """A threshold of 0.5 means cos >= 0.5, not (1 + cos) / 2 >= 0.5 (which keeps cos >= 0)."""
    vectors = np.array([[1, 0], [0.6, 0.8], [0.3, 0.954], [0, 1]], dtype=np.float32)
    store = VQVectorStore(_FixedQuery([1.0, 0.0]), quantization="none")
    store.add_embeddings(["a", "b", "c", "d"], vectors, ids=["a", "b", "c", "d"])
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.5, "k": 4}
    )
    assert [d.id for d in retriever.invoke("q")] == ["a", "b"]


class _FixedQuery(Embeddings):
    """Embeds every query as one fixed vector, so relevance scores are known in advance."""

    def __init__(self, query: list[float]) -> None:
        self.query = query

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(self.query) for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return list(self.query)


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_scores_keep_the_metric_of_a_store_reopened_without_settings(metric: str, tmp_path) -> None:
    vectors = np.array([[2, 0], [1.2, 1.6]], dtype=np.float32)
    store = VQVectorStore(_FixedQuery([2.0, 0.0]), path=tmp_path / "s", metric=metric, quantization="none")
    store.add_embeddings(["a", "b"], vectors, ids=["a", "b"])
    before = store.similarity_search_with_relevance_scores("q", k=2)
    reopened = VQVectorStore(_FixedQuery([2.0, 0.0]), path=tmp_path / "s")
    after = reopened.similarity_search_with_relevance_scores("q", k=2)
    assert [(d.id, s) for d, s in after] == [(d.id, s) for d, s in before]
    assert (
        reopened.similarity_search_with_score("q", k=1)[0][1]
        == store.similarity_search_with_score("q", k=1)[0][1]
    )


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_calibration_on_stored_precisions_and_none_for_codes_only(precision, tmp_path) -> None:
    x = clustered_vectors(1500, 64, seed=28)
    embedding = DeterministicFakeEmbedding(size=64)
    store = VQVectorStore(embedding, path=tmp_path / "s", rescore_precision=precision)
    fill(store, x)
    calibration = store.calibration  # measured against exact search over the decoded rows
    assert calibration is not None and calibration.met
    assert calibration.recall_by_multiplier[calibration.multiplier] >= calibration.goal
    codes_only = VQVectorStore(DeterministicFakeEmbedding(size=64), path=tmp_path / "c", rescore=False)
    fill(codes_only, x)
    assert codes_only.recall_target is None  # ranked by the codes: no multiplier to calibrate
    assert codes_only.calibration is None
    assert "calibration" not in codes_only.collection.snapshot.settings


def test_found_documents_equal_validated_ones() -> None:
    """Search results skip pydantic's validation; they are the Documents validation would build."""
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts(["alpha", "beta"], [{"n": 1, "tags": ["x"]}, {}], ids=["a", "b"])
    for doc, _ in store.similarity_search_with_score("alpha", k=2):
        validated = Document(id=doc.id, page_content=doc.page_content, metadata=doc.metadata)
        assert doc == validated
        assert doc.model_dump() == validated.model_dump()
        assert doc.model_fields_set == validated.model_fields_set
        assert isinstance(doc.id, str)
