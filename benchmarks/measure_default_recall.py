"""Default recall and ingest cost at 1M rows: the calibrating default against a fixed multiplier.

Builds the same store twice from ``N`` synthetic vectors (``langchain_vq.synthetic``, seed 0) in
adds of ``--batch`` rows with ``bench_search.py``'s row metadata, not compacted: once with
``rescore_multiplier=16`` (the former default: no calibration, today's ingest) and once with the
defaults (calibrated for recall@10 0.99 in the commits of the adds). Reports each build's ingest
seconds, the calibrations committed (rows, multiplier, measured recall), and recall@10 of both
stores' default search against exact float search on ``--queries`` synthetic queries (seed 1),
and for the calibrated store also after every add (untimed; "recall that holds at any size"
means between calibrations too).

One run, one thread (``OMP_NUM_THREADS=1``); the machine is shared, so the load average is
recorded with the times. Run: ``python benchmarks/measure_default_recall.py``; writes
``benchmarks/results/default_recall.json``.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks._common import run_record  # noqa: E402
from benchmarks.bench_search import row_metadata  # noqa: E402
from langchain_vq.evaluation import exact_top_k, recall_at_k  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402


class RunningTruth:
    """Exact top 10 of the queries over the rows added so far, updated batch by batch."""

    def __init__(self, queries: np.ndarray) -> None:
        self.queries = queries
        self.scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
        self.rows = np.full((len(queries), 10), -1, dtype=np.int64)

    def add(self, lo: int, batch: np.ndarray) -> list[list[int]]:
        """Merge the best 10 of ``batch`` (rows ``lo..``); the top 10 so far, best first."""
        scores = np.concatenate([self.scores, self.queries @ batch.T], axis=1)
        rows = np.concatenate(
            [self.rows, np.broadcast_to(np.arange(lo, lo + len(batch)), scores[:, 10:].shape)], axis=1
        )
        order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.rows = np.take_along_axis(rows, order, axis=1)
        return self.rows.tolist()


def build(
    path: Path, vectors: np.ndarray, batch: int, queries: np.ndarray | None = None, **settings: Any
) -> dict[str, Any]:
    """Add ``vectors`` in batches to a new store at ``path``; ingest seconds and calibrations.

    With ``queries``, recall@10 of the store's default search after every add (not timed).
    """
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    store = VQVectorStore(DeterministicFakeEmbedding(size=vectors.shape[1]), path=path, **settings)
    adds: list[float] = []
    after: list[dict[str, Any]] = []
    truth = RunningTruth(queries) if queries is not None else None
    start = time.perf_counter()
    for lo in range(0, vectors.shape[0], batch):
        hi = min(lo + batch, vectors.shape[0])
        t = time.perf_counter()
        store.add_embeddings(
            [f"doc {i}" for i in range(lo, hi)],
            vectors[lo:hi],
            [row_metadata(i) for i in range(lo, hi)],
            [str(i) for i in range(lo, hi)],
        )
        adds.append(round(time.perf_counter() - t, 2))
        if queries is not None:
            paused = time.perf_counter()
            after.append(_recall_now(store, queries, truth.add(lo, vectors[lo:hi])))
            start += time.perf_counter() - paused  # the recall check is not ingest
    seconds = time.perf_counter() - start
    directory = store.collection.directory
    assert directory is not None
    calibrations = []
    for version in range(1, store.collection.snapshot.version + 1):
        saved = directory.read_manifest(version).settings.get("calibration")
        if saved and saved["version"] == version:
            calibrations.append(
                {k: saved[k] for k in ("version", "rows", "multiplier", "recall_by_multiplier", "queries")}
            )
    return {
        "store": store,
        "ingest_s": seconds,
        "add_s": adds,
        "calibrations": calibrations,
        "multiplier": store.rescore_multiplier,
        "segments": len(store.collection.snapshot.views),
        "load_after": os.getloadavg(),
        **({"after_each_add": after} if queries is not None else {}),
    }


def _recall_now(store: Any, queries: np.ndarray, truth: list[list[int]]) -> dict[str, Any]:
    """Rows, multiplier in use, and recall@10 of the store's default search, now."""
    found = [[int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)]
    snapshot = store.collection.snapshot
    return {
        "rows": snapshot.live_rows,
        "multiplier": store.rescore_multiplier,
        "recall_at_10": recall_at_k(found, truth, 10),
    }


def main() -> None:
    """Run the comparison and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "default_recall.json")
    args = parser.parse_args()
    record = run_record(args.n, 384, args.queries, 10, batch=args.batch)
    vectors = synthetic_embeddings(args.n, 384, seed=0)
    queries = synthetic_embeddings(args.queries, 384, seed=1)
    root = Path(tempfile.mkdtemp(prefix="default-recall-"))
    try:
        runs = {
            "fixed m=16 (no calibration)": build(root / "fixed", vectors, args.batch, rescore_multiplier=16),
            "default (calibrated)": build(root / "default", vectors, args.batch, queries),
        }
        t = time.perf_counter()
        truth = exact_top_k(queries, vectors, 10).tolist()
        record["exact_truth_s"] = time.perf_counter() - t
        for name, run in runs.items():
            store = run.pop("store")
            found = [
                [int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)
            ]
            run["recall_at_10"] = recall_at_k(found, truth, 10)
            print(name, json.dumps(run), flush=True)
        record["runs"] = runs
        fixed, default = runs.values()
        record["ingest_ratio"] = default["ingest_s"] / fixed["ingest_s"]
        record["load_end"] = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("ingest_ratio", "exact_truth_s", "load_end")}))


if __name__ == "__main__":
    main()
