"""A store's later calibrations pooled with its previous one (``calibration.pooled``)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq import calibration as calibration_module
from langchain_vq.calibration import (
    DEFAULT_CONFIDENCE_Z,
    POOL_GROWTH,
    POOLED_Z,
    Calibration,
    comparable,
    pooled,
    pooled_multiplier,
    with_growth,
)
from tests.conftest import clustered_vectors

DIM = 64


def at(rows: int, multiplier: int, **kwargs) -> Calibration:
    values = {
        "multiplier": multiplier,
        "target": 0.99,
        "met": True,
        "k": 10,
        "recall_by_multiplier": {multiplier: 0.995},
        "queries": 200,
        "query_source": "stored",
        "quantization": "binary",
        "rows": rows,
        "version": 1,
        "grows": True,
        **kwargs,
    }
    return Calibration(**values)


def test_pooled_multiplier_is_the_geometric_mean_of_measurement_and_prediction() -> None:
    previous = at(1000, 16)
    # Prediction 16 * 2 ** 0.4 = 21.1; with the measured 30: sqrt(30 * 21.1) = 25.2, rounded up.
    assert POOL_GROWTH == 0.4
    assert math.ceil(math.sqrt(30 * 16 * 2**0.4)) == 26
    assert pooled(at(2000, 30), previous) == replace(at(2000, 30), multiplier=26, measured=30)
    assert pooled(at(2000, 22), previous).multiplier == 22  # measured about as predicted (21.1)
    assert pooled(at(2000, 12), previous).multiplier == 16  # low by noise: pulled up (sqrt(12 * 21.1))
    # The store's own growth since its previous calibration, within [POOL_GROWTH, 1].
    assert pooled(at(2000, 30), replace(previous, trend=0.9)).multiplier == math.ceil(
        math.sqrt(30 * 16 * 2**0.9)
    )
    assert pooled(at(2000, 30), replace(previous, trend=1.7)).multiplier == 31  # sqrt(30 * 32) = 30.98
    assert pooled(at(2000, 30), replace(previous, trend=-0.5)).multiplier == 26  # the floor, 0.4
    assert pooled_multiplier(1024, 1024, 4.0) == 1024  # never beyond the largest multiplier


@pytest.mark.parametrize(
    ("current", "previous"),
    [
        (at(2000, 30), None),  # the first calibration
        (at(1400, 30), at(1000, 16)),  # under 1.5x the rows: noise, not growth
        (at(2000, 30), at(1000, 16, met=False)),  # the previous only the largest tried
        (at(2000, 1024, met=False), at(1000, 16)),  # this one not met
        (at(2000, 30, target=0.95), at(1000, 16)),  # another target
        (at(900, 30), at(1000, 16)),  # fewer rows (compact after deletes)
    ],
)
def test_calibrations_that_are_not_comparable_are_not_pooled(current, previous) -> None:
    assert pooled(current, previous) is current


def test_comparable_needs_a_met_previous_calibration_for_the_same_target_at_two_thirds_of_the_rows() -> None:
    assert comparable(at(1000, 16), 1500, 0.99)
    assert not comparable(at(1000, 16), 1499, 0.99)
    assert not comparable(at(1000, 16), 2000, 0.95)
    assert not comparable(None, 2000, 0.99)


def test_with_growth_keeps_the_unclamped_trend_pooling_predicts_with() -> None:
    previous = at(1000, 16)
    grown = with_growth(at(2000, 20), previous)
    assert grown.trend == pytest.approx(math.log2(20 / 16))  # 0.32: served at the floor 0.75
    assert grown.growth == calibration_module.GROWTH_FLOOR
    assert with_growth(at(2000, 40), previous).trend == pytest.approx(math.log2(40 / 16))  # above 1 too
    assert with_growth(at(1200, 20), previous).trend is None  # too close in rows
    assert with_growth(at(1000, 16), None).trend is None


def test_measured_and_trend_round_trip_and_older_calibrations_load_without_them() -> None:
    calibration = replace(at(2000, 26), measured=30, trend=0.31)
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    saved = calibration.to_dict()
    del saved["measured"], saved["trend"]  # as written by the previous version
    old = Calibration.from_dict(saved)
    assert (old.measured, old.trend, old.multiplier) == (0, None, 26)


def test_store_pools_each_later_calibration_on_the_same_quantizer_but_not_after_compact(tmp_path) -> None:
    """Adds to 8,000 rows: calibrations at 1000, 2000, 4000 and 8000; compact() retrains (new codes)."""
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")
    x = clustered_vectors(8000, DIM, seed=41)
    chain: list[Calibration] = []
    for lo in range(0, 8000, 1000):
        hi = lo + 1000
        store.add_embeddings([f"t{i}" for i in range(lo, hi)], x[lo:hi], ids=[str(i) for i in range(lo, hi)])
        calibration = store.calibration
        assert calibration is not None
        if calibration.rows == hi:
            chain.append(calibration)
    assert [c.rows for c in chain] == [1000, 2000, 4000, 8000]
    first, *later = chain
    assert (first.z, first.measured) == (DEFAULT_CONFIDENCE_Z, 0)  # nothing to pool with
    for previous, calibration in zip(chain, later, strict=False):
        assert calibration.z == POOLED_Z and calibration.measured > 0
        assert calibration.meets(calibration.measured)  # its own queries' choice, at z=2
        expected = pooled_multiplier(calibration.measured, previous.multiplier, 2.0, previous.trend)
        assert calibration.multiplier == expected
        assert calibration.trend == pytest.approx(math.log2(calibration.multiplier / previous.multiplier))
    assert any(c.multiplier != c.measured for c in later)  # on this seeded store, pooling moved one
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")
    assert reopened.calibration == chain[-1]
    store.compact()  # new codes: the previous calibration measured other codes
    compacted = store.calibration
    assert (
        compacted is not None
        and compacted.rows == 8000
        and compacted.version == store.collection.snapshot.version
    )
    assert (compacted.z, compacted.measured) == (DEFAULT_CONFIDENCE_Z, 0)


def test_measurement_far_from_the_prediction_is_served_alone() -> None:
    """Beyond ``POOL_SPREAD`` the store changed or the last answer was wrong: no pooling."""
    previous = at(1000, 16)  # predicts 21.1 at 2000 rows
    assert calibration_module.POOL_SPREAD == 3.0
    assert pooled(at(2000, 63), previous).multiplier == 37  # 63 / 21.1 = 2.98: pooled
    assert pooled(at(2000, 64), previous).multiplier == 64  # 3.03: served alone
    assert pooled(at(2000, 7), previous).multiplier == 7  # 21.1 / 7 = 3.02
    assert pooled(at(2000, 8), previous).multiplier == 13  # 2.64: pooled, sqrt(8 * 21.1) = 12.99
