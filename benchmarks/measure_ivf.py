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

Stores are built on disk by one add (``--adds`` splits it) in a temporary directory. With
``--adds`` above 1, a third store takes the same adds but merges them into one segment (same
quantizer, codes and lists): the several segments of the partitioned store, searched through
one joined index, against the one segment, at its chosen ``nprobe``.

``--data real`` uses the shared sentence embeddings (``sentences/emb`` chunks 00-03, 200,000
rows, float16 chunks cast to float32): ``--queries`` rows drawn at random (seeded) are the
held-out queries, the next ``--n`` the corpus.

``--lists 256,512,1024`` adds the lists' quality against their cost, side by side: for each
list count, k-means on the store's training sample (as ``fit`` runs it), assigning every row,
and for held-out queries the rows scanned by the fewest lists holding 99% / 99.5% / 99.7% of
their exact top 10 (``_ivf.choose_nprobe``'s measure, on the queries instead of training rows).

``--old-lists`` (issue 12: cheap lists) measures today's lists against the lists before them, side
by side in the same run: from 256 lists on, ``train_partitions`` runs its k-means on the
sample's 64 principal components and rows are assigned on the centroids' 64 principal axes
(``_ivf.ListProjection``); before, a k-means of the full vectors and every centroid scored.
``--lists`` then measures both (training, assignment per row, rows scanned per coverage, and
the share of rows in their nearest centroid's list), and a third store is built with the old
lists (``_ivf.MIN_PROJECTED_LISTS`` raised for its build), searched at the same ``nprobe``
values as the partitioned store: recall@10 at the scanned fraction each reaches.

``--multipliers`` and ``--nprobes`` replace the default rescore multipliers (per quantization)
and ``nprobe`` values (1/16, 1/8, 1/4 and 1/2 of the lists; the chosen one is always measured).

Run: ``python benchmarks/measure_ivf.py [--n 200000] [--partitions 1024] [--adds 10]
[--data real] [--lists 256,512,1024] [--quantization pq]`` -> ``benchmarks/results/ivf.json``
(``--out`` elsewhere; the PQ runs are committed as ``ivf_pq.json`` and ``ivf_pq_sentences.json``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
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
from langchain_vq import collection as collection_module  # noqa: E402
from langchain_vq.collection import TRAIN_SAMPLE, Collection, CollectionConfig  # noqa: E402
from langchain_vq.merge_policy import MergePolicy  # noqa: E402
from langchain_vq.quantization import BinaryQuantizer, ProductQuantizer, _ivf  # noqa: E402
from langchain_vq.quantization._ivf import assign_partitions, centroid_index, train_partitions  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

K = 10
TARGET = 0.99
#: Rescore multipliers measured per quantization (PQ reaches 0.99 at fewer candidates).
MULTIPLIERS = {"binary": (16, 32, 64, 128), "pq": (16, 32, 48, 64, 96)}
QUANTIZERS: dict[str, type[BinaryQuantizer | ProductQuantizer]] = {
    "binary": BinaryQuantizer,
    "pq": ProductQuantizer,
}
OUT = REPO / "benchmarks" / "results" / "ivf.json"
DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))
#: Every add merges everything into one segment (the "merged" store).
ONE_SEGMENT = MergePolicy(segments_per_tier=2, floor_rows=1 << 29, max_rows=1 << 30, max_deleted_fraction=1.0)
COVERAGES = (0.99, 0.995, 0.997)


def load(data: str, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm corpus ``[n, 384]`` and queries: synthetic (seeds 0 and 1) or real held-out sentences."""
    if data == "real":
        chunks = [np.load(DATA / "sentences" / "emb" / f"chunk_0{i}.npy") for i in range(4)]
        rows = np.concatenate([c.astype(np.float32) for c in chunks])
        order = np.random.default_rng(0).permutation(len(rows))
        if n + n_queries > len(rows):
            raise SystemExit(f"--data real holds {len(rows)} rows: --n + --queries must not exceed it")
        corpus, queries = rows[order[n_queries : n_queries + n]], rows[order[:n_queries]]
    else:
        corpus, queries = synthetic_embeddings(n, seed=0), synthetic_embeddings(n_queries, seed=1)
    corpus = np.ascontiguousarray(corpus / np.linalg.norm(corpus, axis=1, keepdims=True), np.float32)
    queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), np.float32)
    return corpus, queries


def scanned(centroids: np.ndarray, sizes: np.ndarray, queries: np.ndarray, nprobe: int) -> float:
    """Mean share of the rows in the ``nprobe`` lists that score best against each query."""
    probed = centroid_index(centroids, "ip").search(queries, nprobe)[1]
    return float(sizes[probed].sum(axis=1).mean() / sizes.sum())


class old_lists:  # noqa: N801 - used as a context manager, named for what it gives
    """Inside the block, lists are trained and assigned as before issue 12's projected lists."""

    def __enter__(self) -> None:
        self.saved = _ivf.MIN_PROJECTED_LISTS
        _ivf.MIN_PROJECTED_LISTS = 1 << 30

    def __exit__(self, *_: object) -> None:
        _ivf.MIN_PROJECTED_LISTS = self.saved


def coverage_cost(
    centroids: np.ndarray, lists: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    """Per coverage: the fewest best lists holding that share of the queries' exact top 10, and their rows."""
    count = centroids.shape[0]
    sizes = np.bincount(lists, minlength=count)
    order = centroid_index(centroids, "ip").search(queries, count)[1]
    rank = np.empty_like(order)
    rank[np.arange(len(queries))[:, None], order] = np.arange(count)[None, :]
    ranks = np.sort(rank[np.arange(len(queries))[:, None], lists[truth].astype(np.int64)].ravel())
    out = {}
    for coverage in COVERAGES:
        nprobe = int(ranks[int(np.ceil(coverage * ranks.size - 1e-9)) - 1]) + 1
        out[f"coverage_{coverage}"] = {
            "nprobe": nprobe,
            "scanned_fraction": round(scanned(centroids, sizes, queries, nprobe), 4),
        }
    return out


def list_quality(
    corpus: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    sample: np.ndarray,
    counts: list[int],
    compare_old: bool,
) -> list[dict[str, Any]]:
    """Per list count (and with ``compare_old`` per way of making lists): cost and rows scanned per coverage."""
    out = []
    for count in counts:
        for kind in ("old", "projected") if compare_old else ("current",):
            with old_lists() if kind == "old" else contextlib.nullcontext():
                start = time.process_time()
                centroids = train_partitions(sample, count, "ip")
                kmeans_s = time.process_time() - start
                start = time.process_time()
                lists = assign_partitions(centroids, corpus, "ip")
                assign_s = time.process_time() - start
            nearest = assign_partitions(centroids, corpus, "ip", "flat")
            entry: dict[str, Any] = {
                "partitions": count,
                "lists": kind,
                "kmeans_cpu_s": round(kmeans_s, 2),
                "assign_cpu_us_per_row": round(assign_s / len(corpus) * 1e6, 2),
                # The k-means trains on a sample of fixed size: its seconds are microseconds per row at 1M.
                "us_per_row_at_1m": round(kmeans_s + assign_s / len(corpus) * 1e6, 2),
                "rows_in_nearest_centroids_list": round(float((lists == nearest).mean()), 4),
                "load": os.getloadavg()[0],
                **coverage_cost(centroids, lists, queries, truth),
            }
            print(json.dumps(entry), flush=True)
            out.append(entry)
    return out


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


def main(ns: argparse.Namespace) -> None:
    record = run_record(
        ns.n,
        384,
        ns.queries,
        K,
        quantization=ns.quantization,
        partitions=ns.partitions,
        adds=ns.adds,
        timed=ns.timed,
        old_lists=ns.old_lists,
        data=ns.data,
    )
    multipliers = tuple(ns.multipliers or MULTIPLIERS[ns.quantization])
    quantizer_type = QUANTIZERS[ns.quantization]
    corpus, queries = load(ns.data, ns.n, ns.queries)  # unit norm, as the store keeps cosine vectors
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
    counts = [int(c) for c in ns.lists.split(",")] if ns.lists else []
    quality = list_quality(corpus, queries, truth, sample, counts, ns.old_lists) if counts else []

    with tempfile.TemporaryDirectory(prefix="measure_ivf_") as tmp:
        full, full_add_s = build(Path(tmp) / "full", corpus, ns.adds, ns.quantization, {"partitions": 0})
        print(f"full store built in {full_add_s:.1f} s", flush=True)
        ivf, ivf_add_s = build(
            Path(tmp) / "ivf", corpus, ns.adds, ns.quantization, {"partitions": ns.partitions}
        )
        print(f"partitioned store built in {ivf_add_s:.1f} s", flush=True)
        stores = {"full": full, "ivf": ivf}
        old_add_s = None
        if ns.old_lists:
            with old_lists():
                stores["ivf old lists"], old_add_s = build(
                    Path(tmp) / "old", corpus, ns.adds, ns.quantization, {"partitions": ns.partitions}
                )
            print(f"partitioned store with the old lists built in {old_add_s:.1f} s", flush=True)
        if ns.adds > 1:  # the same adds merged into one segment: same quantizer, codes and lists
            default_policy = collection_module.MERGE_POLICY
            collection_module.MERGE_POLICY = ONE_SEGMENT
            try:
                stores["ivf merged"], _ = build(
                    Path(tmp) / "merged", corpus, ns.adds, ns.quantization, {"partitions": ns.partitions}
                )
            finally:
                collection_module.MERGE_POLICY = default_policy
        quantizer = ivf.snapshot.quantizer
        assert isinstance(quantizer, quantizer_type)
        first = {}
        for name, store in stores.items():
            start = time.perf_counter()
            store.search(queries[:1], K, rescore_multiplier=multipliers[0])
            first[name] = time.perf_counter() - start
        chosen = quantizer.nprobe  # chosen at training (_ivf.choose_nprobe): the store's default
        assert chosen is not None
        fractions = ns.nprobes or [max(1, ns.partitions // d) for d in (16, 8, 4, 2)]
        nprobes = sorted({*fractions, chosen})
        old_chosen = None
        if "ivf old lists" in stores:
            old_quantizer = stores["ivf old lists"].snapshot.quantizer
            assert isinstance(old_quantizer, quantizer_type)
            assert old_quantizer.partition_projection_ is None
            old_chosen = old_quantizer.nprobe
            nprobes = sorted({*nprobes, old_chosen})
        configs: list[tuple[str, Collection | None, int, int | None]] = [("IndexFlatIP", None, 0, None)]
        configs += [("full fast scan", full, m, None) for m in multipliers]
        configs += [("partitioned", ivf, m, p) for p in nprobes for m in multipliers]
        if "ivf old lists" in stores:
            configs += [
                ("partitioned, old lists", stores["ivf old lists"], m, p)
                for p in nprobes
                for m in multipliers
            ]
        if "ivf merged" in stores:
            merged = stores["ivf merged"]
            merged_quantizer = merged.snapshot.quantizer
            assert isinstance(merged_quantizer, quantizer_type)
            assert merged_quantizer.nprobe == chosen
            configs += [("partitioned, one segment", merged, m, chosen) for m in multipliers]

        def list_sizes(store: Collection) -> tuple[np.ndarray, np.ndarray]:
            """The store's lists' centroids and rows per list."""
            lists = [v.segment.stored_codes.lists for v in store.snapshot.views]  # type: ignore[union-attr]
            store_quantizer = store.snapshot.quantizer
            assert isinstance(store_quantizer, quantizer_type)
            sizes = np.bincount(np.concatenate(lists), minlength=ns.partitions)  # type: ignore[arg-type]
            return store_quantizer.partition_centroids_, sizes

        sizes_of = {id(store): list_sizes(store) for name, store in stores.items() if name != "full"}

        results = []
        for label, store, m, nprobe in configs:
            if store is None:
                results.append({"method": label, "recall_at_10": 1.0})
                continue
            store_quantizer = store.snapshot.quantizer
            if nprobe is not None:
                store_quantizer.nprobe = nprobe  # type: ignore[union-attr]
            found = ids_of(store, queries, m)
            results.append(
                {
                    "method": label,
                    "segments": len(store.snapshot.views),
                    "nprobe": nprobe,
                    "scanned_fraction": None
                    if nprobe is None
                    else round(scanned(*sizes_of[id(store)], queries, nprobe), 3),
                    "rescore_multiplier": m,
                    "recall_at_10": recall(found, truth),
                }
            )

        times: list[list[float]] = [[] for _ in configs]
        for qi in range(ns.timed):
            q = queries[qi % ns.queries : qi % ns.queries + 1]
            for ci in np.roll(np.arange(len(configs)), qi).tolist():  # rotating order
                _, store, m, nprobe = configs[ci]
                if nprobe is not None and store is not None:
                    store.snapshot.quantizer.nprobe = nprobe  # type: ignore[union-attr]
                start = time.perf_counter()
                if store is None:
                    flat.search(q, K)
                else:
                    store.search(q, K, rescore_multiplier=m)
                times[ci].append(time.perf_counter() - start)
        flat_ms = float(np.median(times[0]) * 1e3)
        for result, spent in zip(results, times, strict=True):
            result["p50_ms"] = round(float(np.median(spent) * 1e3), 3)
            result["speedup_vs_flat"] = round(flat_ms / result["p50_ms"], 2)
            result["recall_at_10"] = round(result["recall_at_10"], 4)

    best = {}
    for result in results[1:]:
        key = (
            result["method"] if result["nprobe"] is None else f"{result['method']} nprobe={result['nprobe']}"
        )
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
            "add_partitioned_old_lists_s": None if old_add_s is None else round(old_add_s, 1),
            "first_query_s": {name: round(s, 3) for name, s in first.items()},
        },
        "chosen_nprobe": chosen,
        "chosen_nprobe_old_lists": old_chosen,
        "list_quality": quality,
        "results": results,
        "smallest_multiplier_reaching_target": best,
    }
    path = Path(ns.out)
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
            f" scanned={result.get('scanned_fraction')!s:>5}"
            f" recall={result['recall_at_10']:.4f} p50={result['p50_ms']:8.3f} ms x{result['speedup_vs_flat']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timed", type=int, default=100, help="single queries timed per configuration")
    parser.add_argument("--partitions", type=int, default=1024)
    parser.add_argument("--adds", type=int, default=1)
    parser.add_argument("--data", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--lists", default="", help="list counts whose quality to measure, e.g. 256,512,1024")
    parser.add_argument("--quantization", choices=sorted(QUANTIZERS), default="binary")
    parser.add_argument(
        "--old-lists", action="store_true", help="also measure the lists before issue 12's projected ones"
    )
    parser.add_argument("--multipliers", type=int, nargs="+", help="default: per quantization")
    parser.add_argument("--nprobes", type=int, nargs="+", help="default: 1/16, 1/8, 1/4, 1/2 of the lists")
    parser.add_argument("--out", default=str(OUT))
    main(parser.parse_args())
