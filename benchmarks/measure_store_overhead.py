"""The store's own overhead: store search against the same FAISS kernels plus numpy, called bare.

Three pipelines answer the same queries, interleaved query by query on one thread, at equal
settings: binary with the default fast scan (every row scored by FAISS's fast-scan kernel, top
``k * m``, float rescoring to ``k``), or with ``--two-stage`` (Hamming top ``k * m *
hamming_factor``, asymmetric byte-table re-rank to ``k * m``, float rescoring to ``k``):

- **bare**: the FAISS kernel (the fast-scan index over the packed codes, built before timing, or
  ``faiss.knn_hamming``) and numpy over the codes and vectors (float16 by default) of the
  compacted store, read in place from its memory-mapped segment with the store's quantizer state;
- **store, N adds**: ``VQVectorStore.similarity_search_with_score_by_vector`` on a store built
  by ``--adds`` adds and not compacted (the tiered merge policy decides its segments);
- **store, compacted**: the same rows after ``compact()``, one segment.

The stores keep the full scan (``partitions=0``), the kernel bare calls; the default's lists
(``partitions="auto"``, from 200k rows) are measured against IndexFlatIP by ``bench_search.py``.
Every mapped vector and code page is touched before timing, so all three read warm memory.
Targets (issue 12): the store at most 1.25x bare, the N-add store at most 1.15x the compacted one.

Run: ``python benchmarks/measure_store_overhead.py [--rows 200000] [--source real]``;
writes ``benchmarks/results/store_overhead.json`` (``--out`` writes elsewhere).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import percentiles, run_record  # noqa: E402
from langchain_vq.evaluation import exact_top_k, recall_at_k  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data")) / "sentences" / "emb"
K = 10
WARMUP = 20
TARGET_VS_BARE = 1.25
TARGET_VS_COMPACTED = 1.15


def load_vectors(source: str, rows: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Corpus and queries: synthetic (seeds 0 and 1) or the shared real sentence embeddings."""
    if source == "synthetic":
        return synthetic_embeddings(rows, 384, seed=0), synthetic_embeddings(queries, 384, seed=1)
    chunks = [np.load(path).astype(np.float32) for path in sorted(DATA.glob("chunk_0[0-3].npy"))]
    x = np.concatenate(chunks)
    if x.shape[0] < rows + queries:
        msg = f"the real set holds {x.shape[0]} rows; --rows {rows} + {queries} queries do not fit"
        raise SystemExit(msg)
    return x[:rows], x[-queries:]


def build(path: Path, x: np.ndarray, adds: int, multiplier: int, *, fast_scan: bool) -> tuple[Any, float]:
    """A binary store built by ``adds`` equal adds; and the seconds."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    store = VQVectorStore(
        DeterministicFakeEmbedding(size=x.shape[1]),
        path=path,
        quantization="binary",
        # Every code scanned, as bare does (equal settings): no "auto" lists past 200k rows.
        quantizer_options={"fast_scan": fast_scan, "partitions": 0},
        rescore_multiplier=multiplier,
    )
    start = time.perf_counter()
    for part in np.array_split(np.arange(x.shape[0]), adds):
        ids = [str(i) for i in part]
        store.add_embeddings([f"doc {i}" for i in part], x[part], [{"i": int(i)} for i in part], ids)
    return store, time.perf_counter() - start


def touch(store: Any) -> None:
    """Read every mapped vector and code page once, so no pipeline pays first-touch faults."""
    for view in store.collection.snapshot.views:
        float(np.asarray(view.segment.vectors).sum(dtype=np.float64))  # float16 would overflow
        int(np.asarray(view.segment.codes).sum(dtype=np.int64))


class Bare:
    """FAISS Hamming scan + numpy asymmetric re-rank + numpy float rescoring, on one segment."""

    def __init__(self, store: Any) -> None:
        snapshot = store.collection.snapshot
        (view,) = snapshot.views
        quantizer = snapshot.quantizer
        self.codes = view.segment.codes  # [n, code_size], the mapped file
        self.vectors = view.segment.vectors  # [n, dim], the mapped file
        self.thresholds = quantizer.thresholds_
        self.low, self.step = quantizer.low_, quantizer.high_ - quantizer.low_
        self.hamming_factor = quantizer.hamming_factor
        self.dim = self.thresholds.shape[0]
        self.bit_bytes = (self.dim + 7) // 8
        self.byte_bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)
        self.byte_offsets = np.arange(self.bit_bytes) * 256

    def search(self, query: np.ndarray, multiplier: int) -> np.ndarray:
        """Row ids of the top ``K`` for one normalized query ``[dim]``."""
        n_out = K * multiplier
        qcode = np.zeros((1, self.codes.shape[1]), np.uint8)
        qcode[0, : self.bit_bytes] = np.packbits(query > self.thresholds)
        n_hamming = min(n_out * self.hamming_factor, self.codes.shape[0])
        _, cand = faiss.knn_hamming(qcode, self.codes, n_hamming, "mc" if n_hamming >= 128 else "hc")
        cand = cand[0]
        weights = np.zeros(self.bit_bytes * 8, np.float32)
        weights[: self.dim] = query * self.step
        tables = (weights.reshape(self.bit_bytes, 8) @ self.byte_bits.T).ravel()  # [bit_bytes * 256]
        lookup = self.codes[cand, : self.bit_bytes].astype(np.intp) + self.byte_offsets
        approx = tables[lookup].sum(axis=1)  # + q . low, the same for every row
        best = cand[np.argpartition(-approx, n_out - 1)[:n_out]] if n_out < cand.size else cand
        exact = self.vectors[best] @ query
        top = np.argpartition(-exact, K - 1)[:K]
        return best[top[np.argsort(-exact[top])]]


class BareFastScan:
    """FAISS's fast-scan kernel over the packed codes + numpy float rescoring, on one segment."""

    def __init__(self, store: Any) -> None:
        from langchain_vq.code_blocks import StoredCodes
        from langchain_vq.quantization._fast_scan import NibbleFastScan

        snapshot = store.collection.snapshot
        (view,) = snapshot.views
        quantizer = snapshot.quantizer
        self.vectors = view.segment.vectors  # [n, dim], the mapped file (float16 by default)
        codes = StoredCodes(view.segment.codes)  # row-major, packed by the kernel's builder
        self.index = NibbleFastScan(codes, quantizer.low_, quantizer.high_, "ip")

    def search(self, query: np.ndarray, multiplier: int) -> np.ndarray:
        """Row ids of the top ``K`` for one normalized query ``[dim]``."""
        _, cand = self.index.search(query[None, :], K * multiplier)
        best = cand[0]
        exact = self.vectors[best].astype(np.float32) @ query
        top = np.argpartition(-exact, K - 1)[:K]
        return best[top[np.argsort(-exact[top])]]


def store_search(store: Any, query: np.ndarray, multiplier: int) -> list[int]:
    found = store.similarity_search_with_score_by_vector(query, k=K, rescore_multiplier=multiplier)
    return [int(doc.id) for doc, _ in found]


def main(ns: argparse.Namespace) -> None:
    x, queries = load_vectors(ns.source, ns.rows, ns.queries)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # in place: the store normalizes (cosine) anyway
    queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), np.float32)
    truth = exact_top_k(queries, x, K)
    work = Path(tempfile.mkdtemp(prefix="store-overhead-", dir=ns.workdir))
    try:
        result = run(ns, x, queries, truth, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    default = RESULTS / ("store_overhead_two_stage.json" if ns.two_stage else "store_overhead.json")
    out = Path(ns.out) if ns.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("segments", "p50_ms", "cpu_p50_ms", "ratios", "verdicts")}, indent=2
        )
    )


def run(ns: argparse.Namespace, x: np.ndarray, queries: np.ndarray, truth: Any, work: Path) -> dict[str, Any]:
    result = run_record(
        ns.rows,
        x.shape[1],
        ns.queries,
        K,
        source=ns.source,
        adds=ns.adds,
        rescore_multiplier=ns.multiplier,
        scan="two-stage" if ns.two_stage else "fast scan",
    )
    added, add_s = build(work / "added", x, ns.adds, ns.multiplier, fast_scan=not ns.two_stage)
    shutil.copytree(work / "added", work / "compacted")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    compacted = VQVectorStore(DeterministicFakeEmbedding(size=x.shape[1]), path=work / "compacted")
    start = time.perf_counter()
    compacted.compact()
    compact_s = time.perf_counter() - start
    bare = Bare(compacted) if ns.two_stage else BareFastScan(compacted)
    for store in (added, compacted):
        touch(store)
    runs = {
        "bare": lambda q: bare.search(q, ns.multiplier).tolist(),
        "store_added": lambda q: store_search(added, q, ns.multiplier),
        "store_compacted": lambda q: store_search(compacted, q, ns.multiplier),
    }
    faiss.omp_set_num_threads(1)
    for i in range(WARMUP):
        for fn in runs.values():
            fn(queries[i % len(queries)])
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    found: dict[str, list[list[int]]] = {name: [] for name in runs}
    names = list(runs)
    for i, query in enumerate(queries):  # interleaved, rotating who goes first
        for name in names[i % 3 :] + names[: i % 3]:
            start, start_cpu = time.perf_counter(), time.thread_time()
            ids = runs[name](query)
            cpu[name].append(time.thread_time() - start_cpu)
            times[name].append(time.perf_counter() - start)
            found[name].append(ids)
    stats = {name: percentiles(t) for name, t in times.items()}
    cpu_stats = {name: percentiles(t) for name, t in cpu.items()}
    p50 = {name: s["p50_ms"] for name, s in stats.items()}
    cpu_p50 = {name: s["p50_ms"] for name, s in cpu_stats.items()}
    ratios = {
        "store_added_vs_bare": p50["store_added"] / p50["bare"],
        "store_compacted_vs_bare": p50["store_compacted"] / p50["bare"],
        "store_added_vs_compacted": p50["store_added"] / p50["store_compacted"],
        # CPU time of the searching thread: the same work without the shared machine's contention.
        "cpu_store_added_vs_bare": cpu_p50["store_added"] / cpu_p50["bare"],
        "cpu_store_compacted_vs_bare": cpu_p50["store_compacted"] / cpu_p50["bare"],
        "cpu_store_added_vs_compacted": cpu_p50["store_added"] / cpu_p50["store_compacted"],
    }
    result.update(
        {
            "segments": {
                "store_added": [v.segment.rows for v in added.collection.snapshot.views],
                "store_compacted": [v.segment.rows for v in compacted.collection.snapshot.views],
            },
            "ingest_s": {"adds_with_merges": add_s, "compact": compact_s},
            "timings": stats,
            "cpu_timings": cpu_stats,
            "p50_ms": p50,
            "cpu_p50_ms": cpu_p50,
            "recall_at_10": {name: recall_at_k(ids, truth.tolist(), K) for name, ids in found.items()},
            "ratios": ratios,
            "verdicts": {
                "store_at_most_1_25x_bare": max(
                    ratios["store_added_vs_bare"], ratios["store_compacted_vs_bare"]
                )
                <= TARGET_VS_BARE,
                "added_at_most_1_15x_compacted": ratios["store_added_vs_compacted"] <= TARGET_VS_COMPACTED,
            },
            "load_end": os.getloadavg(),
        }
    )
    return result


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="corpus rows (1M: a few minutes)")
    parser.add_argument("--adds", type=int, default=10, help="adds that build the uncompacted store")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--multiplier", type=int, default=16, help="rescore_multiplier for all three")
    parser.add_argument("--source", choices=["synthetic", "real"], default="synthetic")
    parser.add_argument("--workdir", default=None, help="where the stores are built (removed after)")
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/...json)")
    parser.add_argument(
        "--two-stage",
        action="store_true",
        help="fast_scan=False: Hamming + re-rank (store_overhead_two_stage.json)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
