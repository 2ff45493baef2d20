"""Retrieval-augmented answers: the LCEL chain, its prompt, and an offline extractive answerer.

The chain is ``retriever | format_docs | prompt | model | parser``. ``model`` is any LangChain
chat model (``load_chat_model("openai:gpt-4o-mini")``), or, with no LLM configured,
``ExtractiveAnswerer``: a Runnable in the same position that reads the prompt, picks the
sentences of the retrieved passages most relevant to the question, and cites them. It needs
no network, no server and no API key.

.. code-block:: python

    from langchain_vq.chat import build_rag_chain

    chain = build_rag_chain(store.as_retriever(search_kwargs={"k": 4}))  # extractive
    print(chain.invoke("How do I pretty-print JSON?"))
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableParallel, RunnablePassthrough

from langchain_vq.errors import ConfigurationError
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Sequence

    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableConfig

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages in the context. Cite the passages "
    "you use as [1], [2], ... If the passages do not contain the answer, say so."
)
#: The human message; ``ExtractiveAnswerer`` finds the question after ``QUESTION_MARKER``.
QUESTION_MARKER = "Question:"
HUMAN_PROMPT = "Context:\n{context}\n\n" + QUESTION_MARKER + " {question}"
RAG_PROMPT = ChatPromptTemplate.from_messages([("system", SYSTEM_PROMPT), ("human", HUMAN_PROMPT)])
EXTRACTIVE_HEADER = (
    "Extractive answer (no LLM configured): the sentences of the retrieved passages most "
    "relevant to the question."
)
NO_PASSAGES = "No passages were retrieved for this question, so there is nothing to answer from."
_PASSAGE_HEAD = re.compile(r"^\[(\d+)\] \(source: (.*)\)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'`])")
_WORD = re.compile(r"[a-z0-9_]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "you",
        "your",
        "my",
        "me",
        "we",
        "use",
        "used",
        "using",
    ]
)
_MIN_SENTENCE = 20
_MIN_WORDS = 4
_URL = re.compile(r"\w+://\S+")
_MAX_SENTENCE = 400


def source_label(doc: Document) -> str:
    """A short name of a chunk's origin: its path relative to the working folder, and chunk."""
    source = str(doc.metadata.get("source", "") or doc.id or "unknown")
    with contextlib.suppress(ValueError):
        source = Path(source).relative_to(Path.cwd()).as_posix()
    chunk = doc.metadata.get("chunk")
    return f"{source}#{chunk}" if chunk is not None else source


def format_docs(docs: Sequence[Document]) -> str:
    """Number the passages for the prompt: ``[n] (source: path#chunk)`` then the text."""
    return "\n\n".join(
        f"[{n}] (source: {source_label(d)})\n{d.page_content.strip()}" for n, d in enumerate(docs, 1)
    )


def build_rag_chain(retriever: BaseRetriever | Runnable, llm: Runnable | None = None) -> Runnable:
    """``question -> answer`` string: retriever | format_docs | prompt | model | parser.

    Args:
        retriever: Any retriever (``store.as_retriever(search_kwargs={"k": 4})``).
        llm: A chat model; ``None`` puts an ``ExtractiveAnswerer`` in its place.
    """
    model = llm if llm is not None else ExtractiveAnswerer()
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | RAG_PROMPT
        | model
        | StrOutputParser()
    )


def build_rag_chain_with_sources(
    retriever: BaseRetriever | Runnable, llm: Runnable | None = None
) -> Runnable:
    """``question -> {"question", "docs", "answer"}``: the answer and the passages it was given."""
    model = llm if llm is not None else ExtractiveAnswerer()
    answer = (
        RunnablePassthrough.assign(context=lambda x: format_docs(x["docs"]))
        | RAG_PROMPT
        | model
        | StrOutputParser()
    )
    return RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)


class ExtractiveAnswerer(Runnable[Any, AIMessage]):
    """An offline stand-in for a chat model: answers with sentences quoted from the passages.

    It takes what a chat model takes (the RAG prompt as a ``PromptValue``, messages or a
    string), finds the numbered passages and the question in it, scores every sentence of the
    passages against the question, and returns an ``AIMessage`` with the best ones, each cited
    as ``[n]``, followed by the sources it cited.

    Scoring uses ``embeddings`` (cosine similarity of sentence and question) when given, else
    term overlap weighted by rarity (IDF over the candidate sentences).
    """

    def __init__(self, embeddings: Embeddings | None = None, *, max_sentences: int = 3) -> None:
        """Create the answerer.

        Args:
            embeddings: Model used to compare sentences with the question; ``None`` uses
                term overlap.
            max_sentences: Sentences quoted in the answer.
        """
        check_int(max_sentences, "max_sentences", fix="It counts the sentences quoted in an answer.")
        self.embeddings = embeddings
        self.max_sentences = max_sentences

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:  # noqa: A002, ARG002
        """Answer the RAG prompt ``input`` extractively (``kwargs``, e.g. ``stop``, are ignored)."""
        return self._call_with_config(self._answer, input, config, run_type="llm")

    def _answer(self, prompt: Any) -> AIMessage:
        text = _prompt_text(prompt)
        question = text.rsplit(QUESTION_MARKER, 1)[-1].strip() if QUESTION_MARKER in text else text
        passages = parse_passages(text)
        return AIMessage(content=self.answer(question, passages))

    def answer(self, question: str, passages: Sequence[tuple[str, str]]) -> str:
        """The extractive answer to ``question`` from ``(source, text)`` passages."""
        candidates = [
            (n, sentence) for n, (_, body) in enumerate(passages, 1) for sentence in split_sentences(body)
        ]
        if not candidates:
            return NO_PASSAGES
        scores = self._scores(question, [s for _, s in candidates])
        # A small prior for the retriever's order breaks ties towards the better passages.
        scores = scores - 1e-3 * np.array([n for n, _ in candidates], dtype=np.float64)
        best = [int(i) for i in np.argsort(-scores, kind="stable")[: self.max_sentences]]
        lines = [EXTRACTIVE_HEADER]
        lines += [f"- {candidates[i][1]} [{candidates[i][0]}]" for i in best]
        cited = sorted({candidates[i][0] for i in best})
        lines += ["", "Sources:"] + [f"[{n}] {passages[n - 1][0]}" for n in cited]
        return "\n".join(lines)

    def _scores(self, question: str, sentences: list[str]) -> np.ndarray:
        if self.embeddings is not None:
            q = np.asarray(self.embeddings.embed_query(question), dtype=np.float64)
            s = np.asarray(self.embeddings.embed_documents(sentences), dtype=np.float64)  # [n, dim]
            norms = np.linalg.norm(s, axis=1) * (np.linalg.norm(q) or 1.0)
            return (s @ q) / np.where(norms == 0, 1.0, norms)
        return term_overlap_scores(question, sentences)


def term_overlap_scores(question: str, sentences: Sequence[str]) -> np.ndarray:
    """Sum of IDF weights of question terms in each sentence, damped by sentence length."""
    terms = [set(_WORD.findall(s.lower())) - _STOPWORDS for s in sentences]
    wanted = set(_WORD.findall(question.lower())) - _STOPWORDS
    df = Counter(t for ts in terms for t in ts if t in wanted)
    n = len(sentences)
    idf = {t: math.log((n + 1) / (c + 0.5)) for t, c in df.items()}
    return np.array(
        [sum(idf.get(t, 0.0) for t in ts & wanted) / (1.0 + math.log1p(len(ts))) for ts in terms],
        dtype=np.float64,
    )


def parse_passages(prompt_text: str) -> list[tuple[str, str]]:
    """The ``(source, text)`` passages that ``format_docs`` wrote into ``prompt_text``."""
    end = prompt_text.rfind(QUESTION_MARKER)
    body = prompt_text[:end] if end >= 0 else prompt_text
    heads = list(_PASSAGE_HEAD.finditer(body))
    passages = []
    for i, head in enumerate(heads):
        stop = heads[i + 1].start() if i + 1 < len(heads) else len(body)
        passages.append((head.group(2), body[head.end() : stop].strip()))
    return passages


def split_sentences(text: str) -> list[str]:
    """Prose sentences of a passage; headings and code examples are left out."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [ln for ln in paragraph.splitlines() if ln.strip()]
        prose = [ln.strip() for ln in lines if not ln.lstrip().startswith(("#", ">>>", "...", "```"))]
        if not prose or len(prose) < len(lines) / 2:
            continue  # mostly code or a heading
        for piece in _SENTENCE_END.split(" ".join(prose)):
            sentence = piece.strip()
            words = _URL.sub("", sentence).split()
            if (
                len(sentence) >= _MIN_SENTENCE
                and len(words) >= _MIN_WORDS
                and sum(c.isalpha() for c in sentence) > len(sentence) / 2
            ):
                sentences.append(
                    sentence if len(sentence) <= _MAX_SENTENCE else sentence[:_MAX_SENTENCE] + "..."
                )
    return sentences


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, PromptValue):
        return prompt.to_string()
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, BaseMessage):
        return prompt.text
    if isinstance(prompt, (list, tuple)):
        return "\n".join(_prompt_text(m) if not isinstance(m, tuple) else str(m[-1]) for m in prompt)
    return str(prompt)


def load_chat_model(spec: str) -> BaseChatModel:
    """A chat model from ``"provider:model"`` (e.g. ``"openai:gpt-4o-mini"``, ``"ollama:llama3.1"``).

    Uses ``langchain.chat_models.init_chat_model``, so it needs the ``langchain`` package and the
    provider's integration package (``langchain-openai``, ``langchain-ollama``, ...), plus the
    provider's API key in its usual environment variable.
    """
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        msg = (
            f"--llm {spec!r} is not 'provider:model'; expected e.g. 'openai:gpt-4o-mini', 'ollama:llama3.1'."
        )
        raise ConfigurationError(msg)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:
        msg = (
            f"--llm {spec} needs the 'langchain' package and the provider's package: "
            f"pip install langchain langchain-{provider}"
        )
        raise ImportError(msg) from exc
    try:
        return init_chat_model(spec)
    except ImportError as exc:
        msg = f"--llm {spec}: {exc} (install the provider's package, e.g. pip install langchain-{provider})"
        raise ImportError(msg) from exc
    except Exception as exc:  # provider errors (unknown provider, missing API key) vary by package
        msg = f"Could not create the chat model {spec!r}: {exc}"
        raise ConfigurationError(msg) from exc


def answer_question(chain: Runnable, question: str, *, extractive: bool, out: TextIO | None = None) -> str:
    """Run ``build_rag_chain_with_sources``'s chain on ``question`` and print answer and sources."""
    out = out or sys.stdout
    result = chain.invoke(question)
    answer = result["answer"]
    print(answer, file=out)
    if not extractive and result["docs"]:
        print("\nSources:", file=out)
        for n, doc in enumerate(result["docs"], 1):
            print(f"[{n}] {source_label(doc)}", file=out)
    return answer


def chat_loop(
    chain: Runnable, *, extractive: bool, stdin: TextIO | None = None, out: TextIO | None = None
) -> None:
    """Ask questions read from ``stdin`` until an empty line, ``exit``, ``quit`` or end of input."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    interactive = stdin.isatty()
    print("Ask a question about the indexed documents (empty line, 'exit' or Ctrl-D ends).", file=out)
    while True:
        if interactive:
            try:
                question = input("\n> ")
            except EOFError:
                break
        else:
            line = stdin.readline()
            if not line:
                break
            question = line
            print(f"\n> {question.strip()}", file=out)
        question = question.strip()
        if not question or question.lower() in {"exit", "quit"}:
            break
        answer_question(chain, question, extractive=extractive, out=out)
