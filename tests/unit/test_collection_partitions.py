"""A store whose quantizer partitions rows: lists stored at ingest, carried, reassigned, searched.

The store's side is one for both quantizers with a ``partitions`` option (binary and 4-bit PQ),
so every test runs for each (the ``partitioned_kind`` fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from langchain_vq import collection as collection_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.errors import InvalidInputError
from langchain_vq.filters import compile_filter
from langchain_vq.merge_policy import MergePolicy
from langchain_vq.quantization import QUANTIZERS
from langchain_vq.quantization._partitions import PartitionedQuantizer
from langchain_vq.quantization.precision import float_rows
from langchain_vq.search.engine import SegmentView, search_segments
from langchain_vq.storage import Segment
from langchain_vq.storage.schema import LIST_COLUMN, PARTITION_COLUMN
from langchain_vq.synthetic import synthetic_embeddings

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 32
#: Enough rows to train the lists (39 per list) on the first add.
ROWS = 12_000
#: A small-scale policy, so a few adds merge.
SMALL = MergePolicy(segments_per_tier=3, floor_rows=32, max_rows=1 << 20)


def _config(kind: str) -> CollectionConfig:
    return CollectionConfig(metric="cosine", quantization=kind, quantizer_options={"partitions": PARTITIONS})


def _add(collection: Collection, x: np.ndarray, start: int, stop: int) -> None:
    ids = [f"r{i}" for i in range(start, stop)]
    metadatas = [{"i": i, "even": i % 2 == 0} for i in range(start, stop)]
    collection.add(ids, ids, metadatas, collection.check_vectors(x[start:stop]))


def _ids(
    collection: Collection, queries: np.ndarray, k: int = 10, m: int = 16, **kw: object
) -> list[list[str]]:
    return [[r.id for r in rows] for rows in collection.search(queries, k, rescore_multiplier=m, **kw)]  # type: ignore[arg-type]


def _quantizer(collection: Collection, kind: str) -> PartitionedQuantizer:
    """The store's quantizer, checked to be of the ``kind`` asked for."""
    quantizer = collection.snapshot.quantizer
    assert isinstance(quantizer, QUANTIZERS[kind]) and isinstance(quantizer, PartitionedQuantizer)
    return quantizer


def _recall(got: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got, truth, strict=True)]))


def _lists_match_assignment(collection: Collection, x: np.ndarray, *, stored: bool = False) -> None:
    """Every segment with codes holds, for each row, the list its float vector is assigned to.

    Rows are grouped by list (one run per list, format 3), with no per-row ``partition`` column.

    ``stored``: the vectors as the segment stores them (float16), which a compaction reads back
    and assigns (a row nearly tied between two lists may fall either side of the rounding).
    """
    quantizer = collection.snapshot.quantizer
    assert quantizer is not None and quantizer.partitioned
    for view in collection.snapshot.views:
        segment = view.segment
        assert LIST_COLUMN in segment.table.column_names
        assert PARTITION_COLUMN not in segment.table.column_names
        rows = np.array([int(i[1:]) for i in segment.ids.to_pylist()])
        codes = segment.stored_codes
        assert codes is not None and codes.lists is not None
        assert np.all(np.diff(codes.lists.astype(np.int64)) >= 0)  # grouped by list
        vectors = float_rows(segment) if stored else x[rows]
        np.testing.assert_array_equal(codes.lists, quantizer.assign(vectors))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = synthetic_embeddings(ROWS, seed=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True), synthetic_embeddings(60, seed=1)


@pytest.fixture
def filled(partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]) -> Collection:
    """A new in-memory store of all ``ROWS`` rows, added at once."""
    collection = Collection(_config(partitioned_kind))
    _add(collection, data[0], 0, ROWS)
    return collection


def test_lists_are_stored_at_ingest_carried_by_merges_and_survive_reopen(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    partitioned_kind: str,
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    monkeypatch.setattr(collection_module, "MERGE_POLICY", SMALL)
    x, queries = data
    collection = Collection(_config(partitioned_kind), tmp_path / "s")
    _add(collection, x, 0, 1000)  # below 32 * 39 rows: not trained, exact, no codes
    assert collection.snapshot.quantizer is None
    for start in range(1000, ROWS, 1000):  # trained at the second add, then merges
        _add(collection, x, start, start + 1000)
    assert collection.snapshot.live_rows == ROWS
    assert len(collection.snapshot.views) < ROWS // 1000  # merges happened
    _lists_match_assignment(collection, x)
    before = _ids(collection, queries)

    def no_reassign(self: object, x: object) -> None:
        msg = "a reopen or a search reassigned rows"
        raise AssertionError(msg)

    chosen = _quantizer(collection, partitioned_kind).nprobe
    monkeypatch.setattr(QUANTIZERS[partitioned_kind], "assign", no_reassign)
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    quantizer = _quantizer(reopened, partitioned_kind)
    assert quantizer.partitions == PARTITIONS and quantizer.nprobe == chosen
    assert _ids(reopened, queries) == before
    assert reopened.verify() == []


def test_reopened_in_a_new_process_answers_the_same(
    tmp_path: Path, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, queries = data
    collection = Collection(_config(partitioned_kind), tmp_path / "s")
    _add(collection, x, 0, ROWS)
    want = _ids(collection, queries[:5])
    script = (
        "import json, sys, numpy as np\n"
        "from langchain_vq.collection import Collection, CollectionConfig\n"
        "c = Collection(CollectionConfig(), sys.argv[1])\n"
        "q = np.array(json.loads(sys.argv[2]), dtype=np.float32)\n"
        "print(json.dumps([[r.id for r in rows] for rows in c.search(q, 10, rescore_multiplier=16)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s"), json.dumps(queries[:5].tolist())],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(out.stdout) == want


def test_recall_against_exact_float_search(
    filled: Collection, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, queries = data
    partitioned = filled
    full = Collection(CollectionConfig(metric="cosine", quantization=partitioned_kind))
    _add(full, x, 0, ROWS)
    truth = _ids(full, queries, m=10_000)  # every row rescored: exact
    recall_full = _recall(_ids(full, queries, m=16), truth)
    quantizer = _quantizer(partitioned, partitioned_kind)
    chosen = quantizer.nprobe
    assert chosen is not None and chosen < PARTITIONS
    recall = {}
    for nprobe in (1, 8, 16, chosen, PARTITIONS):
        quantizer.nprobe = nprobe
        recall[nprobe] = _recall(_ids(partitioned, queries, m=16), truth)
    assert recall_full >= 0.98
    assert recall[PARTITIONS] == pytest.approx(recall_full, abs=0.005)  # every list: the full scan
    assert recall[16] >= recall_full - 0.02  # half the lists
    assert recall[chosen] >= recall_full - 0.01  # the nprobe chosen at training
    assert recall[8] >= 0.93  # a quarter, on synthetic data (harder to partition than sentences)
    assert recall[1] < min(recall[8], recall[chosen]) - 0.05  # one list: what is scanned is the lists


def test_deletes_and_filters(filled: Collection, data: tuple[np.ndarray, np.ndarray]) -> None:
    queries = data[1]
    collection = filled
    deleted = [f"r{i}" for i in range(0, ROWS, 3)]
    collection.delete(deleted)
    gone = set(deleted)
    assert not any(i in gone for rows in _ids(collection, queries, k=50) for i in rows)
    even = compile_filter({"even": True})  # dense: over-fetch from the partitioned scan
    for rows in collection.search(queries, 10, rescore_multiplier=16, filter=even):
        assert len(rows) == 10 and all(int(r.id[1:]) % 2 == 0 and r.id not in gone for r in rows)
    few = compile_filter({"i": {"$in": [1, 2, 3, 5, 6, 7, 8, 11_999]}})  # selective: the exact subset path
    for rows in collection.search(queries, 10, rescore_multiplier=16, filter=few):
        assert sorted(r.id for r in rows) == ["r1", "r11999", "r2", "r5", "r7", "r8"]  # r3, r6 deleted


def test_compaction_retrains_and_reassigns(
    tmp_path: Path, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    collection = Collection(_config(partitioned_kind), tmp_path / "s")
    _add(collection, x, 0, 4000)
    old = _quantizer(collection, partitioned_kind)
    _add(collection, x, 4000, ROWS)
    collection.compact()
    new = _quantizer(collection, partitioned_kind)
    assert new is not old
    assert not np.array_equal(new.partition_centroids_, old.partition_centroids_)  # trained on all rows
    _lists_match_assignment(collection, x, stored=True)  # compaction assigns the stored float16


def test_options_apply_at_the_next_training(
    tmp_path: Path, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    plain = Collection(CollectionConfig(metric="cosine", quantization=partitioned_kind), tmp_path / "s")
    _add(plain, x, 0, ROWS)
    assert all(PARTITION_COLUMN not in v.segment.table.column_names for v in plain.snapshot.views)
    reopened = Collection(_config(partitioned_kind), tmp_path / "s")  # the stored quantizer has no lists yet
    assert not reopened.snapshot.quantizer.partitioned  # type: ignore[union-attr]
    reopened.compact()  # trains with the requested options, assigns every row
    _lists_match_assignment(reopened, x, stored=True)
    bad = CollectionConfig(quantization=partitioned_kind, quantizer_options={"partitions": -3})
    with pytest.raises(InvalidInputError, match="partitions must be"):
        Collection(bad).add(["a"] * 1, ["a"], [None], np.ones((1, 384), np.float32))


def test_segments_without_lists_are_scanned_in_full(
    filled: Collection, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    queries = data[1]
    collection = filled
    snapshot = collection.snapshot
    views = list(snapshot.views)
    stripped = [
        SegmentView(Segment(v.segment.name, v.segment.table.drop_columns([LIST_COLUMN]))) for v in views
    ]
    quantizer = _quantizer(collection, partitioned_kind)
    kw = {"kind": "ip", "quantizer": quantizer, "rescore_multiplier": 16}
    mixed = search_segments([views[0], *stripped[1:]], queries, 10, **kw)  # type: ignore[arg-type]
    nprobe = quantizer.nprobe
    quantizer.nprobe = PARTITIONS  # every list: the full scan's candidates
    try:
        full = search_segments(views, queries, 10, **kw)  # type: ignore[arg-type]
    finally:
        quantizer.nprobe = nprobe
    plain = search_segments(stripped, queries, 10, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(plain.rows, full.rows)
    assert (mixed.rows >= 0).all()


def test_a_merge_assigns_parts_written_without_lists(
    monkeypatch: pytest.MonkeyPatch, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    collection = Collection(_config(partitioned_kind))
    _add(collection, x, 0, 6000)
    _add(collection, x, 6000, 9000)
    views = list(collection.snapshot.views)
    assert len(views) == 2
    stripped = Segment(views[1].segment.name, views[1].segment.table.drop_columns([LIST_COLUMN]))
    monkeypatch.setattr(
        collection_module, "MERGE_POLICY", MergePolicy(segments_per_tier=2, floor_rows=1 << 20)
    )
    quantizer = collection.snapshot.quantizer
    merged = collection_module._apply_merge_policy([views[0], SegmentView(stripped)], quantizer)
    assert len(merged) == 1
    segment = merged[0].segment
    rows = np.array([int(i[1:]) for i in segment.ids.to_pylist()])
    assert segment.lists is not None and quantizer is not None
    agree = np.mean(segment.lists == quantizer.assign(x[rows]))
    assert agree >= 0.99  # the stripped part is assigned from its float16 vectors: a few ties may differ
    without = collection_module._apply_merge_policy([views[0], SegmentView(stripped)])
    assert without[0].segment.lists is None  # no quantizer given: the column is dropped, scanned in full


def test_projected_lists_are_saved_and_later_adds_assigned_on_the_same_axes(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    # From 256 lists on rows are assigned on the centroids' principal axes (_ivf.ListProjection):
    # the store saves them with the quantizer, so a reopened store assigns new rows as before.
    x, queries = data
    config = CollectionConfig(metric="cosine", quantization="binary", quantizer_options={"partitions": 256})
    collection = Collection(config, tmp_path / "s")
    _add(collection, x, 0, 11_000)  # 39 rows per list: trained at this add
    quantizer = _quantizer(collection, "binary")
    assert quantizer.partition_projection_ is not None
    axes = quantizer.partition_projection_.axes
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    again = _quantizer(reopened, "binary")
    assert again.partition_projection_ is not None
    np.testing.assert_array_equal(again.partition_projection_.axes, axes)
    _add(reopened, x, 11_000, ROWS)
    _lists_match_assignment(reopened, x)
    exact = np.argmax(x @ again.partition_centroids_.T, axis=1)
    assert 0.7 < float((again.assign(x) == exact).mean()) < 1.0  # on the axes, not every centroid
    truth = [[f"r{j}" for j in row] for row in np.argsort(-(queries @ x.T), axis=1)[:, :10]]
    assert _recall(_ids(reopened, queries), truth) >= 0.97  # 0.993 here at the chosen nprobe; 0.59 at 4 lists
