"""Default recall and ingest cost at 1M rows: the calibrating default against a fixed multiplier.

Builds the same store twice from ``N`` synthetic vectors (``langchain_vq.synthetic``, seed 0) in
adds of ``--batch`` rows with ``bench_search.py``'s row metadata, not compacted: once with
``rescore_multiplier=16`` (the former default: no calibration, today's ingest) and once with the
defaults (calibrated for recall@10 0.99 in the commits of the adds). Reports each build's ingest
seconds, the calibrations committed (rows, multiplier, measured recall), and recall@10 of both
stores' default search against exact float search on ``--queries`` synthetic queries (seed 1).

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
from typing import TYPE_CHECKING, Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402
from benchmarks.bench_search import row_metadata  # noqa: E402
from langchain_vq.evaluation import exact_top_k, recall_at_k  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

if TYPE_CHECKING:
    import numpy as np


def build(path: Path, vectors: np.ndarray, batch: int, **settings: Any) -> dict[str, Any]:
    """Add ``vectors`` in batches to a new store at ``path``; ingest seconds and calibrations."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    store = VQVectorStore(DeterministicFakeEmbedding(size=vectors.shape[1]), path=path, **settings)
    adds = []
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
            "default (calibrated)": build(root / "default", vectors, args.batch),
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
