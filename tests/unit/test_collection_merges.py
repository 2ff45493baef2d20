"""Tiered merges through ``Collection.add``: few segments, the same rows and the same answers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from langchain_vq import collection as collection_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.merge_policy import MergePolicy
from tests.conftest import clustered_vectors

if TYPE_CHECKING:
    from pathlib import Path

DIM = 24
#: A small-scale policy, so a test of a few thousand rows climbs several tiers.
SMALL = MergePolicy(segments_per_tier=3, floor_rows=32, max_rows=1 << 20)
#: Merges never happen.
NEVER = MergePolicy(segments_per_tier=1 << 20, floor_rows=1, max_rows=1 << 20, max_deleted_fraction=1.0)


def _rows(collection: Collection) -> dict[str, tuple[str, str, bytes, bytes | None]]:
    """Every live row by id: text, metadata, float vector bytes and code bytes."""
    out = {}
    for view in collection.snapshot.views:
        segment = view.segment
        live = np.flatnonzero(view.live_mask) if view.live_mask is not None else np.arange(segment.rows)
        values = segment.take(live, ("id", "text"))
        metadatas = segment.metadata(live)
        for j, row in enumerate(live.tolist()):
            codes = segment.codes[row].tobytes() if segment.codes is not None else None
            vector = segment.vectors[row].tobytes()
            out[values["id"][j]] = (values["text"][j], repr(metadatas[j]), vector, codes)
    return out


def _fill(collection: Collection, x: np.ndarray, batches: list[int], *, deletes: bool) -> None:
    start = 0
    for n, rows in enumerate(batches):
        ids = [f"r{i}" for i in range(start, start + rows)]
        metadatas = [{"batch": n, "i": i} for i in range(start, start + rows)]
        vectors = collection.check_vectors(x[start : start + rows])
        collection.add(ids, [f"text {i}" for i in ids], metadatas, vectors)
        if deletes and n % 3 == 2:
            collection.delete([f"r{i}" for i in range(start - 20, start + rows, 5)])
        start += rows


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_merged_store_holds_the_same_rows_and_answers_as_an_unmerged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantization: str
) -> None:
    rng = np.random.default_rng(0)
    batches = [int(b) for b in rng.integers(5, 60, size=40)]
    x = clustered_vectors(sum(batches), DIM, seed=1)
    queries = clustered_vectors(20, DIM, seed=2)
    config = CollectionConfig(metric="cosine", quantization=quantization)
    built = {}
    for name, policy in (("never", NEVER), ("tiered", SMALL)):
        monkeypatch.setattr(collection_module, "MERGE_POLICY", policy)
        collection = Collection(config, tmp_path / name)
        _fill(collection, x, batches, deletes=True)
        built[name] = Collection(config, tmp_path / name)  # reopened from disk
    never, tiered = built["never"], built["tiered"]
    assert len(never.snapshot.views) > 20
    assert len(tiered.snapshot.views) <= 2 * (math.log(tiered.snapshot.live_rows / 32, 3) + 1)
    assert _rows(tiered) == _rows(never)
    assert tiered.verify() == []
    if quantization == "int8":  # code scores do not depend on segments: the same candidates
        got = [[r.id for r in rows] for rows in tiered.search(queries, 10, rescore_multiplier=4)]
        want = [[r.id for r in rows] for rows in never.search(queries, 10, rescore_multiplier=4)]
        assert got == want
    exact = [[r.id for r in rows] for rows in never.search(queries, 10, rescore_multiplier=10_000)]
    assert [[r.id for r in rows] for rows in tiered.search(queries, 10, rescore_multiplier=10_000)] == exact


def test_segment_count_after_many_adds_is_logarithmic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collection_module, "MERGE_POLICY", SMALL)
    collection = Collection(CollectionConfig(quantization="binary"))
    x = clustered_vectors(6000, DIM, seed=3)
    counts = []
    for start in range(0, 6000, 20):
        ids = [str(i) for i in range(start, start + 20)]
        collection.add(ids, ids, [None] * 20, collection.check_vectors(x[start : start + 20]))
        counts.append(len(collection.snapshot.views))
    n = collection.snapshot.live_rows
    assert n == 6000
    assert max(counts) <= 2 * (SMALL.tier(n) + 1)  # (segments_per_tier - 1) per tier
    assert counts[-1] < 300 / 10


def test_default_policy_leaves_few_segments_after_small_adds() -> None:
    collection = Collection(CollectionConfig(quantization="binary"))
    x = clustered_vectors(2000, DIM, seed=4)
    for start in range(0, 2000, 10):
        ids = [str(i) for i in range(start, start + 10)]
        collection.add(ids, ids, [None] * 10, collection.check_vectors(x[start : start + 10]))
    assert len(collection.snapshot.views) <= 3 * (collection_module.MERGE_POLICY.tier(2000) + 1)
    assert sorted(collection.live_ids(), key=int) == [str(i) for i in range(2000)]
