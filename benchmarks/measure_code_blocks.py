"""Blocked codes (``langchain_vq.code_blocks``): what building and reading the fast-scan layout costs.

At ``--rows`` random 48-byte codes (384-dim binary codes), one thread, in one run:

* **Packing**, CPU ms: FAISS's own path (``IndexPQ.add_sa_codes`` + ``IndexPQFastScan(IndexPQ)``,
  what the store did before blocked codes) against ``code_blocks.pack_blocks``, and the copy of
  already blocked codes into a fresh FAISS buffer (what a new process does now), split into
  the first touch of the buffer's pages and the memcpy; also with the buffer's pages faulted in
  beforehand (``MADV_POPULATE_WRITE``) and backed by huge pages (``MADV_HUGEPAGE``).
* **Row gathers**, us per row: ``--gather`` random rows from blocked codes (``StoredCodes.take``'s
  first call) against row-major codes.

Each timing is the median of ``--repeats``. Run: ``python benchmarks/measure_code_blocks.py``;
writes ``benchmarks/results/code_blocks.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402

WIDTH = 48
MADV_HUGEPAGE = 14
MADV_POPULATE_WRITE = 23


def _cpu_ms(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append((time.process_time() - start) * 1e3)
    return float(np.median(times))


def _faiss_repack(codes: np.ndarray) -> None:
    import faiss

    flat = faiss.IndexPQ(2 * WIDTH * 4, 2 * WIDTH, 4, faiss.METRIC_INNER_PRODUCT)
    flat.is_trained = True
    flat.add_sa_codes(codes)
    faiss.IndexPQFastScan(flat)  # type: ignore[arg-type]


def _copy_into_faiss(blocked: np.ndarray, advice: int | None) -> tuple[float, float]:
    """Wall ms to get a fresh FAISS buffer's pages, and to copy ``blocked`` into it."""
    import faiss

    index = faiss.IndexPQFastScan(2 * WIDTH * 4, 2 * WIDTH, 4, faiss.METRIC_INNER_PRODUCT, 32)
    start = time.perf_counter()
    index.codes.resize(blocked.size)
    buffer = faiss.rev_swig_ptr(index.codes.get(), blocked.size)
    if advice is not None:
        page = os.sysconf("SC_PAGE_SIZE")
        first = -(-buffer.ctypes.data // page) * page
        length = (buffer.ctypes.data + buffer.size - first) // page * page
        ctypes.CDLL(None).madvise(ctypes.c_void_p(first), ctypes.c_size_t(length), advice)
    ready = time.perf_counter()
    np.copyto(buffer, blocked.reshape(-1))
    done = time.perf_counter()
    return (ready - start) * 1e3, (done - ready) * 1e3


def main(ns: argparse.Namespace) -> None:
    from langchain_vq.code_blocks import StoredCodes, pack_blocks, to_blocked

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (ns.rows, WIDTH), dtype=np.uint8)
    blocked = to_blocked(codes)
    result: dict[str, Any] = {
        **run_record(ns.rows, WIDTH * 8, 0, 0, code_bytes=WIDTH, repeats=ns.repeats, gather=ns.gather)
    }
    result["pack_cpu_ms"] = {
        "faiss_index_pq_then_fast_scan": _cpu_ms(lambda: _faiss_repack(codes), ns.repeats),
        "numpy_pack_blocks": _cpu_ms(lambda: pack_blocks(codes), ns.repeats),
    }
    copies: dict[str, dict[str, float]] = {}
    for name, advice in (
        ("plain", None),
        ("populate_write", MADV_POPULATE_WRITE),
        ("hugepage", MADV_HUGEPAGE),
    ):
        runs = [_copy_into_faiss(blocked, advice) for _ in range(ns.repeats)]
        prepare, copy = (float(np.median([r[i] for r in runs])) for i in (0, 1))
        worst = max(a + b for a, b in runs)
        copies[name] = {
            "prepare_ms": prepare,
            "copy_ms": copy,
            "total_ms": prepare + copy,
            "worst_total_ms": worst,
        }
    result["copy_blocked_into_faiss_ms"] = copies
    gathers = {"row_major": [], "blocked_first_take": []}
    for seed in range(ns.repeats):
        rows = np.random.default_rng(seed).choice(ns.rows, ns.gather, replace=False)
        start = time.perf_counter()
        codes[rows]
        gathers["row_major"].append(time.perf_counter() - start)
        stored = StoredCodes(blocked, blocked=True)
        start = time.perf_counter()
        stored.take(rows)
        gathers["blocked_first_take"].append(time.perf_counter() - start)
        stored.row_major  # noqa: B018 - let the background unpack finish before the next repeat
    result["gather_us_per_row"] = {k: float(np.median(v)) * 1e6 / ns.gather for k, v in gathers.items()}
    result["load_end"] = os.getloadavg()
    out = Path(ns.out)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("_ms", "_row"))}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--gather", type=int, default=10_000, help="rows per gather (1%% of 1M)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "code_blocks.json"))
    main(parser.parse_args())
