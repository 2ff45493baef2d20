"""Where the time and the recall of binary two-stage search go at 1M rows, stage by stage.

Measures, on one thread, the numbers the README uses to explain why binary search is not 30x
faster than exact search on this machine:

* memory read speed of one core (XOR-reduce over 48 MB) and the FAISS Hamming scan of 1M
  64-byte codes at k=10 (the floor of any full scan);
* recall@10 of the Hamming top N, and of the top M by the 1-bit asymmetric score
  (``BinaryQuantizer``'s re-rank) among the Hamming top 10,240: how many float rows recall 0.99
  needs;
* an inverted-file partition of the rows (k-means, 1024 lists): the share of the true top 10 in
  the lists probed against the share of rows they hold.

Run: ``python benchmarks/binary_limits.py [--n 1000000]`` -> ``results/binary_limits.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import hardware  # noqa: E402
from langchain_vq.quantization import BinaryQuantizer  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

K = 10
REPEATS = 15


def median_ms(run: object, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def held(candidates: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top k found among its candidates (any position)."""
    return float(np.mean([np.isin(truth[i], candidates[i]).mean() for i in range(len(truth))]))


def main(ns: argparse.Namespace) -> None:
    faiss.omp_set_num_threads(1)
    corpus = synthetic_embeddings(ns.n, seed=0)
    queries = synthetic_embeddings(ns.queries, seed=1)
    flat = faiss.IndexFlatIP(corpus.shape[1])
    flat.add(corpus)
    truth = flat.search(queries, K)[1]  # [queries, K]
    del flat

    words = np.ones(48_000_000 // 8, dtype=np.uint64)
    xor_ms = median_ms(lambda: np.bitwise_xor.reduce(words))
    quantizer = BinaryQuantizer(corpus.shape[1]).fit(corpus[:100_000])
    codes = quantizer.encode(corpus)  # [n, 64]: padded codes, as the store keeps them
    qcodes = quantizer.encode(queries)
    scan_ms = median_ms(lambda: faiss.knn_hamming(qcodes[:1], codes, K, "hc"))

    n_hamming = 10_240
    _, cand = faiss.knn_hamming(qcodes, codes, n_hamming, "mc")
    hamming = {n: held(cand[:, :n], truth) for n in (2_560, 5_120, 10_240)}
    tables, offsets = quantizer._byte_tables(queries)  # noqa: SLF001 - the store's own re-rank
    byte_offsets = np.arange(quantizer.bit_bytes) * 256
    order = np.empty_like(cand)
    for qi in range(len(queries)):
        scores = tables[qi][codes[cand[qi], : quantizer.bit_bytes].astype(np.intp) + byte_offsets].sum(1)
        order[qi] = cand[qi][np.argsort(-(scores + offsets[qi]))]
    asymmetric = {m: held(order[:, :m], truth) for m in (160, 320, 640, 1_280, 2_560)}

    nlist = 1024
    sample = corpus[np.random.default_rng(0).choice(len(corpus), min(len(corpus), nlist * 64), replace=False)]
    kmeans = faiss.Kmeans(corpus.shape[1], nlist, niter=10, seed=1, spherical=True)
    kmeans.train(sample)
    centroids = faiss.IndexFlatIP(corpus.shape[1])
    centroids.add(kmeans.centroids)
    lists = centroids.search(corpus, 1)[1][:, 0]
    sizes = np.bincount(lists, minlength=nlist)
    probe_order = centroids.search(queries, nlist)[1]
    truth_lists = lists[truth]  # [queries, K]
    ivf = []
    for nprobe in (32, 64, 128, 256):
        probed = probe_order[:, :nprobe]
        share = np.mean([np.isin(truth_lists[i], probed[i]).mean() for i in range(len(queries))])
        rows = np.mean([sizes[probed[i]].sum() / len(corpus) for i in range(len(queries))])
        ivf.append(
            {"nprobe": nprobe, "true_top10_in_probed_lists": float(share), "rows_scanned": float(rows)}
        )

    result = {
        "conditions": {"rows": ns.n, "dim": corpus.shape[1], "queries": ns.queries, "threads": 1},
        "hardware": hardware(),
        "load_average": os.getloadavg(),
        "xor_reduce_48mb_ms": xor_ms,
        "read_gb_per_s": 48e6 / (xor_ms / 1e3) / 1e9,
        "hamming_scan_1m_64b_k10_ms": scan_ms,
        "recall_of_hamming_top_n": hamming,
        "recall_of_asymmetric_top_m_among_hamming_10240": asymmetric,
        "ivf_1024_lists": ivf,
    }
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "hardware"}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "binary_limits.json"))
    main(parser.parse_args())
