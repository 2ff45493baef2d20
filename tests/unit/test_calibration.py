"""Runtime calibration: the smallest rescore_multiplier reaching a recall target on a store's own data."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import DimensionMismatchError, InvalidInputError, VQVectorStore
from langchain_vq import calibration as calibration_module
from langchain_vq import collection as collection_module
from langchain_vq.calibration import (
    GROWTH_FLOOR,
    Calibration,
    approx_keys,
    calibrate_multiplier,
    exact_keys,
    needs_calibration,
    query_set,
    with_growth,
)
from langchain_vq.evaluation import exact_top_k, recall_at_k
from tests.conftest import clustered_vectors

DIM = 64


def make_store(n: int, *, dim: int = DIM, quantization: str = "binary", path=None, metric=None, seed=0):
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=dim), path=path, quantization=quantization, metric=metric
    )
    if n:
        x = clustered_vectors(n, dim, seed=seed)
        store.add_embeddings([f"t{i}" for i in range(n)], x, ids=[str(i) for i in range(n)])
    return store


@pytest.fixture(scope="module")
def binary_store():
    return make_store(3000)


def test_smallest_multiplier_reaching_the_target_is_chosen(binary_store) -> None:
    cal = calibrate_multiplier(binary_store, target=0.95, sample=200, stop_at_target=False)
    assert list(cal.recall_by_multiplier) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    meeting = [m for m, r in cal.recall_by_multiplier.items() if r >= 0.95]
    assert cal.met
    assert cal.multiplier == meeting[0]
    assert cal.recall_by_multiplier[1] < 0.95  # binary codes alone do not reach it
    assert cal.recall_by_multiplier[64] >= cal.recall_by_multiplier[1]
    assert cal.queries == 200
    assert cal.query_source == "stored"
    assert cal.rows == 3000
    assert cal.quantization == "binary"


def test_stop_at_target_measures_up_to_the_chosen_multiplier(binary_store) -> None:
    full = calibrate_multiplier(binary_store, target=0.95, sample=200, stop_at_target=False)
    short = calibrate_multiplier(binary_store, target=0.95, sample=200)
    assert short.multiplier == full.multiplier
    assert max(short.recall_by_multiplier) == short.multiplier
    assert short.recall_by_multiplier == {m: full.recall_by_multiplier[m] for m in short.recall_by_multiplier}


@pytest.mark.parametrize("start", [1, 8, 64, 1024, 3])
def test_walk_from_a_start_finds_the_same_multiplier_as_the_full_sweep(binary_store, start: int) -> None:
    full = calibrate_multiplier(binary_store, target=0.95, sample=200, stop_at_target=False)
    walked = calibrate_multiplier(binary_store, target=0.95, sample=200, start=start)
    assert walked.met
    assert walked.multiplier == full.multiplier
    measured = walked.recall_by_multiplier
    assert measured == {m: full.recall_by_multiplier[m] for m in measured}
    steps = list(full.recall_by_multiplier)
    first = steps[0] if start not in steps else start
    chosen = steps.index(walked.multiplier)
    below = steps[chosen - 1] if chosen > 0 else walked.multiplier
    if first >= walked.multiplier:  # walked down from a start that met the target
        assert (min(measured), max(measured)) == (below, first)
    else:  # walked up until the target was met
        assert (min(measured), max(measured)) == (first, walked.multiplier)
    if chosen > 0:  # the step below the answer was measured and missed: the smallest is proven
        assert measured[below] < 0.95


def test_unreachable_target_returns_the_largest_multiplier_not_met(binary_store) -> None:
    cal = calibrate_multiplier(binary_store, target=1.0, sample=100, multipliers=(1, 2))
    assert not cal.met
    assert cal.multiplier == 2


def test_given_queries_recall_matches_the_public_search(binary_store) -> None:
    queries = clustered_vectors(100, DIM, seed=7)
    cal = calibrate_multiplier(binary_store, queries=queries, multipliers=(2, 8), stop_at_target=False)
    assert cal.query_source == "given"
    # Recall is measured against exact search over the vectors the store keeps (float16 by
    # default), the same truth calibration uses.
    corpus = clustered_vectors(3000, DIM, seed=0)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    truth = exact_top_k(queries, corpus.astype(np.float16).astype(np.float32), 10).tolist()
    for m in (2, 8):
        found = [
            [int(d.id) for d, _ in res]
            for res in binary_store.batch_similarity_search_by_vector(queries, k=10, rescore_multiplier=m)
        ]
        assert cal.recall_by_multiplier[m] == pytest.approx(recall_at_k(found, truth, 10), abs=1e-9)


def test_sampled_queries_exclude_their_own_row(binary_store) -> None:
    collection = binary_store.collection
    qs = query_set(collection, None, 50, 0)
    assert qs.keys is not None
    assert len(set(qs.keys.tolist())) == 50
    truth = exact_keys(collection, qs, 10)
    found = approx_keys(collection, qs, 10, multiplier=4)
    for key, t, f in zip(qs.keys.tolist(), truth, found, strict=True):
        assert key not in t
        assert key not in f
        assert len(t) == 10
        assert len(f) == 10


def test_sampled_recall_is_close_to_held_out_recall(binary_store) -> None:
    stored = calibrate_multiplier(binary_store, sample=300, multipliers=(4,), target=1.0)
    held = calibrate_multiplier(
        binary_store, queries=clustered_vectors(300, DIM, seed=3), multipliers=(4,), target=1.0
    )
    assert abs(stored.recall_by_multiplier[4] - held.recall_by_multiplier[4]) < 0.06


def test_deleted_rows_are_neither_queries_nor_results(tmp_path) -> None:
    store = make_store(1000, path=tmp_path / "s")
    store.add_embeddings(
        [f"u{i}" for i in range(500)], clustered_vectors(500, DIM, seed=9), ids=[f"u{i}" for i in range(500)]
    )
    store.delete([str(i) for i in range(0, 1000, 2)])
    collection = store.collection
    snapshot = collection.snapshot
    assert len(snapshot.views) == 2
    qs = query_set(collection, None, 10_000, 0)
    assert qs.keys is not None
    assert qs.keys.size == len(store) == 1000
    dead = {int(r) for r in snapshot.views[0].deleted}
    segment_of = qs.keys >> 40
    assert not dead & set((qs.keys[segment_of == 0] & ((1 << 40) - 1)).tolist())
    truth = exact_keys(collection, qs, 10)
    found = approx_keys(collection, qs, 10, multiplier=2)
    for rows in truth + found:
        assert not {k & ((1 << 40) - 1) for k in rows if k >> 40 == 0} & dead
    cal = calibrate_multiplier(store, sample=100)
    assert cal.rows == 1000


def test_exact_and_small_stores_have_recall_one() -> None:
    exact = make_store(300, quantization="none")
    cal = calibrate_multiplier(exact, sample=50)
    assert cal.multiplier == 1
    assert cal.recall_by_multiplier == {1: 1.0}
    for n in (1, 3):
        tiny = make_store(n)
        cal = calibrate_multiplier(tiny)
        assert cal.met
        assert cal.multiplier == 1
        assert cal.queries == n


@pytest.mark.parametrize(("dim", "metric"), [(97, "cosine"), (12, "l2"), (5, "dot")])
def test_odd_dimensions_and_metrics(dim, metric) -> None:
    store = make_store(800, dim=dim, metric=metric)
    cal = calibrate_multiplier(store, sample=50, target=0.9)
    assert cal.met
    assert 0.9 <= cal.recall_by_multiplier[cal.multiplier] <= 1.0


def test_calibration_round_trips_through_json(binary_store) -> None:
    cal = calibrate_multiplier(binary_store, sample=30, multipliers=(4, 16))
    data = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(data) == cal


def test_argument_errors(binary_store) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        calibrate_multiplier(make_store(0))
    with pytest.raises(InvalidInputError, match="target"):
        calibrate_multiplier(binary_store, target=1.5)
    with pytest.raises(InvalidInputError, match="multipliers"):
        calibrate_multiplier(binary_store, multipliers=(0, 2))
    with pytest.raises(InvalidInputError, match="k must be"):
        calibrate_multiplier(binary_store, k=0)
    with pytest.raises(DimensionMismatchError):
        calibrate_multiplier(binary_store, queries=np.ones((3, DIM + 1), np.float32))
    with pytest.raises(InvalidInputError, match="VQVectorStore"):
        calibrate_multiplier(object())
    for bad in (-1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(InvalidInputError, match="z must be"):
            calibrate_multiplier(binary_store, z=bad)


def calibration_at(rows: int, target: float = 0.99) -> Calibration:
    return Calibration(
        multiplier=16,
        target=target,
        met=True,
        k=10,
        recall_by_multiplier={16: 0.995},
        queries=100,
        query_source="stored",
        quantization="binary",
        rows=rows,
        version=1,
    )


def test_needs_calibration_when_trained_retrained_grown_or_retargeted(binary_store) -> None:
    snapshot = binary_store.collection.snapshot  # 3000 live rows, trained
    untrained = replace(snapshot, quantizer=None)
    growth = calibration_module.RECALIBRATE_GROWTH
    assert needs_calibration(None, untrained, snapshot, 0.99)  # first training
    assert needs_calibration(None, snapshot, snapshot, 0.99)  # never measured
    assert not needs_calibration(None, untrained, untrained, 0.99)  # exact search: nothing to measure
    assert not needs_calibration(calibration_at(3000), snapshot, snapshot, 0.99)
    assert not needs_calibration(calibration_at(math.floor(3000 / growth) + 1), snapshot, snapshot, 0.99)
    assert needs_calibration(calibration_at(math.floor(3000 / growth)), snapshot, snapshot, 0.99)
    assert needs_calibration(calibration_at(3000, target=0.95), snapshot, snapshot, 0.99)  # other target
    retrained = replace(snapshot, quantizer=copy.copy(snapshot.quantizer))
    assert needs_calibration(calibration_at(3000), snapshot, retrained, 0.99)  # new codes (compact)


def test_store_calibration_adds_the_margin_and_walks_up_only_when_asked(binary_store) -> None:
    full = calibrate_multiplier(binary_store, target=0.95, sample=200, stop_at_target=False)
    steps = list(full.recall_by_multiplier)
    plain = calibrate_multiplier(binary_store, target=0.95, sample=200)
    margin = full.recall_by_multiplier[plain.multiplier] - 0.95 + 1e-6  # just above its recall
    strict = calibrate_multiplier(binary_store, target=0.95, margin=margin, sample=200)
    assert strict.multiplier == steps[steps.index(plain.multiplier) + 1]
    assert strict.goal == pytest.approx(0.95 + margin)
    up_only = calibrate_multiplier(binary_store, target=0.95, sample=200, start=1024, descend=False)
    assert (up_only.multiplier, list(up_only.recall_by_multiplier)) == (1024, [1024])


def test_lower_bound_rule_needs_the_recall_z_standard_errors_above_the_target() -> None:
    cal = replace(
        calibration_at(1000), margin=0.003, z=2.33, recall_by_multiplier={24: 0.994, 32: 0.9965},
        error_by_multiplier={24: 0.002, 32: 0.001},
    )  # fmt: skip
    assert not cal.meets(24)  # 0.994 - 2.33 * 0.002 = 0.9893 < 0.99, though above the goal 0.993
    assert cal.meets(32)  # 0.9965 - 0.00233 >= 0.99
    assert replace(cal, z=0.0).meets(24)  # the margin alone
    assert not replace(cal, z=0.0, recall_by_multiplier={24: 0.9925}).meets(24)  # below the goal


def test_z_chooses_the_smallest_multiplier_whose_lower_bound_reaches_the_target(binary_store) -> None:
    plain = calibrate_multiplier(binary_store, target=0.95, sample=200, early_stop=True, refine=2)
    bounded = calibrate_multiplier(binary_store, target=0.95, z=3.0, sample=200, early_stop=True, refine=2)
    assert plain.z == 0.0 and bounded.z == 3.0
    assert bounded.multiplier > plain.multiplier  # on this seeded store: more candidates
    chosen = bounded.multiplier
    recall, error = bounded.recall_by_multiplier[chosen], bounded.error_by_multiplier[chosen]
    assert error > 0 and recall - 3.0 * error >= 0.95
    assert not any(bounded.meets(m) for m in bounded.recall_by_multiplier if m < chosen)
    # The standard error is the per-query recall's deviation over the root of the queries.
    qs = query_set(binary_store.collection, None, 200, 0)
    truth = exact_keys(binary_store.collection, qs, 10)
    found = approx_keys(binary_store.collection, qs, 10, multiplier=chosen)
    per_query = [recall_at_k([f], [t], 10) for f, t in zip(found, truth, strict=True)]
    assert recall == pytest.approx(np.mean(per_query))
    assert error == pytest.approx(np.std(per_query) / np.sqrt(200))


def test_calibrations_saved_before_the_lower_bound_load_and_serve_as_before(tmp_path) -> None:
    saved = calibration_at(1000).to_dict()
    assert saved["z"] == 0.0 and saved["error_by_multiplier"] == {}
    del saved["z"], saved["error_by_multiplier"]  # as written by the previous version
    old = Calibration.from_dict(json.loads(json.dumps(saved)))
    assert (old.z, old.error_by_multiplier, old.multiplier) == (0.0, {}, 16)
    assert old.meets(16)  # 0.995 >= goal: the margin alone, as chosen then
    store = make_store(3000, path=tmp_path / "s")
    current = store.calibration
    assert current is not None and current.z == calibration_module.DEFAULT_CONFIDENCE_Z
    written = current.to_dict()
    del written["z"], written["error_by_multiplier"]
    written["multiplier"] = 7  # recognisably the saved one
    store.collection.update_settings({"calibration": written})
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")
    assert reopened.calibration == replace(current, multiplier=7, z=0.0, error_by_multiplier={})
    assert reopened.rescore_multiplier == 7  # no rows added since: the saved multiplier


def test_early_stop_never_decides_met_on_a_prefix(binary_store, monkeypatch) -> None:
    """A multiplier met on the first 50 queries is measured on all of them; a clear miss stops at 50."""
    collection = binary_store.collection
    sizes: list[int] = []
    real = collection.search_keys

    def spy(queries, k, **kwargs):
        if not kwargs.get("exact"):
            sizes.append(len(queries))
        return real(queries, k, **kwargs)

    monkeypatch.setattr(collection, "search_keys", spy)
    met = calibrate_multiplier(collection, target=0.5, sample=200, multipliers=(64,), early_stop=True)
    assert met.met and met.recall_by_multiplier[64] > 0.9  # clearly above the goal at 50 queries
    assert sum(sizes) == 200
    sizes.clear()
    missed = calibrate_multiplier(collection, target=0.999, sample=200, multipliers=(1,), early_stop=True)
    assert not missed.met and sum(sizes) == 50


def test_multiplier_grows_with_the_rows_added_since_the_calibration() -> None:
    cal = Calibration(
        multiplier=24, target=0.99, met=True, k=10, recall_by_multiplier={24: 0.995},
        queries=200, query_source="stored", quantization="binary", rows=1000, version=1,
    )  # fmt: skip
    assert [cal.multiplier_for(rows) for rows in (0, 999, 1000)] == [24, 24, 24]
    assert cal.multiplier_for(1001) == 25  # ceil(24 * 1.001)
    assert cal.multiplier_for(1200) == 29  # ceil(28.8)
    assert cal.multiplier_for(1499) == 36
    assert cal.multiplier_for(100_000) == 1024  # never beyond the largest default
    assert replace(cal, multiplier=2048).multiplier_for(5000) == 2048  # nor below the measured one
    saved = cal.to_dict()
    assert Calibration.from_dict(saved).multiplier_for(1200) == 29
    del saved["grows"]  # saved before the rule: searches keep the measured multiplier
    assert Calibration.from_dict(saved).multiplier_for(1200) == 24


def test_growth_exponent_comes_from_the_last_two_calibrations_clamped_to_floor_and_one() -> None:
    first = replace(calibration_at(1000), multiplier=24)
    assert with_growth(first, None).growth == 1.0  # one calibration: the linear rule
    measured = math.log(32 / 24) / math.log(2)  # 0.415
    assert with_growth(replace(first, rows=2000, multiplier=32), first, floor=0.25).growth == pytest.approx(
        measured
    )
    assert with_growth(replace(first, rows=2000, multiplier=32), first, floor=0.5).growth == 0.5
    assert with_growth(replace(first, rows=2000, multiplier=32), first).growth == GROWTH_FLOOR == 0.75
    between = math.log(44 / 24) / math.log(2)  # 0.874: inside [floor, 1], used as measured
    assert with_growth(replace(first, rows=2000, multiplier=44), first).growth == pytest.approx(between)
    # Faster than the rows (1.32): a noisy jump, not growth; the exponent before is kept.
    assert with_growth(replace(first, rows=2000, multiplier=60), first).growth == 1.0  # first's: linear
    assert with_growth(replace(first, rows=2000, multiplier=60), replace(first, growth=0.8)).growth == 0.8
    assert with_growth(replace(first, rows=2000, multiplier=20), first).growth == GROWTH_FLOOR  # fell
    assert with_growth(replace(first, rows=2000, multiplier=1024, met=False), first).growth == 1.0
    assert with_growth(replace(first, rows=2000), replace(first, met=False)).growth == 1.0
    # Closer than 1.5x in rows (compact, a forced recalibration): the previous exponent stays.
    previous = replace(first, growth=0.7)
    assert with_growth(replace(first, rows=1400, multiplier=40), previous).growth == 0.7
    assert with_growth(replace(first, rows=1000, multiplier=16), previous).growth == 0.7
    for bad in (0, 1.5, -0.1, "0.5", True):
        with pytest.raises(InvalidInputError, match="floor"):
            with_growth(first, None, floor=bad)


def test_multiplier_grows_with_the_measured_exponent_and_old_calibrations_keep_their_rule() -> None:
    cal = replace(calibration_at(1000), multiplier=32, growth=0.5)
    assert cal.multiplier_for(1000) == 32
    assert cal.multiplier_for(2000) == 46  # ceil(32 * sqrt(2) = 45.25)
    assert cal.multiplier_for(4000) == 64
    assert cal.multiplier_for(10**9) == 1024  # never beyond the largest default
    saved = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(saved) == cal
    del saved["growth"]  # saved before the exponent was measured: linear, as then
    assert Calibration.from_dict(saved).growth == 1.0
    assert Calibration.from_dict(saved).multiplier_for(2000) == 64
    del saved["grows"]  # saved before any growth: the measured multiplier
    assert Calibration.from_dict(saved).multiplier_for(2000) == 32


def test_store_serves_the_exponent_of_its_last_two_calibrations() -> None:
    store = make_store(0)
    x = clustered_vectors(7200, DIM, seed=7)
    for lo, hi in ((0, 3000), (3000, 6000), (6000, 7200)):
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
        if hi == 3000:
            first = store.calibration
            assert first is not None and first.growth == 1.0
    second = store.calibration
    assert second is not None and first is not None and second.rows == 6000  # doubled: measured again
    measured = math.log(second.multiplier / first.multiplier) / math.log(2)
    assert second.growth == pytest.approx(min(1.0, max(GROWTH_FLOOR, measured)))
    expected = (
        math.ceil(second.multiplier * 1.2**second.growth)
        if second.growth < 1
        else math.ceil(second.multiplier * 1.2)
    )
    assert store.rescore_multiplier == max(second.multiplier, expected)


def test_store_searches_with_the_multiplier_grown_since_its_calibration() -> None:
    store = make_store(0)
    x = clustered_vectors(3600, DIM, seed=7)
    store.add_embeddings([f"t{i}" for i in range(3000)], x[:3000], ids=[str(i) for i in range(3000)])
    calibration = store.calibration
    assert calibration is not None and calibration.rows == 3000
    store.add_embeddings(
        [f"t{i}" for i in range(3000, 3600)], x[3000:], ids=[str(i) for i in range(3000, 3600)]
    )
    assert store.calibration == calibration  # 1.2x the rows: not measured again
    grown = math.ceil(calibration.multiplier * 1.2)
    assert store.rescore_multiplier == grown > calibration.multiplier
    query = clustered_vectors(5, DIM, seed=8)
    for q in query:
        default = store.similarity_search_with_score_by_vector(q, k=10)
        explicit = store.similarity_search_with_score_by_vector(q, k=10, rescore_multiplier=grown)
        assert [(d.id, s) for d, s in default] == [(d.id, s) for d, s in explicit]


def test_early_stop_decides_clear_cases_on_fewer_queries() -> None:
    decided = calibration_module._decided
    assert not decided([1.0] * 49, 0.993, 10)  # too few queries to decide anything
    assert decided([1.0] * 50, 0.993, 10)  # all perfect: clearly met
    assert not decided([0.9] * 5 + [1.0] * 45, 0.993, 10)  # mean 0.99, within two standard errors
    assert decided([0.9] * 20 + [1.0] * 30, 0.993, 10)  # mean 0.96: clearly not met
    assert not decided([0.9] * 1 + [1.0] * 49, 0.999, 10)  # 0.998 vs 0.999: too close


def test_early_stop_measures_a_prefix_and_chooses_like_the_full_measurement(
    binary_store, monkeypatch
) -> None:
    collection = binary_store.collection
    sizes: list[int] = []
    real = collection.search_keys

    def spy(queries, k, **kwargs):
        if not kwargs.get("exact"):
            sizes.append(len(queries))
        return real(queries, k, **kwargs)

    monkeypatch.setattr(collection, "search_keys", spy)
    full = calibrate_multiplier(
        collection, target=0.95, sample=200, multipliers=(1, 1024), stop_at_target=False
    )
    full_queries = sum(sizes)
    sizes.clear()
    early = calibrate_multiplier(
        collection, target=0.95, sample=200, multipliers=(1, 1024), stop_at_target=False, early_stop=True
    )
    assert full_queries == 200  # m=1024 means as many candidates as rows: exact, not searched
    assert sum(sizes) < full_queries  # m=1 was decided before all 200 queries
    assert early.multiplier == full.multiplier == 1024
    assert early.recall_by_multiplier[1] < 0.95 <= early.recall_by_multiplier[1024]


def _count_exact_queries(collection, monkeypatch) -> list[int]:
    """The query count of each exact search the collection runs from now on (filled as they run)."""
    sizes: list[int] = []
    real = collection.search_keys

    def spy(queries, k, **kwargs):
        if kwargs.get("exact"):
            sizes.append(len(queries))
        return real(queries, k, **kwargs)

    monkeypatch.setattr(collection, "search_keys", spy)
    return sizes


def test_exact_truth_takes_one_pass_for_every_query_searched_or_ranked(binary_store, monkeypatch) -> None:
    """Each exact pass decodes every stored row, and the chosen multiplier needs every query: one pass."""
    collection = binary_store.collection
    exact_sizes = _count_exact_queries(collection, monkeypatch)
    cal = calibrate_multiplier(
        collection, target=0.95, sample=200, multipliers=(1, 2, 4), stop_at_target=False
    )
    assert exact_sizes == [200]  # every query's truth once, for three multipliers searched
    exact_sizes.clear()
    ranked = calibrate_multiplier(collection, target=0.95, sample=200, start=4, early_stop=True, refine=1)
    assert exact_sizes == [200]
    assert ranked.met and len(ranked.recall_by_multiplier) > 1  # several multipliers, one truth
    monkeypatch.undo()
    qs = query_set(collection, None, 200, 0)
    expected = calibration_module.exact_keys(collection, qs, 10)
    approx = approx_keys(collection, qs, 10, multiplier=4)
    assert cal.recall_by_multiplier[4] == pytest.approx(recall_at_k(approx, expected, 10))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_refine_bisects_between_the_last_miss_and_the_first_hit(binary_store, levels: int) -> None:
    coarse = calibrate_multiplier(binary_store, target=0.95, sample=200)
    fine = calibrate_multiplier(binary_store, target=0.95, sample=200, refine=levels)
    measured = fine.recall_by_multiplier
    assert fine.met
    assert measured[fine.multiplier] >= 0.95
    assert fine.multiplier <= coarse.multiplier
    below = [m for m in measured if m < coarse.multiplier]
    assert below, "the walk from the default start crossed the goal between two steps"
    low = max(m for m in coarse.recall_by_multiplier if m < coarse.multiplier)
    extra = sorted(set(measured) - set(coarse.recall_by_multiplier))
    assert 1 <= len(extra) <= levels  # one measurement per bisection step, none repeated
    assert all(low < m < coarse.multiplier for m in extra)
    assert extra[0] == (low + coarse.multiplier) // 2 or (low + coarse.multiplier) // 2 in extra
    # Recall grows with the multiplier (the candidate sets are nested): everything measured
    # below the answer misses, so it is the smallest on the grid bisected.
    assert all(r < 0.95 for m, r in measured.items() if m < fine.multiplier)
    for m in measured:  # the same measurement as without refinement
        if m in coarse.recall_by_multiplier:
            assert measured[m] == coarse.recall_by_multiplier[m]


def test_refine_without_a_miss_below_keeps_the_answer(binary_store) -> None:
    up_only = calibrate_multiplier(binary_store, target=0.95, sample=200, start=1024, descend=False, refine=2)
    assert (up_only.multiplier, list(up_only.recall_by_multiplier)) == (1024, [1024])
    everything = calibrate_multiplier(binary_store, target=0.3, sample=200, multipliers=(1, 2), refine=2)
    assert everything.multiplier == 1  # the smallest step met: nothing below to bisect
    assert list(everything.recall_by_multiplier) == [1]


def test_refined_start_between_steps_is_walked_from(binary_store) -> None:
    fine = calibrate_multiplier(binary_store, target=0.95, sample=200, refine=1)
    again = calibrate_multiplier(
        binary_store, target=0.95, sample=200, refine=1, start=fine.multiplier, descend=False
    )
    assert again.multiplier == fine.multiplier
    assert list(again.recall_by_multiplier) == [fine.multiplier]  # one measurement: still met
    plain = calibrate_multiplier(binary_store, target=0.95, sample=200, start=3)
    assert plain.multiplier in calibration_module.DEFAULT_MULTIPLIERS  # refine=0: steps only
    outside = calibrate_multiplier(
        binary_store, target=1.0, sample=100, multipliers=(1, 2), start=16, refine=1
    )
    assert sorted(outside.recall_by_multiplier) == [1, 2]  # a start beyond the steps is not one
    assert (outside.multiplier, outside.met) == (2, False)


def test_refine_argument_errors(binary_store) -> None:
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(InvalidInputError, match="refine"):
            calibrate_multiplier(binary_store, refine=bad)


@pytest.mark.parametrize("seed", [21, 31])
@pytest.mark.parametrize("quantization", ["binary", "pq"])
def test_recall_after_every_add_holds_against_exact_float_search(quantization: str, seed: int) -> None:
    """Adds of 1500 rows to 15,000: held-out recall@10 of the default search after each one.

    Calibrations at 1500, 3000, 6000 and 12,000 rows; in between, the multiplier grows by the
    exponent measured from the last two. Recall@10 against exact float search on 500 held-out
    queries must be >= 0.99 after every add, right after a calibration too. Before the lower
    bound (``DEFAULT_CONFIDENCE_Z``) and the rule that only a miss stops early, these seeded
    stores gave 0.9844 (binary, seed 21, right after the calibration at 3000 rows, m=23) and
    0.9892 (PQ, seed 31, at 15,000 rows, m=67 grown from 56 measured at 12,000).
    """
    store = make_store(0, quantization=quantization)
    x = clustered_vectors(15_000, DIM, seed=seed)
    queries = clustered_vectors(500, DIM, seed=seed + 1)
    between, at_calibration = [], []
    for lo in range(0, 15_000, 1500):
        hi = lo + 1500
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
        found = [[int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)]
        recall = recall_at_k(found, exact_top_k(queries, x[:hi], 10).tolist(), 10)
        calibration = store.calibration
        assert calibration is not None
        (at_calibration if calibration.rows == hi else between).append(recall)
    assert len(at_calibration) == 4 and len(between) == 6
    assert store.calibration is not None and store.calibration.growth < 1.0  # measured, not linear
    assert min(between) >= 0.99, between
    assert min(at_calibration) >= 0.99, at_calibration


def _calibrated_store(quantization: str, options: dict) -> VQVectorStore:
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=DIM), quantization=quantization, quantizer_options=options
    )
    x = clustered_vectors(3000, DIM, seed=0)
    store.add_embeddings([f"t{i}" for i in range(3000)], x, ids=[str(i) for i in range(3000)])
    return store


def test_store_calibration_refines_once_between_powers_of_two_when_searching() -> None:
    """Measured by searches (two-stage binary), the store's calibration bisects once between steps."""
    calibration = _calibrated_store("binary", {"fast_scan": False}).calibration
    assert calibration is not None and calibration.met
    measured, meets = calibration.recall_by_multiplier, calibration.meets
    steps = calibration_module.DEFAULT_MULTIPLIERS
    low = max(m for m in measured if m in steps and not meets(m))
    high = min(m for m in measured if m in steps and meets(m))
    middle = (low + high) // 2
    assert steps.index(high) == steps.index(low) + 1
    assert set(measured) - set(steps) == {middle}  # the refinement's one extra measurement
    assert calibration.multiplier == (middle if meets(middle) else high)


@pytest.mark.parametrize("quantization", ["binary", "pq"])
def test_store_calibration_ranked_from_one_scan_bisects_to_the_integer(quantization: str) -> None:
    """Ranked from one scan, bisection costs no search: the smallest integer meeting the goal."""
    calibration = _calibrated_store(quantization, {}).calibration
    assert calibration is not None and calibration.met
    chosen = calibration.multiplier
    assert calibration.meets(chosen)
    assert not calibration.meets(chosen - 1)  # one candidate per result fewer misses
    assert chosen not in calibration_module.DEFAULT_MULTIPLIERS  # on these seeded stores


@pytest.mark.parametrize("quantization", ["binary", "pq", "int8"])
def test_recall_ranked_from_one_scan_equals_recall_of_searches(quantization: str) -> None:
    # Three segments, one so small that the search reads it exactly from m=20 (k*m >= its rows).
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization=quantization)
    x = clustered_vectors(6200, DIM, seed=3)
    for lo, hi in ((0, 3000), (3000, 6000), (6000, 6200)):
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
    collection, snapshot = store.collection, store.collection.snapshot
    assert sorted(v.live_count for v in snapshot.views) == [200, 3000, 3000]
    assert snapshot.quantizer.ranks_candidates_by_one_score
    qs = query_set(collection, None, 150, seed=5, snapshot=snapshot)
    truth = exact_keys(collection, qs, 10, snapshot=snapshot)
    multipliers = [1, 2, 4, 8, 16, 24, 32]

    def measured(ceiling: int | None) -> dict[int, float]:
        m = calibration_module._Measurer(
            collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=ceiling
        )
        assert m.ceiling == ceiling
        for multiplier in multipliers:
            m.meets(multiplier)
        return m.recall_by

    ranked, searched = measured(32), measured(None)
    for multiplier in multipliers:  # the searches themselves, against exact float search
        found = approx_keys(collection, qs, 10, multiplier=multiplier, snapshot=snapshot)
        assert searched[multiplier] == pytest.approx(recall_at_k(found, truth, 10))
    # Equal (here exactly); a tie in code scores at the k*m-th place could swap one neighbour.
    assert ranked == pytest.approx(searched, abs=1 / (150 * 10))
    assert ranked[1] <= ranked[8] <= ranked[32]
    if quantization != "int8":  # int8 codes alone find these neighbours already
        assert ranked[1] < ranked[32]


def test_two_stage_binary_is_not_ranked_from_one_scan() -> None:
    # Two stages: candidates at a larger count come from a larger Hamming top, not a prefix.
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantizer_options={"fast_scan": False})
    x = clustered_vectors(3000, DIM, seed=0)
    store.add_embeddings([f"t{i}" for i in range(3000)], x, ids=[str(i) for i in range(3000)])
    snapshot = store.collection.snapshot
    assert not snapshot.quantizer.ranks_candidates_by_one_score
    assert store.collection.ranked_candidates(snapshot) == 0
    qs = query_set(store.collection, None, 50, seed=0, snapshot=snapshot)
    m = calibration_module._Measurer(
        store.collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=32
    )
    assert m.ceiling is None


def _partitioned_store(
    quantization: str, sizes: tuple[int, ...], lists: int, nprobe: int | None
) -> VQVectorStore:
    """A store of one add per size (seeded rows), in ``lists`` lists, ``nprobe`` probed (None: chosen)."""
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=DIM),
        quantization=quantization,
        quantizer_options={"partitions": lists, "nprobe": nprobe},
    )
    x = clustered_vectors(sum(sizes), DIM, seed=3)
    lo = 0
    for size in sizes:
        hi = lo + size
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
        lo = hi
    return store


@pytest.mark.parametrize("quantization", ["binary", "pq"])
def test_partitioned_recall_ranked_from_one_scan_equals_recall_of_searches(quantization: str) -> None:
    """Partitioned stores are ranked from one scan, and measure exactly what their searches find.

    Three segments probed as one index (16 lists, 4 probed); the smallest is read exactly from
    m=20 on. Code scores tie often (8-bit tables): FAISS kept tied rows at the k-th place in
    the order it visits lists, so with ranking forced on, the ranked recall differed from the
    searches' by a neighbour or two (binary 0.4573 against 0.4587 at m=2; PQ at m=2, 4, 16);
    ties are ordered by key on both sides now.
    """
    store = _partitioned_store(quantization, (3000, 3000, 200), lists=16, nprobe=4)
    collection, snapshot = store.collection, store.collection.snapshot
    assert snapshot.quantizer.partitions == 16 and snapshot.quantizer.ranks_candidates_by_one_score
    assert sorted(v.live_count for v in snapshot.views) == [200, 3000, 3000]
    qs = query_set(collection, None, 150, seed=5, snapshot=snapshot)
    multipliers = [1, 2, 3, 4, 8, 16, 24, 32]

    def measured(ceiling: int | None) -> dict[int, float]:
        m = calibration_module._Measurer(
            collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=ceiling
        )
        assert m.ceiling == ceiling  # 32: within the rows every query's 4 lists hold
        for multiplier in multipliers:
            m.meets(multiplier)
        return m.recall_by

    ranked, searched = measured(32), measured(None)
    assert ranked == searched  # equal, not close
    assert ranked[1] < ranked[8] < ranked[32] < 1.0


@pytest.mark.parametrize("quantization", ["binary", "pq"])
def test_ranking_reaches_as_far_as_the_fewest_rows_any_probed_lists_hold(quantization: str) -> None:
    # A query whose probed lists hold fewer rows than a search asks for gets every list: its
    # best n at a count past its lists' rows are not the first n of a scan of its lists.
    store = _partitioned_store(quantization, (2000, 1000), lists=16, nprobe=2)
    collection, snapshot = store.collection, store.collection.snapshot
    lists = np.concatenate([v.segment.stored_codes.lists for v in snapshot.views])
    reach = collection.ranked_candidates(snapshot)
    assert reach == np.sort(np.bincount(lists, minlength=16))[:2].sum()  # the two smallest lists
    qs = query_set(collection, None, 50, seed=5, snapshot=snapshot)
    within, past = (reach - 1) // 10, (reach - 1) // 10 + 1  # ceilings: 10 * c + own row <= reach

    def ceiling(c: int) -> int | None:
        return calibration_module._Measurer(
            collection, qs, 10, 0.99, early_stop=False, snapshot=snapshot, ceiling=c
        ).ceiling

    assert (ceiling(within), ceiling(past)) == (within, None)
    # Why: past the rows some query's lists hold, a larger count is not a longer prefix.
    lists_of = {int(k): int(lists[i]) for i, k in enumerate(_keys(snapshot))}
    short = collection.candidate_keys(qs.vectors, 10 * within, exclude=qs.keys, snapshot=snapshot)
    long = collection.candidate_keys(qs.vectors, 1500, exclude=qs.keys, snapshot=snapshot)
    assert (long[:, : 10 * within] == short).all(axis=1).mean() < 1.0
    # ... since those queries' candidates come from more than their two lists.
    assert (
        max(len({lists_of[int(k)] for k in row}) for row in short)
        <= 2
        < max(len({lists_of[int(k)] for k in row}) for row in long)
    )


def _keys(snapshot) -> np.ndarray:
    """Row keys of a snapshot's rows, segment after segment (as its lists are concatenated)."""
    shift = collection_module.ROW_KEY_SHIFT
    return np.concatenate([(i << shift) + np.arange(v.segment.rows) for i, v in enumerate(snapshot.views)])


@pytest.mark.parametrize("quantization", ["binary", "pq"])
def test_partitioned_store_calibrates_from_one_candidate_scan_per_query(
    quantization: str, monkeypatch
) -> None:
    """Recalibrating a partitioned store scans candidates once per sampled query, with no search."""
    store = _partitioned_store(quantization, (3000,), lists=16, nprobe=None)  # nprobe chosen at training
    assert store.calibration is not None and store.collection.snapshot.quantizer.partitions == 16
    calls: list[tuple[int, bool]] = []  # (queries, candidates only) of every code scan
    real = collection_module.search_segments

    def spy(views, queries, k, **kwargs):
        if kwargs.get("quantizer") is not None:
            calls.append((len(queries), bool(kwargs.get("candidates_only"))))
        return real(views, queries, k, **kwargs)

    monkeypatch.setattr(collection_module, "search_segments", spy)
    x = clustered_vectors(3000, DIM, seed=4)  # doubles the rows: the store measures again
    store.add_embeddings([f"u{i}" for i in range(3000)], x, ids=[f"u{i}" for i in range(3000)])
    calibration = store.calibration
    assert calibration is not None and calibration.rows == 6000 and calibration.met
    assert len(calibration.recall_by_multiplier) >= 2  # a walk of several multipliers
    assert calls == [(1, True)] * calibration.queries  # one scan per query, no two-stage search


def test_store_whose_last_calibration_was_noisy_high_walks_down_at_the_next(tmp_path) -> None:
    """A calibration high by its sample's noise comes down at the next one (it used to walk up only)."""
    x = clustered_vectors(4000, DIM, seed=41)
    store = make_store(0, path=tmp_path / "s")
    store.add_embeddings([f"t{i}" for i in range(2000)], x[:2000], ids=[str(i) for i in range(2000)])
    honest = store.calibration
    assert honest is not None and honest.met and honest.multiplier < 256
    high = replace(honest, multiplier=512, recall_by_multiplier={512: 1.0}, error_by_multiplier={512: 0.0})
    store.collection.update_settings({"calibration": high.to_dict()})
    assert store.rescore_multiplier == 512
    ids = [str(i) for i in range(2000, 4000)]
    store.add_embeddings([f"t{i}" for i in range(2000, 4000)], x[2000:], ids=ids)  # 2x: calibrates
    calibration = store.calibration
    assert calibration is not None and calibration.rows == 4000 and calibration.met
    assert 512 in calibration.recall_by_multiplier  # walked from the last answer ...
    assert calibration.multiplier < 256  # ... and down to what the store needs
    assert not any(
        calibration.meets(m) for m in calibration.recall_by_multiplier if m < calibration.multiplier
    )
    fresh = calibrate_multiplier(
        store, target=0.99, margin=calibration.margin, z=calibration.z, sample=200,
        max_sample=calibration_module.DEFAULT_MAX_SAMPLE, early_stop=True, refine=1,
    )  # fmt: skip
    assert (
        calibration.multiplier <= 2 * fresh.multiplier
    )  # as low as a first calibration, give or take a step


def test_sequential_sampling_adds_queries_only_when_the_decision_is_borderline(
    binary_store, monkeypatch
) -> None:
    """Queries double (one more exact pass each) only when the mean passes and the lower bound misses."""
    collection = binary_store.collection
    passes: list[int] = []
    real = collection.search_keys

    def spy(queries, k, **kwargs):
        if kwargs.get("exact"):
            passes.append(len(queries))
        return real(queries, k, **kwargs)

    monkeypatch.setattr(collection, "search_keys", spy)
    base = calibrate_multiplier(collection, target=0.5, sample=200, multipliers=(4,), max_sample=800, z=3.0)
    recall, error = base.recall_by_multiplier[4], base.error_by_multiplier[4]
    assert 0.5 < recall < 1 and error > 0
    assert base.met and base.queries == 200 and passes == [200]  # clearly met: no more queries
    passes.clear()
    # The target two standard errors below the 200-query mean: borderline at 200 queries.
    borderline = recall - 2 * error
    plain = calibrate_multiplier(collection, target=borderline, sample=200, multipliers=(4,), z=3.0)
    assert not plain.met and plain.queries == 200 and passes == [200]  # no max_sample: as before
    passes.clear()
    more = calibrate_multiplier(
        collection, target=borderline, sample=200, multipliers=(4,), max_sample=800, z=3.0
    )
    assert more.queries in (400, 800) and passes == [200, 200, 400][: len(passes)]
    assert sum(passes) == more.queries  # each query's exact truth computed once
    deviation = more.error_by_multiplier[4] * np.sqrt(more.queries)
    assert deviation == pytest.approx(error * np.sqrt(200), rel=0.5)  # the same spread, more queries
    assert more.met == (more.recall_by_multiplier[4] - 3 * more.error_by_multiplier[4] >= borderline)
    passes.clear()
    # Above the 200-query mean (a clear miss, or one that 800 queries cannot save): nothing more.
    hopeless = calibrate_multiplier(
        collection, target=recall + 0.001, sample=200, multipliers=(4,), max_sample=800, z=3.0
    )
    assert not hopeless.met and hopeless.queries == 200 and passes == [200]
    unsure = recall - 3 * error * np.sqrt(200 / 800) + 0.002  # the bound misses even at 800
    calibrate_multiplier(collection, target=unsure, sample=200, multipliers=(4,), max_sample=800, z=3.0)
    assert passes == [200, 200]
