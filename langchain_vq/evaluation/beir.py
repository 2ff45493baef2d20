"""Load a BEIR retrieval set with precomputed embeddings, as laid out in the shared data."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path


def load_embedded_beir(folder: Path, split: str = "test") -> dict[str, Any]:
    """A BEIR set with precomputed embeddings, as laid out in the shared data (``scifact/``).

    Reads ``emb/corpus_emb.npy`` + ``corpus_ids.txt``, ``emb/queries_emb.npy`` +
    ``queries_ids.txt`` and ``qrels/<split>.tsv``; keeps only the queries that have judgements.
    Returns ``corpus``, ``corpus_ids``, ``queries``, ``query_ids`` and ``qrels``
    (query id -> doc id -> grade), the inputs of :func:`ndcg_at_k`.
    """
    emb = folder / "emb"
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    query_ids = (emb / "queries_ids.txt").read_text().split()
    wanted = [i for i, q in enumerate(query_ids) if q in qrels]
    return {
        "corpus": np.load(emb / "corpus_emb.npy"),
        "corpus_ids": (emb / "corpus_ids.txt").read_text().split(),
        "queries": np.load(emb / "queries_emb.npy")[wanted],
        "query_ids": [query_ids[i] for i in wanted],
        "qrels": qrels,
    }
