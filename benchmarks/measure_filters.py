"""Filtered search on format 1 (metadata as JSON) against format 2 (typed columns), side by side.

The same ``--n`` x 384 synthetic vectors and metadata (``bucket`` = row % 10,000, ``half`` = even
row) are stored twice through the public API: by this checkout (format 2, default settings) and by
the last release that wrote format 1 (commit ``--baseline``, checked out into a temporary git
worktree and imported from there in its own processes). Each store is built by batched adds and
one ``compact()``, as ``bench_search.py`` does. Then, per store and per filter, a NEW process opens
the store and times:

* the first filtered query (format 1 parses the metadata JSON of the segment here; format 2 reads
  the typed columns as stored);
* the p50 / p95 of the following single filtered queries (steady state), and unfiltered ones.

Single queries, one thread, ``k = 10``; the two stores are measured alternately, filter by filter,
so that both see the same load on this shared machine. Output: ``<out>/filters.json``.

Run: ``python benchmarks/measure_filters.py [--n 1000000] [--queries 200]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
K = 10
DIM = 384
BATCH = 100_000
#: The parent of "Format 2 is written": the last commit whose stores are format 1.
BASELINE = "57d4722^"
FILTERS = {
    "0.01%": {"bucket": 7},
    "1%": {"bucket": {"$lt": 100}},
    "50%": {"half": True},
}
TARGET_FIRST_MS = 50.0
GIT = shutil.which("git") or "git"


def child_build(ns: argparse.Namespace) -> dict[str, Any]:
    """Build the store at ``--store`` from ``--corpus`` with this process's langchain_vq."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    corpus = np.load(ns.corpus, mmap_mode="r")
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=ns.store, quantization="binary")
    start = time.perf_counter()
    for lo in range(0, corpus.shape[0], BATCH):
        hi = min(lo + BATCH, corpus.shape[0])
        rows = range(lo, hi)
        store.add_embeddings(
            [f"doc {i}" for i in rows],
            np.ascontiguousarray(corpus[lo:hi]),
            [{"bucket": i % 10_000, "half": i % 2 == 0} for i in rows],
            [str(i) for i in rows],
        )
    store.compact()
    return {"build_s": time.perf_counter() - start, "segments": len(store.collection.snapshot.views)}


def child_query(ns: argparse.Namespace) -> dict[str, Any]:
    """Open the store in this new process; time its first filtered query, then steady ones."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    queries = np.load(ns.queries)
    spec = FILTERS[ns.filter] if ns.filter else None
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=ns.store)
    start = time.perf_counter()
    first = store.similarity_search_with_score_by_vector(queries[0], k=K, filter=spec)
    first_ms = (time.perf_counter() - start) * 1e3
    times, counts = [], []
    for q in queries[1:]:
        start = time.perf_counter()
        found = store.similarity_search_with_score_by_vector(q, k=K, filter=spec)
        times.append(time.perf_counter() - start)
        counts.append(len(found))
    ms = np.asarray(times) * 1e3
    return {
        "first_query_ms": first_ms,
        "first_query_results": len(first),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "queries": len(times),
        "min_results": min(counts),
    }


def run(code: Path, args: list[str]) -> dict[str, Any]:
    """This script's ``args`` in a new process importing langchain_vq from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"{args[0]} with {code} failed:\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(ns: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks._common import run_record
    from langchain_vq.synthetic import synthetic_embeddings

    out_dir = Path(ns.out).resolve()
    work = Path(tempfile.mkdtemp(prefix="measure_filters-", dir=ns.tmp))
    baseline_code = work / "baseline-code"
    result: dict[str, Any] = {**run_record(ns.n, DIM, ns.queries, K, threads=1, batch=BATCH), "stores": {}}
    try:
        subprocess.run(
            [GIT, "-C", str(REPO), "worktree", "add", "--detach", str(baseline_code), ns.baseline],
            check=True,
            capture_output=True,
        )
        result["baseline_commit"] = subprocess.run(
            [GIT, "-C", str(baseline_code), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        np.save(work / "corpus.npy", synthetic_embeddings(ns.n, DIM, seed=0))
        np.save(work / "queries.npy", synthetic_embeddings(ns.queries + 1, DIM, seed=1))
        sides = {"format 1 (baseline)": baseline_code, "format 2 (this checkout)": REPO}
        for name, code in sides.items():
            store = work / name.split()[1]
            build = run(code, ["_build", "--store", str(store), "--corpus", str(work / "corpus.npy")])
            result["stores"][name] = {"build": build, "queries": {}}
            print(f"{name}: {build}", flush=True)
        for label in ["none", *FILTERS]:
            for name, code in sides.items():
                store = work / name.split()[1]
                args = ["_query", "--store", str(store), "--queries", str(work / "queries.npy")]
                measured = run(code, [*args, "--filter", "" if label == "none" else label])
                result["stores"][name]["queries"][label] = measured
                print(f"{name} filter {label}: {measured}", flush=True)
    finally:
        subprocess.run(
            [GIT, "-C", str(REPO), "worktree", "remove", "--force", str(baseline_code)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)
    new = result["stores"]["format 2 (this checkout)"]["queries"]
    old = result["stores"]["format 1 (baseline)"]["queries"]
    first = max(new[f]["first_query_ms"] for f in FILTERS)
    result["verdicts"] = {
        "first_filtered_query_ms": first,
        "first_filtered_met": first <= TARGET_FIRST_MS,
        "steady_p50_ratio_new_over_old": {f: new[f]["p50_ms"] / old[f]["p50_ms"] for f in FILTERS},
        "first_query_ratio_new_over_old": {
            f: new[f]["first_query_ms"] / old[f]["first_query_ms"] for f in FILTERS
        },
    }
    result["load_end"] = os.getloadavg()
    (out_dir / "filters.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["verdicts"], indent=1))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--baseline", default=BASELINE, help="commit of the format-1 release")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tmp", default=None, help="folder for the stores (default: the system's)")
    build = sub.add_parser("_build")
    build.add_argument("--store", required=True)
    build.add_argument("--corpus", required=True)
    query = sub.add_parser("_query")
    query.add_argument("--store", required=True)
    query.add_argument("--queries", required=True)
    query.add_argument("--filter", default="")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    if args.command == "_build":
        print(json.dumps(child_build(args)))
    elif args.command == "_query":
        print(json.dumps(child_query(args)))
    else:
        main(args)
