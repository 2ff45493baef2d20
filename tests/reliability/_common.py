"""Helpers shared by the reliability tests and ``tests/reliability/report.py``."""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING

import numpy as np
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_vq.collection import Collection

#: Long versions run when LANGCHAIN_VQ_LONG=1 (or with ``-m long``).
LONG = os.environ.get("LANGCHAIN_VQ_LONG") == "1"
DIM = 16


def open_store(path: Path | str, **kwargs: object) -> VQVectorStore:
    """A binary-quantized store of 16-dimensional vectors at ``path``."""
    kwargs.setdefault("quantization", "binary")
    return VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, **kwargs)  # type: ignore[arg-type]


def vectors_for(ids: list[str], salt: str = "") -> np.ndarray:
    """Deterministic unit vectors, one per id (the same id and salt give the same vector)."""
    out = np.empty((len(ids), DIM), dtype=np.float32)
    for i, id_ in enumerate(ids):
        seed = int.from_bytes(hashlib.blake2b(f"{id_}/{salt}".encode(), digest_size=8).digest(), "little")
        out[i] = np.random.default_rng(seed).standard_normal(DIM)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def live_rows(collection: Collection) -> dict[str, str]:
    """``{id: text}`` of every live row of the collection's current version."""
    rows: dict[str, str] = {}
    for view in collection.snapshot.views:
        table = view.segment.table.select(["id", "text"])
        if view.live_mask is not None:
            table = table.filter(view.live_mask)
        rows.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    return rows


def digest(rows: dict[str, str]) -> str:
    """A short fingerprint of ``{id: text}``."""
    return hashlib.sha256(json.dumps(sorted(rows.items())).encode()).hexdigest()[:16]
