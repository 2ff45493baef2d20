"""Small costs on the search and ingest paths, each measured side by side in one run, one thread.

* **float16 decode**: numpy's cast against ``VectorCodec.decode`` (FAISS's F16C conversion), for
  a query's 1,120 rescoring candidates and for one 16k-row exact-scan block, 384 dims; CPU ms,
  median of ``--repeats``; the outputs are checked bit for bit.
* **exact-scan block size**: ``search.engine.exact_search`` over ``--rows`` float16 rows with 150
  queries, blocks of 65,536 against 16,384 rows (the engine's ``_EXACT_CHUNK_ROWS``); CPU s,
  alternated, median of 3.
* **metadata typing at ingest**: ``check_metadatas`` plus ``encode_metadata`` of 100k rows of
  ``bench_search.py``'s metadata; CPU s, median of 3.

Run: ``python benchmarks/measure_hot_paths.py``; writes ``benchmarks/results/hot_paths.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402
from benchmarks.bench_search import row_metadata  # noqa: E402

DIM = 384


def _cpu(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return float(np.median(times))


def main(ns: argparse.Namespace) -> None:
    from langchain_vq.quantization.precision import VectorCodec
    from langchain_vq.search import engine
    from langchain_vq.storage.metadata import check_metadatas, encode_metadata
    from langchain_vq.synthetic import synthetic_embeddings

    result: dict[str, Any] = {**run_record(ns.rows, DIM, 150, 10, repeats=ns.repeats)}
    corpus = synthetic_embeddings(ns.rows, DIM, seed=0).astype(np.float16)
    codec = VectorCodec("float16", DIM)
    decode: dict[str, dict[str, float]] = {}
    for label, rows in (("candidates_1120", 1_120), ("block_16384", 16_384)):
        part = corpus[:rows]
        assert np.array_equal(codec.decode(part).view(np.uint32), part.astype(np.float32).view(np.uint32))
        decode[label] = {
            "numpy_cast_ms": _cpu(lambda part=part: part.astype(np.float32), ns.repeats) * 1e3,
            "faiss_f16c_ms": _cpu(lambda part=part: codec.decode(part), ns.repeats) * 1e3,
        }
    result["float16_decode_cpu"] = decode

    queries = synthetic_embeddings(150, DIM, seed=1)
    blocks: dict[int, list[float]] = {65_536: [], 16_384: []}
    default = engine._EXACT_CHUNK_ROWS  # noqa: SLF001 - the setting measured
    try:
        for _ in range(3):
            for chunk, times in blocks.items():
                engine._EXACT_CHUNK_ROWS = chunk  # noqa: SLF001
                times.append(
                    _cpu(lambda: engine.exact_search(corpus, queries, 10, "ip", None, codec.decode), 1)
                )
    finally:
        engine._EXACT_CHUNK_ROWS = default  # noqa: SLF001
    result["exact_scan_cpu_s"] = {str(chunk): float(np.median(t)) for chunk, t in blocks.items()}

    metadatas = [row_metadata(i) for i in range(100_000)]
    result["metadata_100k_rows_cpu_s"] = {
        "check_metadatas": _cpu(lambda: check_metadatas(metadatas), 3),
        "encode_metadata": _cpu(lambda: encode_metadata(metadatas), 3),
    }
    result["load_end"] = os.getloadavg()
    Path(ns.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("_cpu", "_s"))}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=300_000, help="float16 rows of the exact scan")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "hot_paths.json"))
    main(parser.parse_args())
