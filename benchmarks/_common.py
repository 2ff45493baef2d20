"""Helpers shared by the benchmark scripts: machine description, timings, page cache, sizes."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

MB = 1 << 20


def hardware() -> dict[str, Any]:
    """CPU, memory, platform and the versions of the libraries measured."""
    import faiss
    import langchain_core
    import pyarrow as pa

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import lancedb

        lance_version = lancedb.__version__
    except ImportError:
        lance_version = None
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "faiss_simd": faiss.get_compile_options(),
        "pyarrow": pa.__version__,
        "langchain_core": langchain_core.__version__,
        "lancedb": lance_version,
    }


def run_record(n: int, dim: int, queries: int, k: int, **config: Any) -> dict[str, Any]:
    """The head of every benchmark's result: when, how it was run, the machine's load and the setup.

    ``config`` adds the benchmark's own settings after the shared ones (corpus ``n`` rows of
    ``dim`` dimensions from seed 0, ``queries`` from seed 1, top ``k``).
    """
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "load_start": os.getloadavg(),
        "config": {
            "n": n,
            "dim": dim,
            "queries": queries,
            "k": k,
            "corpus_seed": 0,
            "query_seed": 1,
            **config,
        },
        "hardware": hardware(),
    }


def anon_mb() -> float:
    """Anonymous (heap) resident memory in MB: RSS without the file-backed pages of mapped files.

    Mapped float vectors that a query touched count in RSS but are page cache the kernel can
    drop at any time; RssAnon is the memory the process really holds.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def percentiles(times_s: list[float]) -> dict[str, float]:
    """p50 / p95 / mean of per-query times in ms, and how many there were."""
    ms = np.asarray(times_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def files_under(path: Path) -> list[Path]:
    """``path`` itself if it is a file, else every file below it."""
    return [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]


def dir_bytes(path: Path) -> int:
    """Total size of the file or the files under ``path``."""
    return sum(f.stat().st_size for f in files_under(path))


def evict(path: Path) -> int:
    """Drop these files (only them) from the page cache; returns the bytes evicted.

    Uses ``posix_fadvise(DONTNEED)`` per file and never touches ``/proc/sys/vm/drop_caches``, so
    other processes on the shared machine keep their cache.
    """
    total = 0
    for file in files_under(path):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        total += file.stat().st_size
    return total
