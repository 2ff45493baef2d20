"""Disk of a store per rescoring precision, as a ratio to the raw float32 vectors.

Builds binary stores of ``--n`` x 384 synthetic vectors by ten equal adds (the tiered merges
decide the segments; no ``compact()``) through the public API, for each rescoring precision
(float16, the default; float32; int8; none = ``rescore=False``) and two row shapes:

* ``ids only``: ids ``"0".."n-1"``, empty texts, no metadata (the rows of ``bench_peers.py``);
* ``ids, texts, metadata``: plus texts ``"doc <i>"`` and ``{"bucket": i % 10000, "half": bool}``
  (the rows of ``bench_search.py``).

Disk is the newest version's files and manifests (``store_info``), the part of the store the
rescoring precision decides plus what the rows themselves hold. Output: ``<out>/disk.json``.

Run: ``python benchmarks/measure_disk.py [--n 1000000]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402

DIM = 384
ADDS = 10
PRECISIONS: dict[str, dict[str, Any]] = {
    "float16 (default)": {},
    "float32": {"rescore_precision": "float32"},
    "int8": {"rescore_precision": "int8"},
    "none (codes only)": {"rescore": False},
}
TARGETS = {"float16 (default)": 0.55, "int8": 0.32, "none (codes only)": 0.06}


def build(path: Path, vectors: Any, settings: dict[str, Any], *, rich: bool) -> dict[str, Any]:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore
    from langchain_vq.storage import store_info

    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, quantization="binary", **settings)
    n = vectors.shape[0]
    start = time.perf_counter()
    for lo in range(0, n, n // ADDS):
        rows = range(lo, min(lo + n // ADDS, n))
        texts = [f"doc {i}" for i in rows] if rich else [""] * len(rows)
        metadatas = [{"bucket": i % 10_000, "half": i % 2 == 0} for i in rows] if rich else None
        store.add_embeddings(texts, vectors[rows.start : rows.stop], metadatas, [str(i) for i in rows])
    parts = store_info(path)["bytes"]
    total = parts["segments"] + parts["deletions"] + parts["quantizer_state"] + parts["manifests"]
    return {
        "bytes": total,
        "ratio_to_raw_float32": total / (n * DIM * 4),
        "segments": len(store.collection.snapshot.views),
        "code_bytes_per_vector": store.collection.snapshot.quantizer.code_size,
        "build_s": time.perf_counter() - start,
    }


def main(ns: argparse.Namespace) -> None:
    from langchain_vq.synthetic import synthetic_embeddings

    vectors = synthetic_embeddings(ns.n, DIM, seed=0)
    result: dict[str, Any] = {**run_record(ns.n, DIM, 0, 0, adds=ADDS), "shapes": {}}
    work = Path(tempfile.mkdtemp(prefix="measure_disk-", dir=ns.tmp))
    try:
        for shape, rich in (("ids only", False), ("ids, texts, metadata", True)):
            result["shapes"][shape] = {}
            for name, settings in PRECISIONS.items():
                path = work / f"{int(rich)}-{len(result['shapes'][shape])}"
                measured = build(path, vectors, settings, rich=rich)
                result["shapes"][shape][name] = measured
                print(f"{shape} / {name}: {measured}", flush=True)
                shutil.rmtree(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["targets"] = {
        shape: {name: runs[name]["ratio_to_raw_float32"] <= limit for name, limit in TARGETS.items()}
        for shape, runs in result["shapes"].items()
    }
    out = Path(ns.out) / "disk.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tmp", default=None)
    main(parser.parse_args())
