"""Shared fixtures: the shared-data location, seeded data generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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


def clustered_vectors(n: int, dim: int, *, seed: int = 0, clusters: int = 16) -> np.ndarray:
    """Normalized vectors with the structure of sentence embeddings: mean, clusters, anisotropy."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 1, dim) * 0.5
    scales = np.exp(rng.normal(0, 0.5, dim))
    centers = rng.normal(0, 1, (clusters, dim)) * scales
    labels = rng.integers(0, clusters, n)
    x = mean + centers[labels] + rng.normal(0, 0.7, (n, dim)) * scales
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)
