# ruff: noqa: INP001  (examples are scripts, not a package)
"""Build (or update) a langchain-vq store from text files with the Python API.

    python examples/build_index.py                      # examples/data -> stores/demo
    python examples/build_index.py my_store docs/ notes.md --quantization int8

The same as ``langchain-vq index STORE PATHS...``, written out: load and split the files, embed
the new or changed chunks, upsert them under stable ids (file path + chunk number), and delete
chunks that vanished from shortened files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from langchain_vq import VQVectorStore
from langchain_vq.embeddings import SentenceTransformerEmbeddings
from langchain_vq.indexing import index_sources
from langchain_vq.loaders import load_sources

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    """Index the given files into the given store and print what changed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", type=Path, default=Path("stores/demo"))
    parser.add_argument("paths", nargs="*", type=Path, default=[HERE / "data"])
    parser.add_argument("--quantization", default=None, help="binary (default), int8, pq or none")
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--chunk-overlap", type=int, default=100)
    args = parser.parse_args(argv)

    # 1. Read and split every file first: a bad file stops the run before anything is written.
    sources = load_sources(args.paths, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    # 2. Open (or create) the store with a local embedding model (all-MiniLM-L6-v2, offline).
    embeddings = SentenceTransformerEmbeddings()
    store = VQVectorStore(embeddings, args.store, quantization=args.quantization)
    # 3. Upsert new and changed chunks, skip unchanged ones, delete vanished ones.
    result = index_sources(store, sources)
    print(  # noqa: T201
        f"{args.store}: {result.rows} rows; {result.added} added, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.deleted} deleted"
    )
    # 4. Use it.
    for doc, score in store.similarity_search_with_score("How do I read a file line by line?", k=3):
        print(f"{score:.3f}  {doc.metadata['source']}#{doc.metadata['chunk']}")  # noqa: T201


if __name__ == "__main__":
    main()
