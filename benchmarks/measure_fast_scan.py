"""Fast-scan kernels against the two-stage and 8-bit paths, side by side, at recall@10 >= 0.99.

Issue 12 part 4: decide by measurement whether binary ``fast_scan`` and 4-bit PQ (FAISS's
``IndexPQFastScan`` kernel, ``ProductQuantizer(nbits=4)``) become defaults. For each dataset:

* every method is fitted as the store fits it (on up to 100,000 rows) and encodes the corpus;
* its smallest rescore multiplier ``m`` whose recall@10 reaches 0.99 is found: the quantizer's
  ``search(..., reuse=True)`` (the call the engine makes on a segment's stored codes) returns
  ``10 * m`` candidates, their float32 vectors are scored exactly and the top 10 compared with
  exact float search (FAISS ``IndexFlatIP``);
* then single queries are timed on one thread, **interleaved**: for each query, ``IndexFlatIP``
  and every method at its own multiplier run one after the other (in a rotating order), so load
  changes on the shared machine hit all alike. A method's time is its code search plus the numpy
  float rescoring of its candidates (gather, dot products, top 10): the store's pipeline without
  the store's own overhead.

Methods: ``binary`` (Hamming + asymmetric re-rank, two stages), ``binary-fast-scan``,
``pq8-m96`` (8-bit PQ, 96 bytes), ``pq4-m96`` (4-bit fast scan, 48 bytes), ``pq4-m192``
(4-bit fast scan, 96 bytes).

Data: the real all-MiniLM-L6-v2 sentence embeddings (``$LANGCHAIN_VQ_DATA/sentences/emb``,
chunks 00-03, 01-03 stored as float16 and cast to float32; the last 1,000 rows are the queries)
and ``--synthetic N`` vectors from ``langchain_vq.synthetic`` (queries from another seed).

Run: ``python benchmarks/measure_fast_scan.py [--synthetic 200000] [--timed 200]``; writes
``benchmarks/results/fast_scan.json``. The committed results came from two runs on the shared
machine (data sets keyed ``real``, ``synthetic-<rows>``, each with its own date and load): the
real set and 200k synthetic rows with every method, then ``--no-real --synthetic 1000000
--queries 300 --timed 100 --methods binary,binary-fast-scan,pq8-m96,pq4-m96 --update``
(``pq4-m192`` had lost to ``pq4-m96`` at 200k).
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / faiss create their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

faiss.omp_set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import hardware, percentiles  # noqa: E402
from langchain_vq.quantization import BinaryQuantizer, ProductQuantizer  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402
from langchain_vq.topk import top_k  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_vq.quantization import Quantizer

K = 10
TARGET_RECALL = 0.99
MULTIPLIERS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: Widest prefix searched once for 8-bit PQ (it reached 0.99 at 4-8 on both data sets).
EXACT_SWEEP_MAX = 64
TRAIN_SAMPLE = 100_000  # as the store trains (collection.TRAIN_SAMPLE)
REAL_QUERIES = 1_000
WARMUP_QUERIES = 5
DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "benchmarks" / "results" / "fast_scan.json"

#: name -> (factory(dim), description). Every default except the one named is the library's.
METHODS: dict[str, tuple[Callable[[int], Quantizer], str]] = {
    "binary": (
        lambda d: BinaryQuantizer(d, fast_scan=False),
        "binary, Hamming + asymmetric re-rank (two stages)",
    ),
    "binary-fast-scan": (lambda d: BinaryQuantizer(d, fast_scan=True), "binary, fast scan of every row"),
    "pq8-m96": (lambda d: ProductQuantizer(d, m=d // 4, nbits=8), "PQ 8-bit, m=dim/4 (96 B at 384 dims)"),
    "pq4-m96": (lambda d: ProductQuantizer(d, m=d // 4, nbits=4), "PQ 4-bit fast scan, m=dim/4 (48 B)"),
    "pq4-m192": (lambda d: ProductQuantizer(d, m=d // 2, nbits=4), "PQ 4-bit fast scan, m=dim/2 (96 B)"),
}
#: Pairs compared side by side: (challenger, incumbent).
PAIRS = (("binary-fast-scan", "binary"), ("pq4-m96", "pq8-m96"), ("pq4-m192", "pq8-m96"))


def load_real() -> tuple[np.ndarray, np.ndarray, str]:
    """Corpus, queries (the last 1,000 rows) and a description of the shared sentence set."""
    folder = DATA / "sentences" / "emb"
    chunks = [np.load(folder / f"chunk_{i:02d}.npy").astype(np.float32) for i in range(4)]
    emb = np.concatenate(chunks)
    del chunks
    corpus = np.ascontiguousarray(emb[:-REAL_QUERIES])
    queries = np.ascontiguousarray(emb[-REAL_QUERIES:])
    return (
        corpus,
        queries,
        f"all-MiniLM-L6-v2 sentences, chunks 00-03 ({emb.shape[0]:,} rows, last 1,000 as queries)",
    )


def sample(x: np.ndarray) -> np.ndarray:
    """Up to ``TRAIN_SAMPLE`` rows, evenly spaced (deterministic)."""
    if x.shape[0] <= TRAIN_SAMPLE:
        return x
    return np.ascontiguousarray(x[np.linspace(0, x.shape[0] - 1, TRAIN_SAMPLE).astype(np.int64)])


def fast_scan_bytes(qz: Quantizer) -> int:
    """Bytes per row of the packed copy a fast-scan method keeps in RAM (0: scans in place)."""
    if isinstance(qz, BinaryQuantizer):
        return qz.bit_bytes if qz.fast_scan else 0
    if isinstance(qz, ProductQuantizer):
        return qz.code_size if qz.nbits == 4 else 0
    return 0


def rescore(corpus: np.ndarray, query: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Rows of the float top ``K`` among ``cand`` (``[c]``) for one query."""
    scores = corpus[cand] @ query  # [c]
    return cand[top_k(scores[None, :], K)[1][0]]


def recall(corpus: np.ndarray, queries: np.ndarray, cand: np.ndarray, truth: np.ndarray) -> float:
    """Recall@K of the float-rescored top K among ``cand`` (``[nq, c]``)."""
    hits = 0
    for qi in range(queries.shape[0]):
        hits += np.isin(rescore(corpus, queries[qi], cand[qi]), truth[qi]).sum()
    return float(hits / truth.size)


def run_dataset(
    name: str, corpus: np.ndarray, queries: np.ndarray, ns: argparse.Namespace, about: str
) -> dict[str, Any]:
    """Fit, find each method's multiplier at the recall target, then time interleaved."""
    n, dim = corpus.shape
    print(f"[{name}] {n:,} x {dim}, {queries.shape[0]} queries", flush=True)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    flat = faiss.IndexFlatIP(dim)
    flat.add(corpus)
    t0 = time.perf_counter()
    truth = flat.search(queries, K)[1]  # [nq, K] exact float search
    truth_s = time.perf_counter() - t0
    train = sample(corpus)
    methods: dict[str, dict[str, Any]] = {}
    state: dict[str, tuple[Quantizer, np.ndarray, int]] = {}
    for label, (factory, description) in METHODS.items():
        if ns.methods and label not in ns.methods.split(","):
            continue
        qz = factory(dim)
        t0 = time.perf_counter()
        qz.fit(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        codes = qz.encode(corpus)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        qz.search(queries[:1], codes, K, reuse=True)  # packs the fast-scan layout once
        first_ms = (time.perf_counter() - t0) * 1e3
        sweep = []
        chosen = None
        # 8-bit PQ ranks by exact lookup tables, so its top 10 * m is a prefix of its top
        # 10 * max(m): one search serves the whole sweep (at 1M rows one search is ~0.1 s/query).
        exact_ranking = isinstance(qz, ProductQuantizer) and qz.nbits == 8
        widest = None
        if exact_ranking:
            k_max = min(K * EXACT_SWEEP_MAX, n)
            widest = np.vstack(
                [qz.search(queries[s : s + 100], codes, k_max)[1] for s in range(0, len(queries), 100)]
            )
        for m in MULTIPLIERS:
            if K * m > n:
                break
            if widest is not None and K * m <= widest.shape[1]:
                cand = widest[:, : K * m]
            else:
                cand = np.vstack(
                    [
                        qz.search(queries[s : s + 100], codes, K * m, reuse=True)[1]
                        for s in range(0, len(queries), 100)
                    ]
                )
            r = recall(corpus, queries, cand, truth)
            sweep.append({"rescore_multiplier": m, "recall_at_10": round(r, 4)})
            if r >= TARGET_RECALL:
                chosen = m
                break
        methods[label] = {
            "description": description,
            "config": qz.get_config(),
            "code_bytes_per_vector": qz.code_size,
            "fast_scan_ram_copy_bytes_per_vector": fast_scan_bytes(qz),
            "fit_s": round(fit_s, 2),
            "encode_s": round(encode_s, 2),
            "first_search_ms": round(first_ms, 2),
            "sweep": sweep,
            "rescore_multiplier": chosen,
            "recall_at_10": sweep[-1]["recall_at_10"] if sweep else None,
        }
        print(
            f"[{name}] {label}: fit {fit_s:.1f}s encode {encode_s:.1f}s first {first_ms:.1f}ms sweep {sweep}",
            flush=True,
        )
        if chosen is not None:
            state[label] = (qz, codes, chosen)

    # Timing, interleaved: for each query, IndexFlatIP then every method, in a rotating order.
    labels = ["flat", *state]
    times: dict[str, list[float]] = {label: [] for label in labels}

    def run(label: str, q: np.ndarray) -> None:
        if label == "flat":
            flat.search(q[None, :], K)
            return
        qz, codes, m = state[label]
        cand = qz.search(q[None, :], codes, K * m, reuse=True)[1][0]
        rescore(corpus, q, cand)

    for qi in range(WARMUP_QUERIES):
        for label in labels:
            run(label, queries[qi])
    timed = min(ns.timed, queries.shape[0])
    for qi in range(timed):
        shift = qi % len(labels)
        for label in labels[shift:] + labels[:shift]:
            t0 = time.perf_counter()
            run(label, queries[qi])
            times[label].append(time.perf_counter() - t0)
    flat_p = percentiles(times["flat"])
    for label in state:
        p = percentiles(times[label])
        methods[label].update(p)
        methods[label]["speedup_vs_flat_ip"] = round(flat_p["p50_ms"] / p["p50_ms"], 2)
    pairs = []
    for challenger, incumbent in PAIRS:
        if challenger in state and incumbent in state:
            a, b = methods[challenger]["p50_ms"], methods[incumbent]["p50_ms"]
            pairs.append(
                {
                    "challenger": challenger,
                    "incumbent": incumbent,
                    "p50_ratio": round(a / b, 3),
                    "wins": a < b,
                }
            )
    for label in state:
        r = methods[label]
        print(
            f"[{name}] {label:17s} m={r['rescore_multiplier']:>3} recall {r['recall_at_10']:.4f} "
            f"p50 {r['p50_ms']:.2f} ms  {r['speedup_vs_flat_ip']:.1f}x flat",
            flush=True,
        )
    print(f"[{name}] flat p50 {flat_p['p50_ms']:.2f} ms; pairs {pairs}", flush=True)
    return {
        "date": started,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "data": about,
        "rows": n,
        "dim": dim,
        "queries": int(queries.shape[0]),
        "timed_queries": timed,
        "truth_s": round(truth_s, 2),
        "flat_ip": flat_p,
        "methods": methods,
        "side_by_side": pairs,
    }


def main(ns: argparse.Namespace) -> None:
    """Run the datasets asked for and write the JSON report."""
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "load_start": os.getloadavg(),
        "conditions": {
            "threads": 1,
            "k": K,
            "target_recall_at_10": TARGET_RECALL,
            "multipliers_tried": list(MULTIPLIERS),
            "train_sample": TRAIN_SAMPLE,
            "timing": "single queries, interleaved (rotating order); code search (reuse=True) + numpy float rescoring",
        },
        "hardware": hardware(),
        "datasets": {},
    }
    if ns.real:
        corpus, queries, about = load_real()
        result["datasets"]["real"] = run_dataset("real", corpus, queries, ns, about)
        del corpus, queries
    if ns.synthetic:
        corpus = synthetic_embeddings(ns.synthetic, seed=0)
        queries = synthetic_embeddings(ns.queries, seed=1)
        about = f"langchain_vq.synthetic: {ns.synthetic:,} rows (seed 0), {ns.queries} queries (seed 1)"
        key = f"synthetic-{ns.synthetic}"
        result["datasets"][key] = run_dataset(key, corpus, queries, ns, about)
    result["load_end"] = os.getloadavg()
    out = Path(ns.out)
    if ns.update and out.exists():
        # Keep the data sets not run now (e.g. the real set, run apart from the 1M synthetic run).
        kept = json.loads(out.read_text()).get("datasets", {})
        result["datasets"] = {
            **{k: v for k, v in kept.items() if k not in result["datasets"]},
            **result["datasets"],
        }
        result["command"] += " (other data sets kept from earlier runs; see each data set's date)"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--synthetic", type=int, default=200_000, help="synthetic rows (0: none)")
    parser.add_argument("--queries", type=int, default=1_000, help="synthetic queries for recall")
    parser.add_argument("--timed", type=int, default=200, help="queries timed per method")
    parser.add_argument("--methods", default="", help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the real sentence set")
    parser.add_argument("--update", action="store_true", help="keep the other data sets of --out")
    parser.add_argument("--out", default=str(OUT))
    main(parser.parse_args())
