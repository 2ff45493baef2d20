# ruff: noqa: INP001  (examples are scripts, not a package)
"""A RAG chatbot over a langchain-vq store that cites its sources; offline by default.

On start it indexes ``--data`` (default: ``examples/data``, the Python standard library's
docstrings) into ``--store`` (default: ``./stores/demo``). The first run embeds every chunk (a
minute or less on a laptop CPU, plus a one-off export of the int8 model); later runs re-embed
only changed files. Then it answers:

    python examples/chatbot.py --question "How do I copy a directory tree?"   # one question
    python examples/chatbot.py                                               # interactive
    python examples/chatbot.py --llm ollama:llama3.1                         # a real LLM

Without ``--llm`` the answer is extractive: the retrieved sentences most relevant to the
question, quoted and cited. ``--llm provider:model`` needs ``pip install langchain`` plus the
provider's package (``langchain-openai``, ``langchain-ollama``, ...) and its API key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from langchain_vq import VQError, VQVectorStore
from langchain_vq.chat import (
    ExtractiveAnswerer,
    answer_question,
    build_rag_chain_with_sources,
    chat_loop,
    load_chat_model,
)
from langchain_vq.embeddings import BACKENDS, DEFAULT_BACKEND, SentenceTransformerEmbeddings
from langchain_vq.indexing import index_path
from langchain_vq.loaders import load_sources

HERE = Path(__file__).resolve().parent


def build_store(store: Path, data: Path, embeddings: SentenceTransformerEmbeddings) -> VQVectorStore:
    """Index ``data`` into ``store`` (upsert: unchanged chunks are skipped) and open it."""
    vq_store, result = index_path(store, embeddings, load_sources([data]))
    print(  # noqa: T201
        f"[index] {store}: {result.rows} chunks from {result.files} files "
        f"({result.added} added, {result.updated} updated, {result.deleted} deleted)",
        file=sys.stderr,
    )
    return vq_store


def main(argv: list[str] | None = None) -> int:
    """Index the demo data, then answer one question or chat."""
    parser = argparse.ArgumentParser(description="RAG chatbot over a langchain-vq store, citing sources.")
    parser.add_argument("--question", "-q", help="ask one question and exit (default: interactive)")
    parser.add_argument(
        "--store", type=Path, default=Path("stores/demo"), help="store folder (default %(default)s)"
    )
    parser.add_argument(
        "--data", type=Path, default=HERE / "data", help="files to index (default examples/data)"
    )
    parser.add_argument(
        "--llm", metavar="PROVIDER:MODEL", help="chat model, e.g. openai:gpt-4o-mini (default: extractive)"
    )
    parser.add_argument("-k", type=int, default=4, help="passages per question (default %(default)s)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help="embedding inference backend (default %(default)s; torch is float32)",
    )
    args = parser.parse_args(argv)
    try:
        llm = load_chat_model(args.llm) if args.llm else None
        embeddings = SentenceTransformerEmbeddings(backend=args.backend)
        store = build_store(args.store, args.data, embeddings)
        model = llm if llm is not None else ExtractiveAnswerer(embeddings)
        chain = build_rag_chain_with_sources(store.as_retriever(search_kwargs={"k": args.k}), model)
        if args.question:
            print(f"Q: {args.question}\n")  # noqa: T201
            answer_question(chain, args.question, extractive=llm is None)
        else:
            chat_loop(chain, extractive=llm is None)
    except (VQError, ImportError) as exc:
        print(f"chatbot: error: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
