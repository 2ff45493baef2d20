"""The RAG chain with a fake chat model that echoes its prompt, and the extractive answerer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.messages import AIMessage

from langchain_vq import VQVectorStore
from langchain_vq.chat import (
    EXTRACTIVE_HEADER,
    NO_PASSAGES,
    ExtractiveAnswerer,
    build_rag_chain,
    build_rag_chain_with_sources,
    format_docs,
    load_chat_model,
    parse_passages,
    split_sentences,
)
from langchain_vq.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

DOCS = [
    Document(
        id="heapq#0",
        page_content="The heapq module implements a priority queue. Use heappush to add an item to a heap.",
        metadata={"source": "/data/heapq.md", "chunk": 0},
    ),
    Document(
        id="json#0",
        page_content="json.dumps serializes an object to a JSON string. Pass indent=4 to pretty-print.",
        metadata={"source": "/data/json.md", "chunk": 0},
    ),
    Document(
        id="shutil#3",
        page_content="shutil.copytree recursively copies an entire directory tree rooted at src.",
        metadata={"source": "/data/shutil.md", "chunk": 3},
    ),
]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def store() -> VQVectorStore:
    vq = VQVectorStore(DeterministicFakeEmbedding(size=16))
    vq.add_documents(DOCS)
    return vq


def test_example_chain_puts_retrieved_passages_in_the_prompt(store: VQVectorStore) -> None:
    rag_chain = load_example("rag_chain")
    retriever = store.as_retriever(search_kwargs={"k": 2})
    question = "How do I pretty-print JSON?"
    retrieved = retriever.invoke(question)
    assert len(retrieved) == 2
    echoed = rag_chain.make_chain(retriever, ParrotFakeChatModel()).invoke(question)
    assert isinstance(echoed, str)
    for doc in retrieved:
        assert doc.page_content in echoed
    assert question in echoed
    left_out = [d for d in DOCS if d.id not in {r.id for r in retrieved}]
    assert all(d.page_content not in echoed for d in left_out)


def test_library_chain_prompt_numbers_and_cites_passages(store: VQVectorStore) -> None:
    retriever = store.as_retriever(search_kwargs={"k": 3})
    echoed = build_rag_chain(retriever, ParrotFakeChatModel()).invoke("copy a directory")
    for n, doc in enumerate(retriever.invoke("copy a directory"), 1):
        assert f"[{n}] (source: {doc.metadata['source']}#{doc.metadata['chunk']})" in echoed
        assert doc.page_content in echoed


def test_extractive_answer_picks_the_relevant_sentence_and_cites_it(store: VQVectorStore) -> None:
    chain = build_rag_chain(store.as_retriever(search_kwargs={"k": 3}))  # no LLM: extractive
    answer = chain.invoke("How do I pretty-print JSON with indent?")
    assert answer.startswith(EXTRACTIVE_HEADER)
    first = answer.splitlines()[1]
    assert "indent=4" in first
    n = first.rsplit("[", 1)[1].rstrip("]")
    assert f"[{n}] /data/json.md#0" in answer
    assert "Sources:" in answer


def test_extractive_answer_with_embeddings(store: VQVectorStore) -> None:
    answerer = ExtractiveAnswerer(DeterministicFakeEmbedding(size=16), max_sentences=1)
    chain = build_rag_chain(store.as_retriever(search_kwargs={"k": 3}), answerer)
    answer = chain.invoke("anything")
    bullets = [line for line in answer.splitlines() if line.startswith("- ")]
    assert len(bullets) == 1
    assert "Sources:" in answer


def test_chain_with_sources_returns_docs_and_answer(store: VQVectorStore) -> None:
    result = build_rag_chain_with_sources(store.as_retriever(search_kwargs={"k": 2})).invoke("heap queue")
    assert set(result) == {"docs", "question", "answer"}
    assert len(result["docs"]) == 2
    assert result["answer"].startswith(EXTRACTIVE_HEADER)


def test_answerer_takes_what_a_chat_model_takes() -> None:
    prompt = format_docs(DOCS[:1]) + "\n\nQuestion: what is a priority queue?"
    for value in (prompt, [("human", prompt)]):
        message = ExtractiveAnswerer().invoke(value)
        assert isinstance(message, AIMessage)
        assert "priority queue" in message.content


def test_no_passages() -> None:
    assert ExtractiveAnswerer().invoke("Question: anything?").content == NO_PASSAGES
    empty = VQVectorStore(DeterministicFakeEmbedding(size=4))
    assert build_rag_chain(empty.as_retriever()).invoke("hello") == NO_PASSAGES


def test_format_and_parse_round_trip() -> None:
    parsed = parse_passages(format_docs(DOCS) + "\n\nQuestion: q")
    assert parsed == [(f"{d.metadata['source']}#{d.metadata['chunk']}", d.page_content) for d in DOCS]


def test_sentences_skip_code_headings_and_urls() -> None:
    text = (
        "## function json.dumps(obj)\n\nSerialize obj to a JSON formatted str. It is fast.\n\n"
        ">>> json.dumps([1, 2])\n'[1, 2]'\n\nSee: https://example.org/a/very/long/url\n"
    )
    assert split_sentences(text) == ["Serialize obj to a JSON formatted str."]


def test_bad_llm_spec() -> None:
    with pytest.raises(ConfigurationError, match="provider:model"):
        load_chat_model("gpt-4o")


def test_llm_without_langchain_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain.chat_models", None)
    with pytest.raises(ImportError, match="pip install langchain langchain-openai"):
        load_chat_model("openai:gpt-4o-mini")


def test_max_sentences_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="max_sentences"):
        ExtractiveAnswerer(max_sentences=0)


def test_off_topic_query_passes_no_cosine_threshold_with_the_real_model(minilm) -> None:
    """With relevance = cos, a 0.5 threshold keeps the on-topic passage and drops off-topic ones.

    Under the former (1 + cos) / 2, every passage of this corpus reached 0.5 for any query.
    """
    store = VQVectorStore.from_documents(DOCS, minilm)
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.5, "k": 3}
    )
    assert retriever.invoke("What is a good recipe for banana bread?") == []
    assert [d.id for d in retriever.invoke("How do I copy a whole directory tree?")] == ["shutil#3"]
