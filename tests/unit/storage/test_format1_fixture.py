"""Stores written in format 1 (committed fixtures) open and answer exactly as when they were written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "format1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture(params=sorted(EXPECTED))
def fixture_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[VQVectorStore, dict]:
    name = request.param
    shutil.copytree(FIXTURES / name, tmp_path / name)  # the committed files stay untouched
    return VQVectorStore(DeterministicFakeEmbedding(size=16), path=tmp_path / name), EXPECTED[name]


def _hits(pairs: list) -> tuple[list[str], list[float]]:
    return [doc.id for doc, _ in pairs], [score for _, score in pairs]


def test_format1_store_opens_and_answers_as_before(fixture_store: tuple[VQVectorStore, dict]) -> None:
    store, expected = fixture_store
    assert store.verify() == []
    assert len(store) == expected["len"]
    queries = np.asarray(expected["queries"], dtype=np.float32)
    for query, want, want_filtered in zip(queries, expected["search"], expected["filtered"], strict=True):
        ids, scores = _hits(store.similarity_search_with_score_by_vector(query, k=5))
        assert ids == [i for i, _ in want]
        assert np.allclose(scores, [s for _, s in want], atol=1e-5)
        ids, scores = _hits(
            store.similarity_search_with_score_by_vector(query, k=5, filter=expected["filter"])
        )
        assert ids == [i for i, _ in want_filtered]
        assert np.allclose(scores, [s for _, s in want_filtered], atol=1e-5)
    probe = ["doc0", "doc1", "doc2", "doc4", "doc150", "doc299", "missing"]
    got = [[d.id, d.page_content, d.metadata] for d in store.get_by_ids(probe)]
    assert got == expected["get_by_ids"]
