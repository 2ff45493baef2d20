"""Measure recall@10 after float rescoring, and search time, for each quantizer configuration.

Data: real all-MiniLM-L6-v2 embeddings (normalized float32, 384 dimensions) in
``$LANGCHAIN_VQ_DATA/sentences/emb/chunk_00.npy`` (default ``../shared/data`` relative to the
repo root). Rows ``0..48999`` are the corpus, rows ``49000..49999`` the queries; the reference is
the exact float top-10 by inner product.

For every quantizer and rescore multiplier ``m``, the quantizer's ``search`` returns ``10 * m``
candidates, their float vectors are scored exactly, and the top 10 are compared with the reference
(recall@10). Times are per single query (one query per call) on one thread, as the store issues
them. Results are written to ``benchmarks/results/quantizer_defaults.json``.

Run: ``python benchmarks/measure_quantizer_defaults.py``
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy/faiss load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from langchain_vq.evaluation import exact_top_k  # noqa: E402
from langchain_vq.quantization import (  # noqa: E402
    BinaryQuantizer,
    ProductQuantizer,
    Quantizer,
    ScalarQuantizer,
)
from langchain_vq.topk import top_k  # noqa: E402

K = 10
MULTIPLIERS = (1, 2, 4, 8, 16, 32, 64)
N_CORPUS = 49_000
N_QUERIES = 1_000
N_TIMED = 200


def load() -> tuple[np.ndarray, np.ndarray]:
    """Corpus ``[49000, 384]`` and queries ``[1000, 384]``."""
    root = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))
    emb = np.load(root / "sentences" / "emb" / "chunk_00.npy")
    return (
        np.ascontiguousarray(emb[:N_CORPUS], dtype=np.float32),
        np.ascontiguousarray(emb[N_CORPUS : N_CORPUS + N_QUERIES], dtype=np.float32),
    )


def recall_after_rescore(
    corpus: np.ndarray, queries: np.ndarray, cand: np.ndarray, truth: np.ndarray
) -> float:
    """Recall@10 of the float-rescored top 10 among ``cand`` ([nq, c]) against ``truth``."""
    exact = np.einsum("qcd,qd->qc", corpus[cand], queries)  # [nq, c]
    order = np.argsort(-exact, axis=1)[:, :K]
    top = np.take_along_axis(cand, order, axis=1)  # [nq, 10]
    hits = sum(len(set(a) & set(b)) for a, b in zip(top.tolist(), truth.tolist(), strict=True))
    return hits / truth.size


def time_search(qz: Quantizer, queries: np.ndarray, codes: np.ndarray, k: int) -> float:
    """Median milliseconds of ``search`` for one query, over ``N_TIMED`` queries."""
    qz.search(queries[:1], codes, k)  # warm up
    times = []
    for i in range(N_TIMED):
        t0 = time.perf_counter()
        qz.search(queries[i : i + 1], codes, k)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def measure(
    label: str, qz: Quantizer, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    """Fit, encode, then recall and time per multiplier."""
    t0 = time.perf_counter()
    qz.fit(corpus)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    codes = qz.encode(corpus)
    encode_s = time.perf_counter() - t0
    row: dict[str, Any] = {
        "label": label,
        "config": qz.get_config(),
        "code_size": qz.code_size,
        "fit_s": round(fit_s, 3),
        "encode_s": round(encode_s, 3),
        "recall_at_10": {},
        "ms_per_query": {},
    }
    for m in MULTIPLIERS:
        batch = 100  # bounded memory for the float gathers
        cands = [qz.search(queries[s : s + batch], codes, K * m)[1] for s in range(0, len(queries), batch)]
        row["recall_at_10"][m] = round(recall_after_rescore(corpus, queries, np.vstack(cands), truth), 4)
        row["ms_per_query"][m] = round(time_search(qz, queries, codes, K * m), 3)
    # Codes alone (no rescoring): recall of the quantizer's own top 10.
    own = np.vstack([qz.search(queries[s : s + 100], codes, K)[1] for s in range(0, len(queries), 100)])
    hits = sum(len(set(a) & set(b)) for a, b in zip(own.tolist(), truth.tolist(), strict=True))
    row["recall_at_10_no_rescore"] = round(hits / truth.size, 4)
    print(
        f"{label:28s} bytes={qz.code_size:4d} "
        + " ".join(f"m{m}={row['recall_at_10'][m]:.3f}" for m in MULTIPLIERS)
        + f" | no-rescore={row['recall_at_10_no_rescore']:.3f}"
        + " | ms "
        + " ".join(f"{row['ms_per_query'][m]:.2f}" for m in MULTIPLIERS),
        flush=True,
    )
    return row


def main() -> None:
    """Run every configuration and write the JSON report."""
    faiss.omp_set_num_threads(1)
    corpus, queries = load()
    dim = corpus.shape[1]
    truth = exact_top_k(queries, corpus, K)
    t0 = time.perf_counter()
    for i in range(N_TIMED):
        q = queries[i : i + 1] @ corpus.T
        top_k(q, K)
    float_ms = (time.perf_counter() - t0) / N_TIMED * 1e3
    print(f"exact float search (numpy, 1 thread): {float_ms:.2f} ms/query", flush=True)

    configs: list[tuple[str, Quantizer]] = [
        ("binary hamming-only (hf=1)", BinaryQuantizer(dim, hamming_factor=1)),
        ("binary hf=2", BinaryQuantizer(dim, hamming_factor=2)),
        ("binary hf=4", BinaryQuantizer(dim, hamming_factor=4)),
        ("binary hf=8", BinaryQuantizer(dim, hamming_factor=8)),
        ("binary hf=16", BinaryQuantizer(dim, hamming_factor=16)),
        ("int8", ScalarQuantizer(dim)),
        ("pq m=48 (dsub 8)", ProductQuantizer(dim, m=48)),
        ("pq m=96 (dsub 4)", ProductQuantizer(dim, m=96)),
        ("pq m=192 (dsub 2)", ProductQuantizer(dim, m=192)),
    ]
    rows = [measure(label, qz, corpus, queries, truth) for label, qz in configs]
    report = {
        "data": "all-MiniLM-L6-v2, sentences chunk_00: corpus rows 0..48999, queries 49000..49999",
        "k": K,
        "threads": 1,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
        },
        "exact_float_ms_per_query": round(float_ms, 3),
        "results": rows,
    }
    out = REPO / "benchmarks" / "results" / "quantizer_defaults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
