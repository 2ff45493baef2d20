"""A store whose 4-bit PQ quantizer partitions rows: lists stored at ingest, carried, reassigned, searched.

The store's side is shared with ``BinaryQuantizer(partitions=...)`` (``test_collection_partitions``);
these tests check that PQ's lists, probes and state go through it the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from langchain_vq import collection as collection_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.filters import compile_filter
from langchain_vq.quantization import ProductQuantizer
from langchain_vq.storage.schema import PARTITION_COLUMN
from langchain_vq.synthetic import synthetic_embeddings
from tests.unit.test_collection_partitions import ROWS, SMALL, _add, _ids, _lists_match_assignment, _recall

if TYPE_CHECKING:
    from pathlib import Path

PARTITIONS = 32


def _config(**options: object) -> CollectionConfig:
    return CollectionConfig(
        metric="cosine", quantization="pq", quantizer_options={"partitions": PARTITIONS, **options}
    )


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = synthetic_embeddings(ROWS, seed=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True), synthetic_embeddings(60, seed=1)


def test_lists_are_stored_at_ingest_carried_by_merges_and_survive_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray]
) -> None:
    monkeypatch.setattr(collection_module, "MERGE_POLICY", SMALL)
    x, queries = data
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, 0, 1000)  # below 32 * 39 rows: not trained, exact, no codes
    assert collection.snapshot.quantizer is None
    for start in range(1000, ROWS, 1000):  # trained at the second add, then merges
        _add(collection, x, start, start + 1000)
    assert len(collection.snapshot.views) < ROWS // 1000  # merges happened
    _lists_match_assignment(collection, x)
    before = _ids(collection, queries)

    def no_reassign(self: ProductQuantizer, x: object) -> None:
        msg = "a reopen or a search reassigned rows"
        raise AssertionError(msg)

    monkeypatch.setattr(ProductQuantizer, "assign", no_reassign)
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    quantizer = reopened.snapshot.quantizer
    assert isinstance(quantizer, ProductQuantizer) and quantizer.partitions == PARTITIONS
    assert quantizer.nprobe == collection.snapshot.quantizer.nprobe  # type: ignore[union-attr]
    assert _ids(reopened, queries) == before
    assert reopened.verify() == []


def test_recall_against_exact_float_search(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, queries = data
    partitioned = Collection(_config())
    _add(partitioned, x, 0, ROWS)
    full = Collection(CollectionConfig(metric="cosine", quantization="pq"))
    _add(full, x, 0, ROWS)
    truth = _ids(full, queries, m=10_000)  # every row rescored: exact
    recall_full = _recall(_ids(full, queries, m=16), truth)
    quantizer = partitioned.snapshot.quantizer
    assert isinstance(quantizer, ProductQuantizer)
    chosen = quantizer.nprobe
    assert chosen is not None and chosen < PARTITIONS
    recall = {}
    for nprobe in (1, chosen, PARTITIONS):
        quantizer.nprobe = nprobe
        recall[nprobe] = _recall(_ids(partitioned, queries, m=16), truth)
    assert recall_full >= 0.98
    assert recall[PARTITIONS] == pytest.approx(recall_full, abs=0.005)  # every list: the full scan
    assert recall[chosen] >= recall_full - 0.01
    assert recall[1] < recall[chosen] - 0.05  # one list: what is scanned is the lists


def test_deletes_and_filters(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, queries = data
    collection = Collection(_config())
    _add(collection, x, 0, ROWS)
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


def test_compaction_retrains_and_reassigns(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, 0, 4000)
    old = collection.snapshot.quantizer
    _add(collection, x, 4000, ROWS)
    collection.compact()
    new = collection.snapshot.quantizer
    assert isinstance(old, ProductQuantizer) and isinstance(new, ProductQuantizer) and new is not old
    assert not np.array_equal(new.partition_centroids_, old.partition_centroids_)  # trained on all rows
    _lists_match_assignment(collection, x, stored=True)  # compaction assigns the stored float16


def test_options_apply_at_the_next_training(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    plain = Collection(CollectionConfig(metric="cosine", quantization="pq"), tmp_path / "s")
    _add(plain, x, 0, ROWS)
    assert all(PARTITION_COLUMN not in v.segment.table.column_names for v in plain.snapshot.views)
    reopened = Collection(_config(), tmp_path / "s")  # the stored quantizer has no lists yet
    assert not reopened.snapshot.quantizer.partitioned  # type: ignore[union-attr]
    reopened.compact()  # trains with the requested options, assigns every row
    _lists_match_assignment(reopened, x, stored=True)
