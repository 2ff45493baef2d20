"""Where the partitioned first stage beats the full fast scan, at the multiplier each calibrates.

Issue 12: the store partitions its rows by default once it holds ``AUTO_PARTITION_ROWS`` live
rows (``langchain_vq.quantization._partitions``). This script measures where that pays, side by
side in one run on the same data: for each size (``--sizes``) and data set (``--data``), one
store with the full fast scan (``partitions=0``) and one per list count (``--partitions``),
each built by one add, then

* its rescore multiplier calibrated as the store does it (``calibrate_multiplier``: recall@10
  0.99 plus ``DEFAULT_MARGIN`` on sampled stored rows, the walk from the default multiplier);
* recall@10 at that multiplier on held-out queries, against exact float search;
* p50 of single queries on one thread at that multiplier, **interleaved** with ``IndexFlatIP``
  and the other stores (each query runs every configuration in turn, so load hits all alike);
* the add's wall time (k-means, ``choose_nprobe`` and assigning every row included).

``--crossing N``: the cost of the add that crosses the threshold. Two stores of the first
``N - N/10`` rows (nine adds), one with the default ``partitions="auto"`` and one with
``partitions=0``, then the same last add of ``N/10`` rows to both (the "auto" one crosses at
``AUTO_PARTITION_ROWS``): its wall time for each, with the crossing's parts (reading the training
sample back, k-means and ``choose_nprobe`` in ``with_partitions``, assigning the stored rows
their lists, and the rest: encoding the new rows, writing the new and rewritten segments and
the commit). No calibration (``Collection.add``, no settings hook).

``--data real`` holds the shared sentence embeddings (chunk 00 float32, 01-03 float16):
``--queries`` random rows are the held-out queries, the next ``--sizes`` rows the corpus.

Run: ``python benchmarks/measure_auto_partitions.py [--data synthetic real] [--sizes 100000
200000] [--partitions 512 1024] [--quantization pq] [--crossing 200000]`` ->
``benchmarks/results/auto_partitions.json`` (``--out`` elsewhere). The committed file gathers
four runs under ``runs`` (each with its command, date and load): binary on real and on
synthetic rows at 100k / 199-200k, PQ at 199k, and the crossing add at 200k.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

faiss.omp_set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402
from benchmarks.measure_ivf import build, ids_of, load, recall  # noqa: E402
from langchain_vq import collection as collection_module  # noqa: E402
from langchain_vq.calibration import DEFAULT_MARGIN, DEFAULT_REFINE, calibrate_multiplier  # noqa: E402
from langchain_vq.collection import Collection, CollectionConfig  # noqa: E402
from langchain_vq.quantization import _partitions  # noqa: E402
from langchain_vq.quantization._partitions import PartitionedQuantizer  # noqa: E402

K = 10
TARGET = 0.99
#: Where the store's calibration walk starts (``vectorstore.DEFAULT_RESCORE_MULTIPLIER``).
START = 16
OUT = REPO / "benchmarks" / "results" / "auto_partitions.json"


def measure(data: str, n: int, ns: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Every configuration at one size of one data set, timed side by side."""
    corpus, queries = load(data, n, ns.queries)
    flat = faiss.IndexFlatIP(corpus.shape[1])
    flat.add(corpus)
    truth = flat.search(queries, K)[1]
    configs: list[dict[str, Any]] = []
    stores = []
    for partitions in [0, *ns.partitions]:
        store, add_s = build(
            tmp / f"{data}_{n}_{partitions}", corpus, 1, ns.quantization, {"partitions": partitions}
        )
        quantizer = store.snapshot.quantizer
        start = time.perf_counter()
        calibration = calibrate_multiplier(
            store, target=TARGET, margin=DEFAULT_MARGIN, early_stop=True, start=START, refine=DEFAULT_REFINE
        )
        calibrate_s = time.perf_counter() - start
        m = calibration.multiplier
        start = time.perf_counter()
        store.search(queries[:1], K, rescore_multiplier=m)  # builds the segment's scan index
        first_s = time.perf_counter() - start
        entry = {
            "partitions": partitions,
            "nprobe": getattr(quantizer, "nprobe", None) if partitions else None,
            "add_s": round(add_s, 2),
            "calibrate_s": round(calibrate_s, 2),
            "first_query_s": round(first_s, 3),
            "multiplier": m,
            "calibrated_recall": round(calibration.recall_by_multiplier[m], 4),
            "heldout_recall_at_10": round(recall(ids_of(store, queries, m), truth), 4),
        }
        print(data, n, json.dumps(entry), flush=True)
        configs.append(entry)
        stores.append((store, m))
    times: list[list[float]] = [[] for _ in range(len(stores) + 1)]
    for qi in range(ns.timed):
        q = queries[qi % ns.queries : qi % ns.queries + 1]
        for ci in np.roll(np.arange(len(stores) + 1), qi).tolist():  # rotating order
            start = time.perf_counter()
            if ci == 0:
                flat.search(q, K)
            else:
                store, m = stores[ci - 1]
                store.search(q, K, rescore_multiplier=m)
            times[ci].append(time.perf_counter() - start)
    flat_ms = float(np.median(times[0]) * 1e3)
    full_ms = float(np.median(times[1]) * 1e3)
    for entry, spent in zip(configs, times[1:], strict=True):
        entry["p50_ms"] = round(float(np.median(spent) * 1e3), 3)
        entry["speedup_vs_flat"] = round(flat_ms / entry["p50_ms"], 2)
        entry["vs_full_scan"] = round(entry["p50_ms"] / full_ms, 3)
    return {
        "data": data,
        "n": n,
        "flat_p50_ms": round(flat_ms, 3),
        "load": os.getloadavg(),
        "configs": configs,
    }


def crossing(data: str, n: int, quantization: str, tmp: Path) -> dict[str, Any]:
    """Seconds of the add that crosses ``AUTO_PARTITION_ROWS`` at ``n`` rows, against the same add unpartitioned."""
    corpus, _ = load(data, n, 0)
    parts = np.array_split(np.arange(n), 10)
    spent: dict[str, float] = {}

    def timed(name: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return run

    out: dict[str, Any] = {"data": data, "n": n, "threshold": _partitions.AUTO_PARTITION_ROWS}
    for label, options in (("full", {"partitions": 0}), ("auto", None)):
        store = Collection(
            CollectionConfig(quantization=quantization, quantizer_options=options), tmp / label
        )
        for part in parts[:-1]:
            ids = [f"r{i}" for i in part.tolist()]
            store.add(ids, [""] * len(ids), [None] * len(ids), store.check_vectors(corpus[part]))
        ids = [f"r{i}" for i in parts[-1].tolist()]
        vectors = store.check_vectors(corpus[parts[-1]])
        spent.clear()
        originals = {
            "sample_s": collection_module._sample_vectors,  # noqa: SLF001
            "assign_lists_s": collection_module._with_assigned_lists,  # noqa: SLF001
        }
        with_partitions = PartitionedQuantizer.with_partitions
        for name, function in originals.items():
            setattr(collection_module, function.__name__, timed(name, function))
        PartitionedQuantizer.with_partitions = timed("kmeans_and_nprobe_s", with_partitions)  # type: ignore[method-assign]
        start = time.perf_counter()
        try:
            store.add(ids, [""] * len(ids), [None] * len(ids), vectors)
        finally:
            for function in originals.values():
                setattr(collection_module, function.__name__, function)
            PartitionedQuantizer.with_partitions = with_partitions  # type: ignore[method-assign]
        quantizer = store.snapshot.quantizer
        out[label] = {
            "last_add_s": round(time.perf_counter() - start, 2),
            "partitions": getattr(quantizer, "partitions", None),
            "nprobe": getattr(quantizer, "nprobe", None),
            "segments": len(store.snapshot.views),
            **{name: round(s, 2) for name, s in spent.items()},
        }
        # The rest: encoding the new rows, writing every new or rewritten segment, the commit.
        out[label]["rest_s"] = round(out[label]["last_add_s"] - sum(spent.values()), 2)
        print(data, n, label, json.dumps(out[label]), flush=True)
    out["extra_s"] = round(out["auto"]["last_add_s"] - out["full"]["last_add_s"], 2)
    out["load"] = os.getloadavg()
    return out


def main(ns: argparse.Namespace) -> None:
    record = run_record(
        max(ns.sizes or [ns.crossing or 0]), 384, ns.queries, K, quantization=ns.quantization, timed=ns.timed
    )
    runs = []
    crossings = []
    with tempfile.TemporaryDirectory(prefix="measure_auto_") as tmp:
        for data in ns.data:
            for n in ns.sizes:
                runs.append(measure(data, n, ns, Path(tmp)))
                for entry in runs[-1]["configs"]:
                    print(data, n, json.dumps(entry), flush=True)  # with the timings
            if ns.crossing:
                crossings.append(crossing(data, ns.crossing, ns.quantization, Path(tmp) / f"crossing_{data}"))
    out = {**record, "load_end": os.getloadavg(), "runs": runs, "crossing": crossings}
    path = Path(ns.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", nargs="+", choices=("synthetic", "real"), default=["synthetic", "real"])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 200_000])
    parser.add_argument("--crossing", type=int, default=0, help="rows at the crossing add's end (0: skip)")
    parser.add_argument("--partitions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--quantization", choices=("binary", "pq"), default="binary")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timed", type=int, default=100, help="single queries timed per configuration")
    parser.add_argument("--out", default=str(OUT))
    main(parser.parse_args())
