# ruff: noqa: INP001  (examples are scripts, not a package)
"""The shortest RAG chain in LCEL: retriever | format | prompt | model | parser.

    python examples/rag_chain.py "What does functools.lru_cache do?"
    python examples/rag_chain.py "..." --llm openai:gpt-4o-mini   # pip install langchain langchain-openai

Uses the store built by ``examples/chatbot.py`` or ``examples/build_index.py`` (``stores/demo``).
With no ``--llm``, an ``ExtractiveAnswerer`` takes the model's place and answers offline.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough

from langchain_vq import VQVectorStore
from langchain_vq.chat import ExtractiveAnswerer, format_docs, load_chat_model
from langchain_vq.embeddings import SentenceTransformerEmbeddings
from langchain_vq.storage import StoreDirectory

if TYPE_CHECKING:
    from langchain_core.retrievers import BaseRetriever

PROMPT = ChatPromptTemplate.from_template(
    "Answer the question from the numbered passages only; cite them as [n].\n\n"
    "Context:\n{context}\n\nQuestion: {question}"
)


def make_chain(retriever: BaseRetriever | Runnable, llm: Runnable) -> Runnable:
    """``question -> answer``: the retrieved passages go into the prompt, the model answers."""
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | llm
        | StrOutputParser()
    )


def main(argv: list[str] | None = None) -> None:
    """Answer one question from ``stores/demo``."""
    parser = argparse.ArgumentParser(description="The shortest RAG chain over a langchain-vq store.")
    parser.add_argument("question")
    parser.add_argument("--store", default="stores/demo")
    parser.add_argument("--llm", metavar="PROVIDER:MODEL", help="default: the offline extractive answerer")
    args = parser.parse_args(argv)
    if not StoreDirectory(args.store).exists():
        parser.error(f"no store at {args.store}; build it first: python examples/build_index.py {args.store}")

    embeddings = SentenceTransformerEmbeddings()
    store = VQVectorStore(embeddings, args.store)
    llm = load_chat_model(args.llm) if args.llm else ExtractiveAnswerer(embeddings)
    chain = make_chain(store.as_retriever(search_kwargs={"k": 4}), llm)
    print(chain.invoke(args.question))  # noqa: T201


if __name__ == "__main__":
    main()
