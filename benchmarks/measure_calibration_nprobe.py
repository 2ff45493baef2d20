"""The store's calibration run directly on a 1M-row store with lists, at several ``nprobe``.

Issue 12: the default binary store built by ten adds serves m=320 at 1M rows (``bench_search``),
grown from the m=256 its 800k calibration chose. Is that the lists (too few probed to reach the
target at a small multiplier) or the calibration? One store, built as users build it (ten adds
of 100k, default "auto" lists, a fixed multiplier so the adds do not calibrate), then for each
``--nprobes`` value (the first is the one training chose):

* ``calibrate_multiplier`` exactly as the store calls it (target 0.99, ``DEFAULT_MARGIN``,
  ``DEFAULT_CONFIDENCE_Z``, early stop, refinement), walking both ways from ``--start``;
* recall@10 on held-out queries (seed 1) against exact float search, at the chosen multiplier
  and at 64 and 128;
* p50 of single queries on one thread at each (nprobe, multiplier), **interleaved**: each
  query runs every configuration in turn, so load hits all of them alike.

Run: ``python benchmarks/measure_calibration_nprobe.py [--n 1000000]`` ->
``benchmarks/results/calibration_nprobe.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

faiss.omp_set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402

K = 10
BATCH = 100_000


def main(ns: argparse.Namespace) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore
    from langchain_vq.calibration import (
        DEFAULT_CONFIDENCE_Z,
        DEFAULT_MARGIN,
        DEFAULT_REFINE,
        calibrate_multiplier,
    )
    from langchain_vq.evaluation import exact_top_k, recall_at_k
    from langchain_vq.quantization._partitions import PartitionedQuantizer
    from langchain_vq.synthetic import synthetic_embeddings

    record = run_record(ns.n, 384, ns.queries, K, batch=BATCH, timed=ns.timed, start=ns.start)
    x = synthetic_embeddings(ns.n, 384, seed=0)
    queries = synthetic_embeddings(ns.queries, 384, seed=1)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_top_k(queries, x, K).tolist()
    root = Path(tempfile.mkdtemp(prefix="calibration-nprobe-", dir=ns.tmp))
    try:
        store = VQVectorStore(DeterministicFakeEmbedding(size=384), path=root / "s", rescore_multiplier=16)
        t = time.perf_counter()
        for lo in range(0, ns.n, BATCH):
            ids = [str(i) for i in range(lo, min(ns.n, lo + BATCH))]
            store.add_embeddings([f"doc {i}" for i in ids], x[lo : lo + BATCH], ids=ids)
        record["build_s"] = round(time.perf_counter() - t, 1)
        collection = store.collection
        quantizer = collection.snapshot.quantizer
        if not isinstance(quantizer, PartitionedQuantizer) or not quantizer.partitioned:
            msg = f"the store has no lists at {ns.n} rows; give --n of at least 200000 (the 'auto' threshold)"
            raise SystemExit(msg)
        record["partitions"], record["chosen_nprobe"] = quantizer.partitions, quantizer.nprobe
        nprobes = [quantizer.nprobe, *(p for p in ns.nprobes if p != quantizer.nprobe)]
        configs: list[dict[str, object]] = []
        for nprobe in nprobes:
            quantizer.nprobe = nprobe
            t = time.perf_counter()
            calibration = calibrate_multiplier(
                collection,
                target=0.99,
                margin=DEFAULT_MARGIN,
                z=DEFAULT_CONFIDENCE_Z,
                early_stop=True,
                start=ns.start,
                descend=True,
                refine=DEFAULT_REFINE,
            )
            seconds = round(time.perf_counter() - t, 1)
            for m in sorted({calibration.multiplier, 64, 128}):
                found = [
                    [int(r.id) for r in rows] for rows in collection.search(unit, K, rescore_multiplier=m)
                ]
                configs.append(
                    {
                        "nprobe": nprobe,
                        "rescore_multiplier": m,
                        "calibrated": m == calibration.multiplier,
                        "heldout_recall_at_10": round(recall_at_k(found, truth, K), 4),
                        **(
                            {
                                "calibration_s": seconds,
                                "sample_recall_by_multiplier": calibration.recall_by_multiplier,
                                "met": calibration.met,
                            }
                            if m == calibration.multiplier
                            else {}
                        ),
                    }
                )
                print(json.dumps(configs[-1]), flush=True)
        times: list[list[float]] = [[] for _ in configs]
        for i in range(ns.timed):
            for config, spent in zip(configs, times, strict=True):
                quantizer.nprobe = int(config["nprobe"])  # type: ignore[call-overload]
                t = time.perf_counter()
                collection.search(unit[i : i + 1], K, rescore_multiplier=int(config["rescore_multiplier"]))  # type: ignore[call-overload]
                spent.append(time.perf_counter() - t)
        for config, spent in zip(configs, times, strict=True):
            config["p50_ms"] = round(float(np.median(spent)) * 1e3, 3)
        record["results"] = configs
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record["load_end"] = os.getloadavg()
    ns.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(configs, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300, help="held-out queries (recall)")
    parser.add_argument("--timed", type=int, default=200, help="single queries timed per configuration")
    parser.add_argument("--nprobes", type=int, nargs="*", default=[350, 450, 600])
    parser.add_argument("--start", type=int, default=96, help="where the calibration walk starts")
    parser.add_argument("--tmp", default=None, help="folder for the temporary store")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "calibration_nprobe.json"
    )
    main(parser.parse_args())
