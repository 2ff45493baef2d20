"""One store's query time under two source trees, side by side: does a change make queries faster?

A store is built by ``--adds`` equal adds of synthetic rows (seed 0) with the first tree, or
opened from ``--store``; each tree then runs in its own child process (its ``langchain_vq`` first
on ``sys.path``) and times ``similarity_search_by_vector(k=10)`` at ``--multiplier`` on the same
queries (seed 1; the first 100 untimed, so the pages they read are mapped), one thread, thread
CPU p50. The trees alternate ``--repeat`` times, so both see the same machine load; compare the
ratio, not the milliseconds. Both trees must read the store's format.

Run: ``python benchmarks/compare_query_trees.py --trees /path/to/before /path/to/after
--store /path/to/store --multiplier 128``; writes ``benchmarks/results/query_trees.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WARM = 100


def child(args: argparse.Namespace) -> dict[str, Any]:
    """In one tree's process: build the store (``--build``) or time its queries."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import faiss
    import numpy as np
    from langchain_core.embeddings import DeterministicFakeEmbedding

    import langchain_vq
    from langchain_vq import VQVectorStore
    from langchain_vq.synthetic import synthetic_embeddings

    faiss.omp_set_num_threads(1)
    embedding = DeterministicFakeEmbedding(size=384)
    if args.build:
        vectors = synthetic_embeddings(args.rows, 384, seed=0)
        store = VQVectorStore(embedding, path=args.store)
        step = args.rows // args.adds
        for lo in range(0, args.rows, step):
            hi = min(lo + step, args.rows)
            ids = [str(i) for i in range(lo, hi)]
            store.add_embeddings([f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], None, ids)
        return {"multiplier": store.rescore_multiplier, "segments": len(store.collection.snapshot.views)}
    queries = synthetic_embeddings(WARM + args.queries, 384, seed=1)
    store = VQVectorStore(embedding, path=args.store, rescore_multiplier=args.multiplier)
    for vector in queries[:WARM]:
        store.similarity_search_by_vector(vector.tolist(), k=10)
    times = []
    for vector in queries[WARM:]:
        start = time.thread_time()
        store.similarity_search_by_vector(vector.tolist(), k=10)
        times.append(time.thread_time() - start)
    return {"package": str(Path(langchain_vq.__file__).parent), "cpu_p50_ms": 1000 * float(np.median(times))}


def run_child(tree: str, args: argparse.Namespace, *, build: bool = False) -> dict[str, Any]:
    """One child process on ``tree``; its JSON answer."""
    command = [sys.executable, __file__, "--child", "--tree", tree, "--store", str(args.store)]
    command += ["--rows", str(args.rows), "--adds", str(args.adds), "--queries", str(args.queries)]
    command += ["--multiplier", str(args.multiplier)] + (["--build"] if build else [])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit(tree: str) -> str | None:
    """The git commit checked out in ``tree``, if it is a git work tree."""
    command = ["git", "-C", tree, "rev-parse", "HEAD"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, metavar=("BEFORE", "AFTER"), help="two source trees")
    parser.add_argument("--store", default="", help="an existing store (else one is built)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--adds", type=int, default=10)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--multiplier", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "query_trees.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if not args.trees:
        parser.error("--trees BEFORE AFTER is required")
    sys.path.insert(0, str(REPO))
    from benchmarks._common import run_record

    record = run_record(args.rows, 384, args.queries, 10, trees=args.trees, multiplier=args.multiplier)
    if not args.store:
        args.store = Path(tempfile.mkdtemp(prefix="query-trees-")) / "store"
        record["built"] = run_child(args.trees[0], args, build=True)
    record["config"]["store"] = str(args.store)
    record["commits"] = {tree: _commit(tree) for tree in args.trees}
    runs: dict[str, list[float]] = {tree: [] for tree in args.trees}
    for _ in range(args.repeat):
        for tree in args.trees:
            runs[tree].append(round(run_child(tree, args)["cpu_p50_ms"], 3))
    before, after = (sorted(runs[tree])[len(runs[tree]) // 2] for tree in args.trees)
    record["cpu_p50_ms_by_tree"] = runs
    record["after_over_before_median"] = after / before
    record["load_end"] = os.getloadavg()
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"cpu_p50_ms_by_tree": runs, "after_over_before_median": round(after / before, 3)}))


if __name__ == "__main__":
    main()
