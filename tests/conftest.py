"""Shared fixtures: the shared-data location, seeded data generators."""

from __future__ import annotations

import os

# Two shared cores: oversubscribed OpenMP/BLAS threads spin against each other (PQ training took
# 30 s instead of 4 s). Tests run single-threaded; benchmarks set threads explicitly.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from langchain_vq.synthetic import synthetic_embeddings

faiss.omp_set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The shared evaluation data: ``$LANGCHAIN_VQ_DATA`` or ``../shared/data`` from the repo."""
    return Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(*relative: str) -> Path:
    """Path of a shared data file, or skip the test with the reason when it is absent."""
    path = shared_data_dir().joinpath(*relative)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (set LANGCHAIN_VQ_DATA to the shared/data folder)")
    return path


def clustered_vectors(n: int, dim: int, *, seed: int = 0) -> np.ndarray:
    """Unit vectors with the structure of sentence embeddings (see langchain_vq.synthetic)."""
    return synthetic_embeddings(n, dim, seed=seed)


def default_recall(store: Any, rows: np.ndarray, queries: np.ndarray) -> float:
    """Recall@10 of the store's default multiplier against exact cosine search over ``rows`` (ids 0..n-1)."""
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(q @ unit.T), axis=1)[:, :10]
    found = store.collection.search(q, 10, rescore_multiplier=store.rescore_multiplier)
    hits = [len({int(r.id) for r in got} & set(t.tolist())) for got, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / 10


#: The quantizers with a partitioned first stage (``partitions=``); they share it
#: (``quantization._partitions``), so its tests run for each.
PARTITIONED_KINDS = ("binary", "pq")


@pytest.fixture(scope="module", params=PARTITIONED_KINDS)
def partitioned_kind(request: pytest.FixtureRequest) -> str:
    """``"binary"`` or ``"pq"``: a test that takes it runs once per partitioned quantizer.

    Module scope, so a module's fitted quantizers and stores are built once per kind.
    """
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def embeddings_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ONNX export cache of this session: each backend is exported once, not in ~/.cache."""
    return tmp_path_factory.mktemp("embeddings-cache")


@pytest.fixture(scope="session")
def minilm(embeddings_cache: Path):
    """One all-MiniLM-L6-v2 ``SentenceTransformerEmbeddings`` (offline, default backend) for the session.

    The command-line tests run ``langchain_vq.cli.main`` in this process; registering the model
    in the CLI's cache makes them reuse it instead of loading it again.
    """
    pytest.importorskip("sentence_transformers", reason="needs the embeddings extra")
    from langchain_vq import cli
    from langchain_vq.embeddings import DEFAULT_MODEL, SentenceTransformerEmbeddings

    model = SentenceTransformerEmbeddings(cache_dir=embeddings_cache)
    model.embed_query("warm up")  # load now, so the first test does not pay for it
    cli._MODELS.setdefault(DEFAULT_MODEL, model)
    return cli._MODELS[DEFAULT_MODEL]
