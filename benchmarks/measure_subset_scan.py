"""Binary codes searched once (the rows a selective filter keeps): two stages against a packed copy.

A filter that keeps few rows makes the engine search just those rows' codes, gathered for this
one query (``Quantizer.search(..., reuse=False)``). Two ways to pick their candidates:

* **two stages**: FAISS's Hamming top ``n * hamming_factor``, re-ranked with the asymmetric score by
  table lookups (``BinaryQuantizer._search``);
* **fast scan**: pack the gathered codes into FAISS's block layout and score every row with the
  fast-scan kernel (a throwaway ``NibbleFastScan``).

For ``--rows`` synthetic vectors (``langchain_vq.synthetic``, the quantizer fitted as the store fits
it, on up to 100,000 of them), per subset size and candidate count ``n``, one thread, single
queries with the two methods interleaved: the median wall ms of each, and recall@10 of each after
float rescoring of its ``n`` candidates against exact float search over the subset. The binary
quantizer's ``_search_once`` takes the fast scan when the subset has at most
``_ONCE_FAST_SCAN_ROWS_PER_CANDIDATE`` rows per Hamming candidate.

Run: ``python benchmarks/measure_subset_scan.py``; writes ``benchmarks/results/subset_scan.json``.
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

K = 10
DIM = 384
SUBSETS = (2_000, 10_000, 50_000, 200_000)
CANDIDATES = (160, 480, 1_120)


def _recall(corpus: np.ndarray, query: np.ndarray, candidates: np.ndarray, truth: np.ndarray) -> float:
    scores = corpus[candidates] @ query
    best = candidates[np.argsort(-scores, kind="stable")[:K]]
    return len(set(best.tolist()) & set(truth.tolist())) / K


def _no_gaps() -> Any:
    msg = "the kernel left places empty; this benchmark's sizes never should"
    raise RuntimeError(msg)


def main(ns: argparse.Namespace) -> None:
    from langchain_vq.code_blocks import StoredCodes
    from langchain_vq.quantization import BinaryQuantizer
    from langchain_vq.quantization._fast_scan import NibbleFastScan, fast_scan_top_k
    from langchain_vq.synthetic import synthetic_embeddings

    corpus = synthetic_embeddings(ns.rows, DIM, seed=0)
    queries = synthetic_embeddings(ns.queries, DIM, seed=1)
    quantizer = BinaryQuantizer(DIM).fit(corpus[: min(ns.rows, 100_000)])
    codes = quantizer.encode(corpus)
    result: dict[str, Any] = {
        **run_record(ns.rows, DIM, ns.queries, K, hamming_factor=quantizer.hamming_factor),
        "cases": [],
    }
    for size in (s for s in SUBSETS if s <= ns.rows):
        rows = np.sort(np.random.default_rng(size).choice(ns.rows, size, replace=False))
        sub_codes, sub_corpus = codes[rows], corpus[rows]
        truth = np.argsort(-(queries @ sub_corpus.T), axis=1, kind="stable")[:, :K]
        for n in CANDIDATES:
            times: dict[str, list[float]] = {"two_stages": [], "fast_scan": []}
            recalls: dict[str, list[float]] = {"two_stages": [], "fast_scan": []}
            for i, query in enumerate(queries):
                q = query[None]
                start = time.perf_counter()
                _, two = quantizer._search(q, sub_codes, n)  # noqa: SLF001 - the stage measured
                times["two_stages"].append(time.perf_counter() - start)
                start = time.perf_counter()
                index = NibbleFastScan(StoredCodes(sub_codes), quantizer.low_, quantizer.high_, "ip")
                _, fast = fast_scan_top_k(index, q, n, _no_gaps)
                times["fast_scan"].append(time.perf_counter() - start)
                recalls["two_stages"].append(_recall(sub_corpus, query, two[0], truth[i]))
                recalls["fast_scan"].append(_recall(sub_corpus, query, fast[0], truth[i]))
            case = {
                "subset_rows": size,
                "candidates": n,
                "rows_per_hamming_candidate": size / (n * quantizer.hamming_factor),
                "p50_ms": {m: float(np.median(t)) * 1e3 for m, t in times.items()},
                "recall_at_10": {m: float(np.mean(r)) for m, r in recalls.items()},
            }
            result["cases"].append(case)
            print(json.dumps(case), flush=True)
    result["load_end"] = os.getloadavg()
    Path(ns.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "subset_scan.json"))
    main(parser.parse_args())
