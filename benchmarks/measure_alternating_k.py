"""Queries that alternate ``k`` over a store with a small segment cost what queries of one ``k`` cost.

A store whose last add was small holds a segment that the engine reads exactly once a query asks
for at least as many candidates as it has live rows (``k * m``), and scans by code below that.
The joined fast-scan index of the other segments used to follow that choice, so a retriever's
``k=4`` and another caller's ``k=10`` in turn rebuilt a copy of every code on each query. Now
every segment with codes is in the joined index, those read exactly with nothing kept
(``search.engine._joined_candidates``). This script builds such a store (two adds of ``--rows /
2`` and one of ``--small`` rows, fixed ``m=16``) and times, one thread, single queries with
``k=10`` only, ``k=4`` only, and ``k`` alternating 4 and 10, each pass in turn, repeated: the
median wall ms of each.

Run: ``python benchmarks/measure_alternating_k.py [--rows 400000] [--small 100]``; writes
``benchmarks/results/alternating_k.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402

DIM = 384
MULTIPLIER = 16
PATTERNS = {"k=10": [10], "k=4": [4], "alternating 4, 10": [4, 10]}


def main(ns: argparse.Namespace) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore
    from langchain_vq.synthetic import synthetic_embeddings

    half = ns.rows // 2
    x = synthetic_embeddings(2 * half + ns.small, DIM, seed=0)
    queries = synthetic_embeddings(ns.queries, DIM, seed=1)
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), rescore_multiplier=MULTIPLIER)
    for lo, hi in ((0, half), (half, 2 * half), (2 * half, 2 * half + ns.small)):
        store.add_embeddings(["t"] * (hi - lo), x[lo:hi], ids=[str(i) for i in range(lo, hi)])
    segments = [v.live_count for v in store.collection.snapshot.views]
    times: dict[str, list[float]] = {name: [] for name in PATTERNS}
    for _ in range(ns.repeats):
        for name, ks in PATTERNS.items():
            for i, query in enumerate(queries):
                start = time.perf_counter()
                store.similarity_search_by_vector(query, k=ks[i % len(ks)])
                times[name].append((time.perf_counter() - start) * 1e3)
    record = run_record(2 * half + ns.small, DIM, ns.queries, 10, multiplier=MULTIPLIER, repeats=ns.repeats)
    record["segments"] = segments
    record["p50_ms"] = {name: round(statistics.median(t), 3) for name, t in times.items()}
    record["alternating_vs_k10"] = round(record["p50_ms"]["alternating 4, 10"] / record["p50_ms"]["k=10"], 2)
    record["load_end"] = os.getloadavg()
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"segments": segments, "p50_ms": record["p50_ms"]}))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "alternating_k.json")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
