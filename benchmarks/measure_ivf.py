"""The partitioned first stage against the full fast scan and ``IndexFlatIP``, side by side.

Issue 12: the default binary store should be 20x faster than ``IndexFlatIP`` at 1M x 384, one
thread, at recall@10 >= 0.99, but a full fast-scan pass over 1M codes alone takes 5-6 ms. This
script measures, in one run on the same data:

* ``IndexFlatIP`` (exact float search, the baseline);
* the store with ``--quantization`` (``binary``, the default, or ``pq``: 4-bit PQ), each a full
  fast scan with float16 rescoring;
* the same store with ``quantizer_options={"partitions": P}`` (lists stored at ingest, ``nprobe``
  lists scanned per query), at several ``nprobe``, the one its quantizer chose at training among
  them;

each at several rescore multipliers ``m``: recall@10 against exact float search over all queries
(the store's ``Collection.search``, the full pipeline through rescoring and row reads), and p50
of single queries on one thread, **interleaved** (each query runs every configuration in turn, so
load changes hit all alike). Also the build: the add's wall time for each store (the partitioned
one includes k-means and assigning every row), k-means and assignment alone, and the first
query's time (building each segment's fast-scan or IVF index).

Stores are built on disk by one add (``--adds`` splits it) in a temporary directory. Data: the
project's synthetic generator (``--data synthetic``, corpus seed 0, queries seed 1), or the shared
real sentence embeddings (``--data sentences``: ``sentences/emb`` chunks 00-03, float16 chunks
cast to float32, shuffled with seed 0; the first ``--queries`` rows are held-out queries, the
next ``--n`` the corpus). ``--timed 0`` measures recall only.

Run: ``python benchmarks/measure_ivf.py [--n 200000] [--partitions 1024] [--quantization pq]``
-> ``benchmarks/results/ivf.json`` (``ivf_pq.json`` for PQ, ``*_sentences.json`` for real data;
``--out`` elsewhere). The committed binary results are the issue's scale, ``--n 1000000`` (about
3 minutes and 6 GB on a quiet machine).
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
from langchain_vq.collection import TRAIN_SAMPLE, Collection, CollectionConfig  # noqa: E402
from langchain_vq.quantization import BinaryQuantizer, ProductQuantizer  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

K = 10
TARGET = 0.99
#: Rescore multipliers measured per quantization (PQ reaches 0.99 at fewer candidates).
MULTIPLIERS = {"binary": (16, 32, 64, 128), "pq": (16, 32, 48, 64, 96)}
QUANTIZERS: dict[str, type[BinaryQuantizer | ProductQuantizer]] = {
    "binary": BinaryQuantizer,
    "pq": ProductQuantizer,
}
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))


def build(
    path: Path, corpus: np.ndarray, adds: int, quantization: str, options: dict[str, Any] | None
) -> tuple[Collection, float]:
    """A store of ``corpus`` (ids ``r<i>``) built by ``adds`` adds, and the seconds they took."""
    config = CollectionConfig(metric="cosine", quantization=quantization, quantizer_options=options)
    collection = Collection(config, path)
    start = time.perf_counter()
    for part in np.array_split(np.arange(corpus.shape[0]), adds):
        ids = [f"r{i}" for i in part.tolist()]
        collection.add(ids, [""] * len(ids), [None] * len(ids), collection.check_vectors(corpus[part]))
    return collection, time.perf_counter() - start


def ids_of(collection: Collection, queries: np.ndarray, m: int) -> np.ndarray:
    """Row numbers ``[nq, K]`` of the store's top ``K`` at multiplier ``m``."""
    rows = collection.search(queries, K, rescore_multiplier=m)
    return np.array([[int(r.id[1:]) for r in hits] for hits in rows])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.isin(truth[i], found[i]).mean() for i in range(len(truth))]))


def load(data: str, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm ``(corpus, queries)``: synthetic, or real sentences with held-out queries."""
    if data == "synthetic":
        corpus, queries = synthetic_embeddings(n, seed=0), synthetic_embeddings(n_queries, seed=1)
    else:
        chunks = sorted((DATA / "sentences" / "emb").glob("chunk_*[0-9].npy"))
        rows = np.concatenate([np.load(c).astype(np.float32) for c in chunks])
        if n + n_queries > rows.shape[0]:
            sys.exit(f"--n {n} + --queries {n_queries} is more than the {rows.shape[0]} real rows")
        order = np.random.default_rng(0).permutation(rows.shape[0])
        queries, corpus = rows[order[:n_queries]], rows[order[n_queries : n_queries + n]]
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)  # as the store keeps cosine vectors
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(corpus), np.ascontiguousarray(queries)


def main(ns: argparse.Namespace) -> None:
    record = run_record(
        ns.n,
        384,
        ns.queries,
        K,
        quantization=ns.quantization,
        data=ns.data,
        partitions=ns.partitions,
        adds=ns.adds,
        timed=ns.timed,
    )
    multipliers = tuple(ns.multipliers or MULTIPLIERS[ns.quantization])
    quantizer_type = QUANTIZERS[ns.quantization]
    corpus, queries = load(ns.data, ns.n, ns.queries)
    flat = faiss.IndexFlatIP(corpus.shape[1])
    flat.add(corpus)
    truth = flat.search(queries, K)[1]
    print(f"{ns.n:,} rows, {ns.queries} queries, load {os.getloadavg()}", flush=True)

    sample = corpus[np.random.default_rng(0).choice(ns.n, min(ns.n, TRAIN_SAMPLE), replace=False)]
    start = time.perf_counter()
    plain_fit = quantizer_type(384).fit(sample)
    fit_plain_s = time.perf_counter() - start
    start = time.perf_counter()
    partitioned_fit = quantizer_type(384, partitions=ns.partitions).fit(sample)
    fit_partitioned_s = time.perf_counter() - start
    start = time.perf_counter()
    lists = partitioned_fit.assign(corpus)
    assign_s = time.perf_counter() - start
    sizes = np.bincount(lists, minlength=ns.partitions)
    del plain_fit

    with tempfile.TemporaryDirectory(prefix="measure_ivf_") as tmp:
        full, full_add_s = build(Path(tmp) / "full", corpus, ns.adds, ns.quantization, None)
        print(f"full store built in {full_add_s:.1f} s", flush=True)
        options = {"partitions": ns.partitions}
        ivf, ivf_add_s = build(Path(tmp) / "ivf", corpus, ns.adds, ns.quantization, options)
        print(f"partitioned store built in {ivf_add_s:.1f} s", flush=True)
        quantizer = ivf.snapshot.quantizer
        assert isinstance(quantizer, quantizer_type)
        first = {}
        for name, store in (("full", full), ("ivf", ivf)):
            start = time.perf_counter()
            store.search(queries[:1], K, rescore_multiplier=multipliers[0])
            first[name] = time.perf_counter() - start
        chosen = quantizer.nprobe  # chosen at training (_ivf.choose_nprobe): the store's default
        fractions = ns.nprobes or [max(1, ns.partitions // d) for d in (16, 8, 4, 2)]
        nprobes = sorted({*fractions, chosen or 1})
        configs: list[tuple[str, Collection | None, int, int | None]] = [("IndexFlatIP", None, 0, None)]
        configs += [("full fast scan", full, m, None) for m in multipliers]
        configs += [("partitioned", ivf, m, p) for p in nprobes for m in multipliers]

        results = []
        for label, store, m, nprobe in configs:
            if store is None:
                results.append({"method": label, "recall_at_10": 1.0})
                continue
            if nprobe is not None:
                quantizer.nprobe = nprobe
            found = ids_of(store, queries, m)
            results.append(
                {
                    "method": label,
                    "nprobe": nprobe,
                    "rescore_multiplier": m,
                    "recall_at_10": recall(found, truth),
                }
            )

        times: list[list[float]] = [[] for _ in configs]
        for qi in range(ns.timed):
            q = queries[qi % ns.queries : qi % ns.queries + 1]
            for ci in np.roll(np.arange(len(configs)), qi).tolist():  # rotating order
                _, store, m, nprobe = configs[ci]
                if nprobe is not None:
                    quantizer.nprobe = nprobe
                start = time.perf_counter()
                if store is None:
                    flat.search(q, K)
                else:
                    store.search(q, K, rescore_multiplier=m)
                times[ci].append(time.perf_counter() - start)
        flat_ms = float(np.median(times[0]) * 1e3) if ns.timed else None
        for result, spent in zip(results, times, strict=True):
            result["recall_at_10"] = round(result["recall_at_10"], 4)
            if flat_ms is not None:
                result["p50_ms"] = round(float(np.median(spent) * 1e3), 3)
                result["speedup_vs_flat"] = round(flat_ms / result["p50_ms"], 2)

    best = {}
    for result in results[1:]:
        key = result["method"] if result["nprobe"] is None else f"partitioned nprobe={result['nprobe']}"
        if result["recall_at_10"] >= TARGET and key not in best:
            best[key] = result
    out = {
        **record,
        "load_end": os.getloadavg(),
        "build": {
            "kmeans_fit_s": round(fit_partitioned_s - fit_plain_s, 2),
            "fit_without_partitions_s": round(fit_plain_s, 2),
            "assign_s": round(assign_s, 2),
            "assign_us_per_row": round(assign_s / ns.n * 1e6, 2),
            "list_rows": {
                "min": int(sizes.min()),
                "median": float(np.median(sizes)),
                "max": int(sizes.max()),
            },
            "add_full_s": round(full_add_s, 1),
            "add_partitioned_s": round(ivf_add_s, 1),
            "add_ratio": round(ivf_add_s / full_add_s, 2),
            "first_query_s": {name: round(s, 3) for name, s in first.items()},
        },
        "chosen_nprobe": chosen,
        "results": results,
        "smallest_multiplier_reaching_target": best,
    }
    suffix = ("_pq" if ns.quantization == "pq" else "") + ("_sentences" if ns.data == "sentences" else "")
    path = Path(ns.out or RESULTS / f"ivf{suffix}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(
        json.dumps(
            {k: out[k] for k in ("load_end", "build", "smallest_multiplier_reaching_target")}, indent=1
        )
    )
    for result in results:
        print(
            f"{result['method']:>16} nprobe={result.get('nprobe')!s:>5} m={result.get('rescore_multiplier', '-')!s:>4}"
            f" recall={result['recall_at_10']:.4f} p50={result.get('p50_ms', float('nan')):8.3f} ms"
            f" x{result.get('speedup_vs_flat')}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timed", type=int, default=100, help="single queries timed per configuration")
    parser.add_argument("--partitions", type=int, default=1024)
    parser.add_argument("--adds", type=int, default=1)
    parser.add_argument("--quantization", choices=sorted(QUANTIZERS), default="binary")
    parser.add_argument("--data", choices=("synthetic", "sentences"), default="synthetic")
    parser.add_argument("--multipliers", type=int, nargs="+", help="default: per quantization")
    parser.add_argument("--nprobes", type=int, nargs="+", help="default: 1/16, 1/8, 1/4, 1/2 of the lists")
    parser.add_argument("--out", help="default: results/ivf[_pq][_sentences].json")
    main(parser.parse_args())
