"""SentenceTransformerEmbeddings: the real all-MiniLM-L6-v2 (offline), plus a fake client."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest

from langchain_vq import VQVectorStore
from langchain_vq import embeddings as emb_module
from langchain_vq.embeddings import DEFAULT_MODEL, SentenceTransformerEmbeddings
from langchain_vq.errors import ConfigurationError, InvalidInputError

pytest.importorskip("sentence_transformers", reason="needs the embeddings extra")


class FakeClient:
    """Records the keyword arguments of ``encode``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.calls.append({"texts": list(texts), **kwargs})
        return np.ones((len(texts), 3), dtype=np.float32)

    def get_embedding_dimension(self) -> int:
        return 3


def with_client(client: Any, **kwargs: Any) -> SentenceTransformerEmbeddings:
    model = SentenceTransformerEmbeddings(**kwargs)
    model._client = client
    return model


def test_default_model_is_minilm_from_the_package(minilm: SentenceTransformerEmbeddings) -> None:
    assert minilm.model_name == DEFAULT_MODEL
    assert minilm.dimension == 384
    if emb_module.packaged_model_path() is not None:
        assert "HF_HUB_OFFLINE" not in os.environ or os.environ["HF_HUB_OFFLINE"] == "1"


def test_vectors_are_normalized_and_consistent(minilm: SentenceTransformerEmbeddings) -> None:
    texts = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply today."]
    vectors = np.array(minilm.embed_documents(texts))
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = np.array(minilm.embed_query(texts[0]))
    np.testing.assert_allclose(query, vectors[0], atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # paraphrase beats an unrelated sentence
    assert minilm.encode(texts).dtype == np.float32


def test_empty_input(minilm: SentenceTransformerEmbeddings) -> None:
    assert minilm.embed_documents([]) == []
    assert minilm.encode([]).shape == (0, 384)


def test_bad_input(minilm: SentenceTransformerEmbeddings) -> None:
    with pytest.raises(InvalidInputError, match="single string"):
        minilm.embed_documents("one text")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        minilm.embed_documents(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        minilm.embed_query(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"batch_size": True}, {"num_threads": 0}, {"query_prompt": 3}]
)
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        SentenceTransformerEmbeddings(**kwargs)


def test_prompts_and_batching_reach_the_model() -> None:
    client = FakeClient()
    model = with_client(
        client, batch_size=7, query_prompt="query: ", document_prompt="passage: ", normalize=False
    )
    model.embed_documents(["a", "b"])
    model.embed_query("q")
    doc_call, query_call = client.calls
    assert doc_call["prompt"] == "passage: "
    assert query_call["prompt"] == "query: "
    assert doc_call["batch_size"] == 7
    assert doc_call["normalize_embeddings"] is False


def test_real_query_prompt_changes_the_query_vector(minilm: SentenceTransformerEmbeddings) -> None:
    prompted = with_client(minilm.client, query_prompt="query: ")
    plain = np.array(minilm.embed_query("sorting a list"))
    assert not np.allclose(np.array(prompted.embed_query("sorting a list")), plain)
    np.testing.assert_allclose(prompted.embed_documents(["sorting a list"])[0], plain, atol=1e-5)


def test_progress_bar_only_on_long_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb_module, "PROGRESS_THRESHOLD", 3)
    client = FakeClient()
    auto = with_client(client)
    auto.embed_documents(["a"] * 3)
    auto.embed_documents(["a"] * 4)
    assert [c["show_progress_bar"] for c in client.calls] == [False, True]
    with_client(client, show_progress=False).embed_documents(["a"] * 10)
    with_client(client, show_progress=True).embed_documents(["a"])
    assert [c["show_progress_bar"] for c in client.calls[2:]] == [False, True]


def test_missing_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sentence_transformers" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r'pip install "langchain-vq\[embeddings\]"'):
        SentenceTransformerEmbeddings()


def test_unknown_model_is_a_clear_error(tmp_path: Any) -> None:
    model = SentenceTransformerEmbeddings(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigurationError, match="Could not load embedding model"):
        model.embed_query("x")


def test_aliases_mean_the_default_model() -> None:
    assert SentenceTransformerEmbeddings("all-MiniLM-L6-v2").model_name == DEFAULT_MODEL


def test_store_records_the_model_name(minilm: SentenceTransformerEmbeddings, tmp_path: Any) -> None:
    store = VQVectorStore(minilm, tmp_path / "store")
    store.add_texts(["json.dumps serializes an object to a JSON string", "heapq implements a priority queue"])
    assert store.collection.snapshot.manifest.embedding_model == DEFAULT_MODEL
    (doc,) = store.similarity_search("priority queue", k=1)
    assert "heapq" in doc.page_content


async def test_async_embedding(minilm: SentenceTransformerEmbeddings) -> None:
    vector = await minilm.aembed_query("hello")
    assert len(vector) == 384
