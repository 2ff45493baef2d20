"""Calibration's ranked recall (``_Measurer._found_by_rank``), all of a chunk's queries at once.

It must find what the per-query rule finds: the true neighbours in a segment the search reads
exactly at this multiplier, or among the first ``k * m`` candidates of the segments it scans,
with a query's own row not live for it (which can make its segment one read exactly).
"""

from __future__ import annotations

import numpy as np
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq import calibration as calibration_module
from langchain_vq.calibration import query_set
from langchain_vq.collection import ROW_KEY_SHIFT
from tests.conftest import clustered_vectors

DIM = 32


def _found_one_by_one(measurer, begin: int, chunk, multiplier: int) -> list[list[int]]:
    """The rule query by query (the loop ``_found_by_rank`` replaced)."""
    views = measurer.snapshot.views
    live = np.array([v.live_count for v in views], dtype=np.int64)
    n = measurer.k * multiplier
    no_codes = np.array([v.segment.stored_codes is None for v in views], dtype=bool)
    has_vectors = np.array([v.segment.has_vectors for v in views], dtype=bool)
    found = []
    for i, candidates in enumerate(measurer.candidates[begin]):
        truth = measurer.truth[begin + i]
        own = -1 if chunk.keys is None else int(chunk.keys[i])
        live_here = live.copy()
        if own >= 0:
            live_here[own >> ROW_KEY_SHIFT] -= 1
        exact = no_codes | (has_vectors & (live_here <= n))
        pooled = candidates[candidates >= 0]
        pooled = pooled[~exact[pooled >> ROW_KEY_SHIFT]][:n]
        seen = set(pooled.tolist())
        found.append([t for t in truth if exact[t >> ROW_KEY_SHIFT] or t in seen])
    return found


def test_found_by_rank_is_the_per_query_rule_own_rows_included() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM))
    x = clustered_vectors(6201, DIM, seed=3)
    for lo, hi in ((0, 3000), (3000, 6000), (6000, 6201)):
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
    collection, snapshot = store.collection, store.collection.snapshot
    small = next(i for i, v in enumerate(snapshot.views) if v.live_count == 201)
    qs = query_set(collection, None, 150, seed=5, snapshot=snapshot)
    # At m = 20 (200 candidates) the 201-row segment is scanned, but read exactly for its own rows.
    assert (qs.keys >> ROW_KEY_SHIFT == small).any()
    measurer = calibration_module._Measurer(
        collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=32
    )
    assert measurer.ceiling == 32
    measurer._truth_to(150)
    checked = 0
    for begin, end in zip(measurer.bounds, measurer.bounds[1:], strict=False):
        chunk = calibration_module.QuerySet(qs.vectors[begin:end], qs.keys[begin:end], qs.source)
        for multiplier in (1, 2, 8, 19, 20, 21, 32):
            found = measurer._found_by_rank(begin, chunk, multiplier)
            assert found == _found_one_by_one(measurer, begin, chunk, multiplier)
            checked += sum(map(len, found))
    assert checked > 0


def test_found_by_rank_with_given_queries_has_no_own_rows() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM))
    x = clustered_vectors(3100, DIM, seed=4)
    store.add_embeddings([f"t{i}" for i in range(3000)], x[:3000], ids=[str(i) for i in range(3000)])
    collection, snapshot = store.collection, store.collection.snapshot
    qs = query_set(collection, x[3000:], 0, seed=0, snapshot=snapshot)
    assert qs.keys is None
    measurer = calibration_module._Measurer(
        collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=16
    )
    measurer._truth_to(100)
    chunk = calibration_module.QuerySet(qs.vectors[:50], None, qs.source)
    for multiplier in (1, 4, 16):
        assert measurer._found_by_rank(0, chunk, multiplier) == _found_one_by_one(
            measurer, 0, chunk, multiplier
        )


def test_found_by_rank_on_drawn_candidates_and_truths() -> None:
    """Drawn rankings (padding, rows of every segment, own rows) against the per-query rule.

    At m = 20 the 201-row segment is scanned for most queries but read exactly for the queries
    sampled from it, so its truths count as found for them, and its rows leave their pool.
    """
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM))
    x = clustered_vectors(6201, DIM, seed=3)
    for lo, hi in ((0, 3000), (3000, 6000), (6000, 6201)):
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
    collection, snapshot = store.collection, store.collection.snapshot
    sizes = np.array([v.live_count for v in snapshot.views])
    qs = query_set(collection, None, 50, seed=1, snapshot=snapshot)
    measurer = calibration_module._Measurer(
        collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=32
    )
    rng = np.random.default_rng(7)

    def keys(shape: tuple[int, ...]) -> np.ndarray:
        segments = rng.integers(0, len(sizes), size=shape)
        return (segments << ROW_KEY_SHIFT) + rng.integers(0, sizes[segments])

    small = int(np.flatnonzero(sizes == 201)[0])
    own = keys((50,))
    own[:20] = (small << ROW_KEY_SHIFT) + rng.integers(0, 201, size=20)  # own rows in the small one
    own[45:] = -1  # given queries have none
    candidates = keys((50, 330))
    candidates[:, 300:] = -1  # places no row filled
    truth = [
        [int(k) for k in rng.choice(np.concatenate([candidates[i, :300], keys((30,))]), size=10 - i % 3)]
        for i in range(50)
    ]
    chunk = calibration_module.QuerySet(qs.vectors, own, qs.source)
    measurer.candidates[0], measurer.truth = candidates, truth
    for multiplier in (1, 5, 19, 20, 21, 32):
        found = measurer._found_by_rank(0, chunk, multiplier)
        assert found == _found_one_by_one(measurer, 0, chunk, multiplier)
    # The own rows mattered: at m = 20 the per-query rule differs from one that ignored them.
    ignored = calibration_module.QuerySet(qs.vectors, np.full(50, -1), qs.source)
    assert measurer._found_by_rank(0, chunk, 20) != measurer._found_by_rank(0, ignored, 20)
