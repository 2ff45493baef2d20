"""Offline evaluation of search settings on a store's own data (``langchain-vq eval``)."""

from __future__ import annotations

import json

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import ConfigurationError, VQVectorStore
from langchain_vq.evaluation.report import format_table
from langchain_vq.evaluation.settings import evaluate_settings
from tests.conftest import clustered_vectors

DIM = 64


@pytest.fixture(scope="module")
def binary_store():
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization="binary", rescore_multiplier=16)
    x = clustered_vectors(3000, DIM, seed=0)
    store.add_embeddings([f"t{i}" for i in range(3000)], x, ids=[str(i) for i in range(3000)])
    return store


def test_evaluate_settings_table_and_recommendation(binary_store) -> None:
    ev = evaluate_settings(
        binary_store,
        modes=["binary", "int8", "none"],
        multipliers=(1, 4, 16, 64),
        sample=100,
        timed=10,
        max_rows=2000,
        target=0.95,
    )
    labels = [r.label for r in ev.results]
    assert labels[:5] == ["binary codes only", "binary m=1", "binary m=4", "binary m=16", "binary m=64"]
    assert "int8 m=4" in labels
    assert labels[-1] == "exact float"
    by_label = {r.label: r for r in ev.results}
    assert by_label["exact float"].recall == 1.0
    assert by_label["binary m=1"].code_bytes == 8
    assert by_label["binary m=4"].measured_on == "store"
    assert by_label["int8 m=4"].measured_on == "in-memory sample of 2,000 of 3,000 rows"
    assert by_label["int8 m=4"].rows == 2000
    assert all(r.p50_ms > 0 and r.p95_ms >= r.p50_ms for r in ev.results)
    assert ev.smallest is not None
    assert ev.smallest.quantization == "binary"
    assert ev.fastest is not None
    assert ev.fastest.recall >= 0.95
    assert "rescore_multiplier=" in ev.recommendation
    assert ev.notes
    text = format_table(ev)
    assert "binary m=16" in text
    assert ev.recommendation in text
    data = json.loads(json.dumps(ev.to_dict()))
    assert data["smallest"]["label"] == ev.smallest.label
    assert len(data["results"]) == len(ev.results)


def test_evaluate_settings_reports_when_no_setting_reaches_the_target(binary_store) -> None:
    ev = evaluate_settings(binary_store, multipliers=(1,), codes_only=False, sample=50, timed=5, target=1.0)
    assert ev.smallest is None
    assert ev.fastest is None
    assert ev.recommendation.startswith("No setting measured reached")


def test_unknown_mode_is_a_configuration_error(binary_store) -> None:
    with pytest.raises(ConfigurationError, match="Unknown mode"):
        evaluate_settings(binary_store, modes=["float16x"])
