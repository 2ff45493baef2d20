"""Rescoring precision through the store: float32, float16, int8 vectors, or none (codes only).

Each precision is checked for what it promises: how the segment files store the vectors, the
disk it takes, recall against exact float search, and that reopening, training, upserts,
deletes and compaction keep it.
"""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 - used at run time by pytest's tmp_path annotations

import numpy as np
import pyarrow as pa
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from pyarrow import ipc

from langchain_vq import ConfigurationError, CorruptStoreError, InvalidInputError, VQVectorStore
from langchain_vq.collection import ROW_KEY_SHIFT, Collection, CollectionConfig
from langchain_vq.evaluation import exact_top_k, recall_at_k
from langchain_vq.quantization.precision import VectorCodec, float_rows
from langchain_vq.search import engine
from langchain_vq.storage.segment import build_segment
from tests.conftest import clustered_vectors

DIM = 64
N = 3000
PRECISIONS = ["float32", "float16", "int8", "none"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered_vectors(N, DIM, seed=0)
    q = clustered_vectors(200, DIM, seed=1)
    return x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)


def _collection(path: Path | None, precision: str | None, quantization: str = "int8") -> Collection:
    return Collection(CollectionConfig(quantization=quantization, rescore_precision=precision), path)


def _fill(collection: Collection, x: np.ndarray, batches: int = 3) -> None:
    for part in np.array_split(np.arange(x.shape[0]), batches):
        collection.add(
            [str(i) for i in part], [f"t{i}" for i in part], [{"i": int(i)} for i in part], x[part]
        )


def _ids(collection: Collection, q: np.ndarray, k: int = 10, multiplier: int = 8) -> list[list[int]]:
    rescore = collection.rescore_precision != "none"
    rows = collection.search(q, k, rescore=rescore, rescore_multiplier=multiplier)
    return [[int(r.id) for r in found] for found in rows]


def _segment_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "_segments").iterdir())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_precision_is_stored_as_named_and_keeps_recall(precision, data, tmp_path: Path) -> None:
    x, q = data
    collection = _collection(tmp_path / "s", precision)
    _fill(collection, x)
    assert collection.snapshot.quantizer is not None
    # The segment files hold the vectors at that precision (or none), readable by pyarrow.
    for file in (tmp_path / "s" / "_segments").iterdir():
        schema = ipc.open_file(pa.memory_map(str(file))).schema
        if precision == "none":
            assert "vector" not in schema.names
        else:
            expected = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.uint8()}[precision]
            assert schema.field("vector").type.value_type == expected
    truth = exact_top_k(q, x, 10).tolist()
    recall = recall_at_k(_ids(collection, q), truth, 10)
    # int8 codes alone already rank well; float rescoring brings them to float quality.
    assert recall >= {"float32": 0.99, "float16": 0.99, "int8": 0.97, "none": 0.85}[precision]
    # Reopened, the store reads its precision and answers identically.
    reopened = Collection(path=tmp_path / "s")
    assert reopened.rescore_precision == precision
    assert _ids(reopened, q[:20]) == _ids(collection, q[:20])


def test_disk_shrinks_with_the_precision(data, tmp_path: Path) -> None:
    x, _ = data
    sizes = {}
    for precision in PRECISIONS:
        collection = _collection(tmp_path / precision, precision)
        _fill(collection, x, batches=1)
        sizes[precision] = _segment_bytes(tmp_path / precision)
    raw = N * DIM * 4
    # Vectors dominate: each precision saves about its share of the raw float32 bytes.
    assert sizes["float32"] - sizes["float16"] == pytest.approx(raw / 2, rel=0.05)
    assert sizes["float16"] - sizes["int8"] == pytest.approx(raw / 4, rel=0.05)
    assert sizes["int8"] - sizes["none"] == pytest.approx(raw / 4, rel=0.05)


def test_scores_follow_the_stored_vectors(data) -> None:
    """float32 scores are exact; float16 within its rounding; int8 within its level step."""
    x, q = data
    for precision, atol in (("float32", 1e-6), ("float16", 2e-3), ("int8", 2e-2)):
        collection = _collection(None, precision)
        _fill(collection, x, batches=1)
        for row in collection.search(q[:5], 5, rescore_multiplier=8)[0]:
            assert row.score == pytest.approx(float(q[0] @ x[int(row.id)]), abs=atol)


def test_vectors_stay_float32_until_the_quantizer_trains(data, tmp_path: Path) -> None:
    x, _q = data
    collection = _collection(tmp_path / "s", "float16")
    collection.add(["a", "b"], ["", ""], [None, None], x[:2])
    assert collection.snapshot.quantizer is None
    assert [v.segment.precision for v in collection.snapshot.views] == ["float32"]
    assert collection.search(x[:1], 1)[0][0].id == "a"  # exact search over float32
    _fill(collection, x[2:], batches=1)  # enough rows: train, re-encode everything
    assert collection.snapshot.quantizer is not None
    assert {v.segment.precision for v in collection.snapshot.views} == {"float16"}
    assert collection.search(x[:1], 1, rescore_multiplier=8)[0][0].id == "a"


def test_int8_ranges_are_saved_with_the_store_and_in_each_segment(data, tmp_path: Path) -> None:
    x, _q = data
    collection = _collection(tmp_path / "s", "int8")
    _fill(collection, x)
    codec = collection.snapshot.codec
    assert codec is not None
    assert codec.precision == "int8"
    reopened = Collection(path=tmp_path / "s")
    assert reopened.snapshot.codec is not None
    assert np.array_equal(reopened.snapshot.codec.get_state()["lo"], codec.get_state()["lo"])
    # New rows added after reopening are encoded with the same ranges: segments still merge.
    reopened.add(["new"], ["t"], [None], x[:1])
    metas = {v.segment.vector_field.metadata[b"langchain_vq.int8_lo"] for v in reopened.snapshot.views}
    assert len(metas) == 1
    assert reopened.search(x[:1], 2, rescore_multiplier=8)[0][0].id in {"0", "new"}


def test_compact_retrains_from_the_stored_vectors(data, tmp_path: Path) -> None:
    x, q = data
    collection = _collection(tmp_path / "s", "float16")
    _fill(collection, x)
    collection.delete([str(i) for i in range(0, N, 3)])
    before = collection.snapshot.quantizer
    collection.compact()
    snapshot = collection.snapshot
    assert snapshot.quantizer is not before  # retrained
    assert len(snapshot.views) == 1
    assert snapshot.views[0].segment.precision == "float16"
    keep = np.array([i for i in range(N) if i % 3])
    truth = [[int(keep[j]) for j in row] for row in exact_top_k(q, x[keep], 10).tolist()]
    assert recall_at_k(_ids(collection, q), truth, 10) >= 0.99


def test_codes_only_compact_merges_and_keeps_the_quantizer(data, tmp_path: Path) -> None:
    x, q = data
    collection = _collection(tmp_path / "s", "none")
    _fill(collection, x)
    collection.delete([str(i) for i in range(0, N, 3)])
    state = collection.snapshot.quantizer.get_state()
    found = _ids(collection, q[:20])
    collection.compact()
    snapshot = collection.snapshot
    assert len(snapshot.views) == 1
    assert snapshot.live_rows == N - len(range(0, N, 3))
    assert not snapshot.views[0].segment.has_vectors
    after = snapshot.quantizer.get_state()
    assert all(np.array_equal(state[k], after[k]) for k in state)  # nothing to retrain from
    assert _ids(collection, q[:20]) == found
    assert all(int(i) % 3 for row in found for i in row)


def test_codes_only_rows_return_the_codes_reconstruction(data) -> None:
    """MMR and ``with_vectors`` need vectors: a codes-only store gives the codes' decoding."""
    x, _ = data
    collection = _collection(None, "none")
    _fill(collection, x, batches=1)
    row = collection.search(x[:1], 1, rescore=False, with_vectors=True)[0][0]
    assert row.vector is not None
    assert row.vector.dtype == np.float32
    assert float(row.vector @ x[int(row.id)]) > 0.95


def test_precision_disagreeing_with_the_store_is_refused(data, tmp_path: Path) -> None:
    x, _ = data
    _fill(_collection(tmp_path / "s", "float16"), x, batches=1)
    with pytest.raises(ConfigurationError, match="precision 'float16'"):
        _collection(tmp_path / "s", "int8")
    assert Collection(path=tmp_path / "s").rescore_precision == "float16"


def test_exact_search_keeps_float32() -> None:
    with pytest.raises(ConfigurationError, match="quantization is 'none'"):
        _collection(None, "float16", quantization="none")
    assert _collection(None, None, quantization="none").rescore_precision == "float32"
    assert _collection(None, None).rescore_precision == "float16"


def test_unknown_precision_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="'float16'"):
        _collection(None, "bfloat16")


def test_vectorstore_rescore_false_is_a_codes_only_store(data, tmp_path: Path) -> None:
    x, _ = data
    embedding = DeterministicFakeEmbedding(size=DIM)
    store = VQVectorStore(embedding, path=tmp_path / "s", quantization="int8", rescore=False)
    assert store.collection.rescore_precision == "none"
    assert store.rescore is False
    store.add_embeddings([f"t{i}" for i in range(N)], x, ids=[str(i) for i in range(N)])
    assert all(not v.segment.has_vectors for v in store.collection.snapshot.views)
    reopened = VQVectorStore(embedding, path=tmp_path / "s")  # codes only, read from the store
    assert reopened.rescore is False
    assert reopened.similarity_search_by_vector(x[5].tolist(), k=1)[0].id == "5"
    with pytest.raises(ConfigurationError, match="rescore=False"):
        VQVectorStore(embedding, path=tmp_path / "s", rescore=True, rescore_precision="float16")
    with pytest.raises(InvalidInputError, match="pass one of them"):
        VQVectorStore(embedding, rescore=False, rescore_precision="int8")


def test_int8_segment_without_its_ranges_is_damage() -> None:
    codec = VectorCodec("int8", DIM).fit(clustered_vectors(500, DIM))
    segment = build_segment("s", ["a"], ["t"], [None], codec.encode(clustered_vectors(1, DIM)), None)
    with pytest.raises(CorruptStoreError, match="without valid ranges"):
        VectorCodec.of_segment(segment)


def test_recall_cannot_be_measured_on_a_codes_only_store(data) -> None:
    """Exact ground truth needs vectors; a codes-only store says so instead of failing inside."""
    x, q = data
    collection = _collection(None, "none")
    _fill(collection, x, batches=1)
    with pytest.raises(ConfigurationError, match="codes-only store"):
        collection.search_keys(q[:3], 10, exact=True)
    assert collection.search_keys(q[:3], 10).shape == (3, 10)  # its own search still works


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
@pytest.mark.parametrize("kind", ["ip", "l2"])
def test_exact_keys_are_the_brute_force_top_k_of_the_stored_rows(precision, kind, data, monkeypatch) -> None:
    """Calibration's ground truth (``search_keys(exact=True)``) against numpy over the decoded rows.

    Several segments, deleted rows, sampled stored rows as queries with their own row hidden, and
    exact passes in many blocks (each merging its entering rows into the top k so far).
    """
    x, _ = data
    metric = "cosine" if kind == "ip" else "l2"
    collection = Collection(CollectionConfig(metric=metric, quantization="int8", rescore_precision=precision))
    _fill(collection, x * (1.0 if kind == "ip" else 2.5), batches=3)
    collection.delete([str(i) for i in range(0, N, 7)])
    monkeypatch.setattr(engine, "_EXACT_CHUNK_ROWS", 256)
    monkeypatch.setattr(engine, "_EXACT_HEAD_ROWS", 64)
    snapshot = collection.snapshot
    assert len(snapshot.views) >= 2 and any(v.deleted.size for v in snapshot.views)
    keys, queries = collection.sample_rows(40, seed=3)
    found = collection.search_keys(queries, 10, exact=True, exclude=keys)
    # Brute force: every live row decoded as stored, scored in float64; the query's own row hidden.
    live_keys, rows = [], []
    for index, view in enumerate(snapshot.views):
        live = np.setdiff1d(np.arange(view.segment.rows), view.deleted)
        live_keys.append((index << ROW_KEY_SHIFT) + live)
        rows.append(float_rows(view.segment, live))
    all_keys, stored = np.concatenate(live_keys), np.concatenate(rows).astype(np.float64)
    q = queries.astype(np.float64)
    scores = q @ stored.T if kind == "ip" else -((q[:, None, :] - stored[None, :, :]) ** 2).sum(axis=2)
    scores[all_keys[None, :] == keys[:, None]] = -np.inf
    score_of = {int(key): i for i, key in enumerate(all_keys)}
    for i, row in enumerate(found.tolist()):
        assert len(set(row)) == 10 and int(keys[i]) not in row
        got = scores[i, [score_of[key] for key in row]]
        want = np.sort(scores[i])[::-1][:10]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # the true top 10, best first
