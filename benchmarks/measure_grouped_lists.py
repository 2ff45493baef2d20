"""Rows grouped by list (format 3) against a ``partition`` value per row (format 2), side by side.

A partitioned store used to keep each row's list in a uint16 ``partition`` column, rows in any
order and codes in the fast-scan block layout. Format 3 keeps rows grouped by list, the list
boundaries as run ends (``storage.schema``), and row-major codes. This script builds the same
default store both ways and compares:

* disk bytes of the version's files (segments, deletions, quantizer state, manifests; what
  ``bench_search`` reports as ``store_bytes``), per row and against raw float32;
* the first query of a new process (packing every list into the kernel's blocks) and the
  second, each store opened by the *current* code, so only the layout differs; rounds alternate
  the two stores, and the page cache is warm (files read once before);
* the packing alone (building the joined partitioned index from the open segments), in-process,
  alternating, ``--repeats`` times.

The store: ``--rows`` synthetic 384-d rows (seed 0) added in ten adds with ``bench_search``'s
ids, texts and metadata, default settings (binary, float16 rescoring, ``partitions="auto"``): it
crosses ``AUTO_PARTITION_ROWS`` (200k) at the last add when ``--rows`` is 200,000. The format-2
store is written by the code at ``--old`` (a checkout of main before the change), the format-3
one by this checkout.

Run: ``python benchmarks/measure_grouped_lists.py --old /work/main`` ->
``benchmarks/results/grouped_lists.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "grouped_lists.json"
DIM = 384

#: Builds the store at argv[1] with argv[2] rows, with whichever langchain_vq PYTHONPATH gives.
BUILD = """
import json, os, sys, time
import faiss
faiss.omp_set_num_threads(1)
from pathlib import Path
from benchmarks.bench_search import row_metadata
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.storage import store_info
from langchain_vq.synthetic import synthetic_embeddings
path, n = Path(sys.argv[1]), int(sys.argv[2])
x = synthetic_embeddings(n, 384, seed=0)
c = Collection(CollectionConfig(), path)
start = time.perf_counter()
for lo in range(0, n, n // 10):
    hi = min(n, lo + n // 10)
    ids = [str(i) for i in range(lo, hi)]
    c.add(ids, [f"doc {i}" for i in range(lo, hi)], [row_metadata(i) for i in range(lo, hi)], c.check_vectors(x[lo:hi]))
seconds = time.perf_counter() - start
parts = store_info(path)["bytes"]
version = parts["segments"] + parts["deletions"] + parts["quantizer_state"] + parts["manifests"]
q = c.snapshot.quantizer
views = c.snapshot.views
print(json.dumps({
    "ingest_s": round(seconds, 2),
    "segments": [v.segment.rows for v in views],
    "columns": views[0].segment.table.column_names,
    "partitions": getattr(q, "partitions", None),
    "nprobe": getattr(q, "nprobe", None),
    "bytes": parts,
    "store_bytes": version,
    "bytes_per_row": round(version / n, 2),
    "disk_ratio_vs_raw_float32": round(version / (n * 384 * 4), 4),
}))
"""

#: Opens the store at argv[1] in a new process; times its first and second query.
FIRST = """
import json, sys, time
import faiss
faiss.omp_set_num_threads(1)
import numpy as np
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.synthetic import synthetic_embeddings
q = synthetic_embeddings(2, 384, seed=1)
start = time.perf_counter()
c = Collection(CollectionConfig(), sys.argv[1])
opened = time.perf_counter()
c.search(q[:1], 10, rescore_multiplier=16)
first = time.perf_counter()
c.search(q[1:], 10, rescore_multiplier=16)
second = time.perf_counter()
print(json.dumps({"open_ms": 1e3 * (opened - start), "first_ms": 1e3 * (first - opened), "second_ms": 1e3 * (second - first)}))
"""

#: Times building the joined partitioned index (the packing) of the store at argv[1], in-process.
PACK = """
import json, sys, time
import faiss
faiss.omp_set_num_threads(1)
from langchain_vq.collection import Collection, CollectionConfig
c = Collection(CollectionConfig(), sys.argv[1])
q = c.snapshot.quantizer
arrays = [v.segment.stored_codes for v in c.snapshot.views]
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    q._build_joined_ivf(arrays)
    times.append(1e3 * (time.perf_counter() - start))
print(json.dumps({"pack_ms": times, "blocked": [a.blocked for a in arrays]}))
"""


def _run(code: str, pythonpath: Path, *args: object) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        cwd=pythonpath,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the format-2 code")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="new-process first queries per store")
    parser.add_argument("--repeats", type=int, default=5, help="in-process packings per store")
    parser.add_argument("--out", type=Path, default=OUT)
    ns = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks._common import run_record

    record = run_record(ns.rows, DIM, 2, 10, old_code=str(ns.old), rounds=ns.rounds, repeats=ns.repeats)
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        stores = {"format2_partition_column": Path(tmp) / "old", "format3_grouped": Path(tmp) / "new"}
        builds = {
            "format2_partition_column": _run(BUILD, ns.old, stores["format2_partition_column"], ns.rows),
            "format3_grouped": _run(BUILD, REPO, stores["format3_grouped"], ns.rows),
        }
        print(json.dumps(builds, indent=1), flush=True)
        first: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        for _ in range(ns.rounds):  # alternating, the current code opening both
            for name, path in stores.items():
                first[name].append(_run(FIRST, REPO, path))
        packs = {name: [] for name in stores}  # type: dict[str, list[float]]
        blocked = {}
        for _ in range(2):  # alternating halves
            for name, path in stores.items():
                result = _run(PACK, REPO, path, max(1, ns.repeats // 2))
                packs[name] += result["pack_ms"]
                blocked[name] = result["blocked"]
    results = {}
    for name in stores:
        results[name] = {
            **builds[name],
            "codes_blocked": blocked[name],
            "first_query_ms_p50": _median([r["first_ms"] for r in first[name]]),
            "second_query_ms_p50": _median([r["second_ms"] for r in first[name]]),
            "open_ms_p50": _median([r["open_ms"] for r in first[name]]),
            "packing_ms_p50": _median(packs[name]),
            "packing_ms_all": [round(t, 1) for t in packs[name]],
        }
    old, new = results["format2_partition_column"], results["format3_grouped"]
    summary = {
        "bytes_per_row_saved": round(old["bytes_per_row"] - new["bytes_per_row"], 2),
        "first_query_ratio_new_over_old": round(new["first_query_ms_p50"] / old["first_query_ms_p50"], 3),
        "packing_ratio_new_over_old": round(new["packing_ms_p50"] / old["packing_ms_p50"], 3),
    }
    record.update({"load_end": os.getloadavg(), "stores": results, "summary": summary})
    ns.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"stores": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
