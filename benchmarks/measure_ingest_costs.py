"""The fixed costs of ingest (issue 12: ingest at 1M within 1.5x of the uncalibrated build), two versions side by side.

A default binary store built by ten adds of 100k took 1.76x the same build uncalibrated with a
full scan (session 10): the add that crosses ``_partitions.AUTO_PARTITION_ROWS`` trains 1024
lists, chooses ``nprobe``, assigns every stored row and calibrates; later calibrations run an
exact pass over every row. This script measures those parts for two versions of the library in
one run, each in its own child process (``PYTHONPATH`` set to its copy), alternating
``--repeats`` times so load changes hit both alike:

* **training** (``--data synthetic real``; real: the shared sentence embeddings, chunks 00-03,
  199k rows and the held-out queries): ``with_partitions`` of a fitted binary quantizer on a
  100k-row sample of ``--n`` rows (the
  store's ``TRAIN_SAMPLE``), with its ``train_partitions`` and ``choose_nprobe`` timed apart;
  assigning all ``--n`` rows their lists; and the lists' quality on ``--queries`` held-out
  queries: the chosen ``nprobe``, the share of the queries' exact top 10 its lists hold, the
  rows they scan, and the rows scanned by the fewest lists holding 0.997 of the top 10.
  ``--seeds`` repeats the training with other k-means seeds (quality only: k-means randomness).
* **exact**: the exact pass of a calibration (``search.engine.exact_search``) of 200 stored rows
  as queries (k = 11) over ``--exact-sizes`` float16 rows in 100k-row segments.
* **store_exact**: the exact pass of a calibration on default stores built by adds of ``--batch``
  rows (``--store-sizes``; built once, by this checkout, before the children): 200 sampled rows
  as queries (``calibration.exact_keys``, k = 10, so 11 rows with the own row dropped), CPU,
  wall and system CPU seconds; with a digest of the exact hits' keys and float32 scores, which
  must be the same for both versions (``store_exact_identical``).
* **crossing**: a default binary store of ``--n / 2`` rows gets one more add of ``--n / 2``
  (with ``bench_search``'s metadata), crossing the threshold, against the same add to a store
  with ``partitions=0`` and ``rescore_multiplier=16`` (no lists, no calibration): wall time of
  both, with the crossing add's parts (reading the training sample back, ``with_partitions``,
  assigning the stored rows, calibration and its exact pass).

* **build** (``--build-rows``, ``--batch``): a default binary store and a fixed one
  (``rescore_multiplier=16``, ``partitions=0``) built by adds of ``--batch`` rows, alternating
  add by add: each add's wall, CPU and system CPU seconds with its parts (``BUILD_PARTS``:
  the crossing's sample read, training and rewrite; encoding and list assignment of new rows;
  merges; calibration and its exact pass; the commit), the totals, the default's extra and the
  ratio. At 400k rows the crossing and the early calibrations weigh more than at 1M: use the
  parts to estimate 1M, not the ratio. System CPU is mostly the kernel's: large fresh
  allocations faulted in as transparent huge pages (compaction stalls) vary with the machine's
  memory state.

* **merge** (``--merge-rows``, ``--merge-parts``, ``--merge-repeats``): ``merge_segments`` of
  ``--merge-parts`` grouped parts of ``--merge-rows`` rows each (seeded: float16 vectors, 48-byte
  codes, lists of 1024, ``bench_search``'s metadata), written as segment files and memory-mapped,
  each read as a store's merge reads it (``collection._live_table``): user and system CPU
  seconds, wall seconds and minor page faults of each of ``--merge-repeats`` merges in one
  process (the first one faults in fresh pages, later ones may reuse freed memory), and the
  merged table's checksum (both versions must give the same).

Times are wall and CPU seconds on one thread (``OMP_NUM_THREADS=1``); the summary keeps each
version's least over the repeats and their ratio. The machine is shared, so the load average is
recorded with every child; CPU seconds move less with it than wall seconds. Compare the two
versions only within a run.

Run: ``python benchmarks/measure_ingest_costs.py [--baseline main] [--n 200000] [--repeats 2]``
-> ``benchmarks/results/ingest_costs.json``. ``--baseline`` is a git revision of this repository
(its ``langchain_vq`` is extracted with ``git archive`` to a temporary directory). Committed:
``ingest_costs.json`` (the defaults against 6a62542, session 10's main) and
``ingest_costs_seeds.json`` (``--parts training --seeds 1234 1 2 --repeats 1``: the lists'
quality over three k-means seeds), run at the same time (load 3-16: the times of both are
noisy; compare ratios, CPU seconds first); ``ingest_costs_build.json`` (``--parts build crossing
--repeats 2`` against session 11's main, 3b0a9ed: the builds to 400k add by add; load 3 -> 30)
and ``ingest_costs_build_2.json`` (``--parts build``, load 3 -> 18): at such loads the parts
move by up to 2x from run to run, mostly system CPU (fresh pages zeroed), so neither run
decides a change of less than that; compare parts over both, and in isolation. Session 13:
``ingest_costs_store_exact.json`` (``--parts store_exact --repeats 3`` against main 3d28053,
load 1.3-1.7: the exact pass in 4k-row pieces with float16 widened by bit shifts, 0.91x, hits
identical) and ``ingest_costs_build_1m_exact.json`` (``--parts build --build-rows 1000000
--repeats 3``, load 1.9-2.1: the default's calibration 5.36 -> 4.82 s CPU, medians; the same
multiplier after every add; whole builds moved 18-24 s from repeat to repeat in both).
Also ``ingest_costs_merge.json`` (``--parts merge --repeats 4 --merge-repeats 3`` against 3d28053,
session 13's main, load 1.4-1.9): the first merge in a process, 0.42-0.68 s wall (system CPU
0.36-0.62 s) with Arrow's take of the concatenated parts, 0.084-0.086 s (0.02 s) with
``storage.rows.take_rows``; later merges, which reuse freed memory, 0.06-0.10 s both; the same
checksum.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))
#: Rows the store samples to train (``collection.TRAIN_SAMPLE``).
SAMPLE_ROWS = 100_000
LISTS = 1024
#: Rows per segment in the exact pass, and sampled rows used as its queries (a calibration's).
SEGMENT_ROWS = 100_000
EXACT_QUERIES = 200
COVERAGE = 0.997
#: Rows of the shared sentence embeddings (chunks 00-03).
REAL_ROWS = 200_000


# -- the child: one version's measurements ------------------------------------------------------------
class Timers:
    """Wall and CPU seconds of calls and wrapped functions, summed per name (the crossing add's parts)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._wrapped: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Time every call of ``owner.attribute`` (a module's function or a class's method) as ``name``."""
        inner = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            return self.timed(name, inner, *args, **kwargs)

        self._wrapped.append((owner, attribute, inner))
        setattr(owner, attribute, timed)

    def timed(self, name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``, its wall and CPU seconds counted as ``name_s`` and ``name_cpu_s``."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            for key, value in (
                (f"{name}_s", time.perf_counter() - start),
                (f"{name}_cpu_s", time.process_time() - cpu),
            ):
                self.seconds[key] = self.seconds.get(key, 0.0) + value

    def rounded(self) -> dict[str, float]:
        """The seconds so far, to the millisecond."""
        return {key: round(value, 3) for key, value in self.seconds.items()}

    def restore(self) -> None:
        """Put the wrapped functions back."""
        for owner, attribute, inner in reversed(self._wrapped):
            setattr(owner, attribute, inner)
        self._wrapped.clear()


def load(data: str, n: int, n_queries: int) -> tuple[Any, Any]:
    """Unit-norm corpus ``[n, 384]`` and held-out queries: synthetic (seeds 0 and 1) or real sentences."""
    import numpy as np

    from langchain_vq.synthetic import synthetic_embeddings

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


def list_quality(centroids: Any, lists: Any, queries: Any, truth: Any, nprobe: int) -> dict[str, float]:
    """At ``nprobe``: neighbours held and rows scanned; and the rows scanned for :data:`COVERAGE`."""
    import numpy as np

    count = centroids.shape[0]
    sizes = np.bincount(lists, minlength=count)
    order = np.argsort(-(queries @ centroids.T), axis=1)  # each query's lists, best first
    rank = np.empty_like(order)
    rank[np.arange(len(queries))[:, None], order] = np.arange(count)[None, :]
    ranks = rank[np.arange(len(queries))[:, None], lists[truth].astype(np.int64)]
    needed = np.sort(ranks.ravel())[int(np.ceil(COVERAGE * ranks.size - 1e-9)) - 1] + 1
    return {
        "held_at_chosen": round(float((ranks < nprobe).mean()), 4),
        "scanned_at_chosen": round(float(sizes[order[:, :nprobe]].sum(axis=1).mean() / sizes.sum()), 4),
        f"nprobe_for_{COVERAGE}": int(needed),
        f"scanned_for_{COVERAGE}": round(float(sizes[order[:, :needed]].sum(axis=1).mean() / sizes.sum()), 4),
    }


def training(data: str, n: int, n_queries: int, seeds: list[int]) -> dict[str, Any]:
    """``with_partitions`` on the store's sample (timed in parts), assignment, and the lists' quality."""
    import faiss
    import numpy as np

    from langchain_vq.quantization import BinaryQuantizer, _ivf, _partitions

    if data == "real":
        n = min(n, REAL_ROWS - n_queries)  # the shared set's rows, the queries held out
    corpus, queries = load(data, n, n_queries)
    sample = corpus[np.sort(np.random.default_rng(0).choice(n, min(n, SAMPLE_ROWS), replace=False))]
    truth = faiss.knn(queries, corpus, 10, faiss.METRIC_INNER_PRODUCT)[1]
    plain = BinaryQuantizer(corpus.shape[1]).fit(sample)
    runs = []
    default_seed = _ivf._KMEANS_SEED  # noqa: SLF001 - k-means randomness: the seed varied
    for seed in seeds:
        _ivf._KMEANS_SEED = seed  # noqa: SLF001
        timers = Timers()
        timers.wrap(_partitions, "train_partitions", "train_partitions")
        timers.wrap(_partitions, "choose_nprobe", "choose_nprobe")
        quantizer = timers.timed("with_partitions", plain.with_partitions, sample, LISTS)
        lists = timers.timed("assign_rows", quantizer.assign, corpus)
        timers.restore()
        assert quantizer.nprobe is not None
        runs.append(
            {
                "kmeans_seed": seed,
                **timers.rounded(),
                "nprobe": quantizer.nprobe,
                **list_quality(quantizer.partition_centroids_, lists, queries, truth, quantizer.nprobe),
                "load": round(os.getloadavg()[0], 2),
            }
        )
    _ivf._KMEANS_SEED = default_seed  # noqa: SLF001
    return {"data": data, "n": n, "queries": n_queries, "runs": runs}


def exact(sizes: list[int]) -> list[dict[str, Any]]:
    """The exact pass of a calibration over float16 segments of :data:`SEGMENT_ROWS` rows."""
    import numpy as np

    from langchain_vq.quantization.precision import VectorCodec
    from langchain_vq.search.engine import exact_search
    from langchain_vq.synthetic import synthetic_embeddings

    codec = VectorCodec("float16", 384)
    out = []
    for size in sizes:
        rows = codec.encode(synthetic_embeddings(size, seed=0))
        queries = codec.decode(
            rows[np.sort(np.random.default_rng(0).choice(size, EXACT_QUERIES, replace=False))]
        )
        timers = Timers()
        for lo in range(0, size, SEGMENT_ROWS):
            block = rows[lo : lo + SEGMENT_ROWS]
            timers.timed("exact_pass", exact_search, block, queries, 11, "ip", None, codec.decode)
        out.append({"rows": size, **timers.rounded(), "load": round(os.getloadavg()[0], 2)})
    return out


def build_stores(root: Path, sizes: list[int], batch: int) -> None:
    """Default stores of ``sizes`` rows under ``root`` (one directory each), built by adds of ``batch``."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    vectors = synthetic_embeddings_cached(max(sizes))
    for size in sizes:
        store = VQVectorStore(DeterministicFakeEmbedding(size=vectors.shape[1]), path=root / str(size))
        for lo in range(0, size, batch):
            hi = min(size, lo + batch)
            store.add_embeddings(
                [f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], ids=[str(i) for i in range(lo, hi)]
            )


def store_exact(root: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """The exact pass of a calibration (200 sampled rows, k = 10) on each store :func:`build_stores` made."""
    import hashlib

    import numpy as np
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore
    from langchain_vq.calibration import exact_keys, query_set
    from langchain_vq.search.engine import search_segments

    out = []
    for size in sizes:
        collection = VQVectorStore(DeterministicFakeEmbedding(size=384), path=root / str(size)).collection
        snapshot = collection.snapshot
        qs = query_set(collection, None, EXACT_QUERIES, 0, snapshot=snapshot)
        timers = Timers()
        before = resource.getrusage(resource.RUSAGE_SELF)
        keys = timers.timed("exact_pass", exact_keys, collection, qs, 10, snapshot=snapshot)
        after = resource.getrusage(resource.RUSAGE_SELF)
        # Untimed: the hits behind those keys, scores included, to compare the versions bit for bit.
        views = list(snapshot.views)
        hits = search_segments(views, qs.vectors, 11, kind=collection.kind, quantizer=None)
        digest = hashlib.sha256(np.asarray(keys, dtype=np.int64).tobytes())
        for array in (hits.scores, hits.rows, hits.segments):
            digest.update(np.ascontiguousarray(array).tobytes())
        out.append(
            {
                "rows": size,
                "segments": [view.segment.rows for view in views],
                **timers.rounded(),
                "exact_pass_system_cpu_s": round(after.ru_stime - before.ru_stime, 3),
                "digest": digest.hexdigest(),
                "load": round(os.getloadavg()[0], 2),
            }
        )
    return out


def crossing(n: int) -> dict[str, Any]:
    """The add of ``n / 2`` rows to a store of ``n / 2``: default (crossing) against uncalibrated full scan."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from benchmarks.bench_search import row_metadata
    from langchain_vq import VQVectorStore, calibration, collection
    from langchain_vq.synthetic import synthetic_embeddings

    vectors = synthetic_embeddings(n, seed=0)
    half = n // 2
    out: dict[str, Any] = {"rows_before": half, "rows_added": n - half}
    settings = {
        "default": {"quantization": "binary"},
        "uncalibrated_full_scan": {
            "quantization": "binary",
            "rescore_multiplier": 16,
            "quantizer_options": {"partitions": 0},
        },
    }
    for name, options in settings.items():
        root = Path(tempfile.mkdtemp(prefix="ingest-costs-"))
        try:
            store = VQVectorStore(DeterministicFakeEmbedding(size=vectors.shape[1]), path=root, **options)

            def add(lo: int, hi: int, store: Any = store) -> None:
                ids = [str(i) for i in range(lo, hi)]
                metadatas = [row_metadata(i) for i in range(lo, hi)]
                store.add_embeddings([f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], metadatas, ids)

            add(0, half)
            timers = Timers()
            timers.wrap(collection, "_sample_vectors", "read_sample")
            timers.wrap(collection.Collection, "_auto_partitioned", "with_partitions")
            timers.wrap(collection, "_with_assigned_lists", "assign_and_rewrite_stored")
            timers.wrap(VQVectorStore, "_calibration_settings", "calibration")
            timers.wrap(calibration, "exact_keys", "calibration_exact_pass")
            timers.timed("add", add, half, n)
            timers.restore()
            quantizer = store.collection.snapshot.quantizer
            out[name] = {
                **timers.rounded(),
                "partitions": getattr(quantizer, "partitions", None),
                "nprobe": getattr(quantizer, "nprobe", None),
                "multiplier": store.rescore_multiplier,
                "load": round(os.getloadavg()[0], 2),
            }
            del store
        finally:
            shutil.rmtree(root, ignore_errors=True)
    for key in ("add_s", "add_cpu_s"):
        out[f"extra_{key}"] = round(out["default"][key] - out["uncalibrated_full_scan"][key], 3)
    return out


#: The parts of a build's adds timed apart (``build``): module or class, attribute, name.
BUILD_PARTS = (
    ("collection", "_sample_vectors", "read_sample"),
    ("Collection", "_auto_partitioned", "with_partitions"),
    ("collection", "_with_assigned_lists", "assign_and_rewrite_stored"),
    ("collection", "_encoded", "encode_new_rows"),
    ("PartitionedQuantizer", "assign", "assign_lists"),
    ("collection", "_apply_merge_policy", "merges"),
    ("VQVectorStore", "_calibration_settings", "calibration"),
    ("calibration", "exact_keys", "calibration_exact_pass"),
    ("Collection", "_publish", "publish"),
)


def build(n: int, batch: int) -> dict[str, Any]:
    """A default store and a fixed one (m=16, no lists) built by adds of ``batch`` up to ``n``, per add.

    Each add's wall and CPU seconds, with the parts of :data:`BUILD_PARTS`; the default store's
    extra over the fixed one is what issue 12 caps (at most 0.5x the fixed build at 1M). The two
    builds alternate add by add (default first), so load changes hit both alike.
    """
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from benchmarks.bench_search import row_metadata
    from langchain_vq import VQVectorStore, calibration, collection
    from langchain_vq.quantization._partitions import PartitionedQuantizer

    owners = {
        "collection": collection,
        "Collection": collection.Collection,
        "VQVectorStore": VQVectorStore,
        "calibration": calibration,
        "PartitionedQuantizer": PartitionedQuantizer,
    }
    vectors = synthetic_embeddings_cached(n)
    settings = {
        "default": {"quantization": "binary"},
        "fixed_full_scan": {
            "quantization": "binary",
            "rescore_multiplier": 16,
            "quantizer_options": {"partitions": 0},
        },
    }
    roots = {name: Path(tempfile.mkdtemp(prefix="ingest-build-")) for name in settings}
    out: dict[str, Any] = {"rows": n, "batch": batch, **{name: [] for name in settings}}
    try:
        stores = {
            name: VQVectorStore(
                DeterministicFakeEmbedding(size=vectors.shape[1]), path=roots[name], **options
            )
            for name, options in settings.items()
        }
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            ids = [str(i) for i in range(lo, hi)]
            metadatas = [row_metadata(i) for i in range(lo, hi)]
            texts = [f"doc {i}" for i in range(lo, hi)]
            for name, store in stores.items():
                timers = Timers()
                for owner, attribute, part in BUILD_PARTS:
                    if hasattr(owners[owner], attribute):  # a baseline may lack a part
                        timers.wrap(owners[owner], attribute, part)
                before = resource.getrusage(resource.RUSAGE_SELF)
                timers.timed("add", store.add_embeddings, texts, vectors[lo:hi], metadatas, ids)
                after = resource.getrusage(resource.RUSAGE_SELF)
                timers.restore()
                out[name].append(
                    {
                        "rows": hi,
                        **timers.rounded(),
                        "add_system_cpu_s": round(after.ru_stime - before.ru_stime, 3),
                        "multiplier": store.rescore_multiplier,
                        "load": round(os.getloadavg()[0], 2),
                    }
                )
        del stores
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    for unit in ("s", "cpu_s", "system_cpu_s"):
        totals = {name: sum(a.get(f"add_{unit}", 0.0) for a in out[name]) for name in settings}
        out[f"total_add_{unit}"] = {name: round(total, 3) for name, total in totals.items()}
        if totals["fixed_full_scan"] > 0:
            out[f"ratio_{unit}"] = round(totals["default"] / totals["fixed_full_scan"], 3)
        out[f"extra_add_{unit}"] = round(totals["default"] - totals["fixed_full_scan"], 3)
    for unit in ("s", "cpu_s"):  # each part summed over the default build's adds
        parts = {part for _, _, part in BUILD_PARTS}
        out[f"default_parts_{unit}"] = {
            part: round(sum(a.get(f"{part}_{unit}", 0.0) for a in out["default"]), 3)
            for part in sorted(parts)
        }
    return out


def merge(rows: int, parts: int, repeats: int) -> dict[str, Any]:
    """``merge_segments`` of ``parts`` grouped segment files of ``rows`` rows, ``repeats`` times."""
    import numpy as np

    from benchmarks.bench_search import row_metadata
    from langchain_vq.collection import SegmentView, _live_table
    from langchain_vq.storage.segment import (
        Segment,
        build_segment,
        checksum,
        merge_segments,
        read_arrow_file,
        serialize_chunks,
    )

    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="ingest-merge-"))
    out: dict[str, Any] = {"rows": rows, "parts": parts, "runs": []}
    try:
        segments = []
        for part in range(parts):
            lo, hi = part * rows, (part + 1) * rows
            built = build_segment(
                f"part{part}",
                [str(i) for i in range(lo, hi)],
                [f"doc {i}" for i in range(lo, hi)],
                [row_metadata(i) for i in range(lo, hi)],
                rng.standard_normal((rows, 384)).astype(np.float16),
                rng.integers(0, 256, (rows, 48), dtype=np.uint8),
                lists=rng.integers(0, LISTS, rows).astype(np.uint16),
            )
            path = root / f"part{part}.arrow"
            with path.open("wb") as fh:
                for chunk in serialize_chunks(built.table):
                    fh.write(chunk)
            segments.append(Segment(built.name, read_arrow_file(path, None, None), path=str(path)))
            del built
        merged = None
        for _ in range(repeats):
            del merged
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            read = [Segment(s.name, _live_table(SegmentView(s), drop=())) for s in segments]
            merged = merge_segments("merged", read)
            after = resource.getrusage(resource.RUSAGE_SELF)
            out["runs"].append(
                {
                    "merge_s": round(time.perf_counter() - start, 3),
                    "merge_user_cpu_s": round(after.ru_utime - before.ru_utime, 3),
                    "merge_system_cpu_s": round(after.ru_stime - before.ru_stime, 3),
                    "merge_minor_faults": after.ru_minflt - before.ru_minflt,
                    "load": round(os.getloadavg()[0], 2),
                }
            )
        assert merged is not None
        out["merged_rows"] = merged.rows
        out["merged_checksum"] = checksum(serialize_chunks(merged.table))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for key in ("merge_s", "merge_user_cpu_s", "merge_system_cpu_s"):
        out[f"first_{key}"] = out["runs"][0][key]
        out[f"median_{key}"] = round(float(np.median([run[key] for run in out["runs"]])), 3)
    return out


def synthetic_embeddings_cached(n: int) -> Any:
    """``synthetic_embeddings(n, seed=0)`` (the default-recall benchmark's corpus)."""
    from langchain_vq.synthetic import synthetic_embeddings

    return synthetic_embeddings(n, seed=0)


def child(ns: argparse.Namespace) -> None:
    """Measure the version on ``sys.path`` (set by the parent) and print one JSON object."""
    import langchain_vq

    result: dict[str, Any] = {
        "library": str(Path(langchain_vq.__file__).parent),
        "load_start": os.getloadavg(),
    }
    if "training" in ns.parts:
        result["training"] = [training(d, ns.n, ns.queries, ns.seeds) for d in ns.data]
    if "exact" in ns.parts:
        result["exact"] = exact(ns.exact_sizes)
    if "build_stores" in ns.parts:
        build_stores(ns.stores_dir, ns.store_sizes, ns.batch)
    if "store_exact" in ns.parts:
        result["store_exact"] = store_exact(ns.stores_dir, ns.store_sizes)
    if "crossing" in ns.parts:
        result["crossing"] = crossing(ns.n)
    if "build" in ns.parts:
        result["build"] = build(ns.build_rows, ns.batch)
    if "merge" in ns.parts:
        result["merge"] = merge(ns.merge_rows, ns.merge_parts, ns.merge_repeats)
    print(json.dumps(result), flush=True)


# -- the parent: both versions, alternating ---------------------------------------------------------
def run_child(root: Path, ns: argparse.Namespace, parts: list[str] | None = None) -> dict[str, Any]:
    """This script's child mode with ``root``'s ``langchain_vq`` first on the path (``parts``: ns's)."""
    args = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--n",
        str(ns.n),
        "--queries",
        str(ns.queries),
    ]
    args += ["--data", *ns.data, "--parts", *(parts or ns.parts), "--seeds", *map(str, ns.seeds)]
    args += ["--exact-sizes", *map(str, ns.exact_sizes)]
    args += ["--store-sizes", *map(str, ns.store_sizes), "--stores-dir", str(ns.stores_dir)]
    args += ["--build-rows", str(ns.build_rows), "--batch", str(ns.batch)]
    args += ["--merge-rows", str(ns.merge_rows), "--merge-parts", str(ns.merge_parts)]
    args += ["--merge-repeats", str(ns.merge_repeats)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child for {root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per part, the fewest and the median CPU and wall seconds over the repeats of each version, and ratios.

    The least over repeats: on a shared machine other processes only ever add time.
    """
    first = results["current"][0]
    paths: dict[str, tuple[Any, ...]] = {}  # name -> keys into a child's result
    for unit in ("cpu_s", "s"):
        for i, entry in enumerate(first.get("training", [])):
            for part in ("with_partitions", "train_partitions", "choose_nprobe", "assign_rows"):
                name = (
                    f"{entry['data']}: {part} ({entry['n']} rows)"
                    if part == "assign_rows"
                    else f"{entry['data']}: {part}"
                )
                paths[f"{name} {unit}"] = ("training", i, "runs", 0, f"{part}_{unit}")
        for i, entry in enumerate(first.get("exact", [])):
            paths[f"exact pass over {entry['rows']} rows {unit}"] = ("exact", i, f"exact_pass_{unit}")
        for i, entry in enumerate(first.get("store_exact", [])):
            name = f"exact pass of the {entry['rows']}-row store"
            paths[f"{name} {unit}"] = ("store_exact", i, f"exact_pass_{unit}")
            if unit == "s":
                paths[f"{name} system_cpu_s"] = ("store_exact", i, "exact_pass_system_cpu_s")
        if "crossing" in first:
            parts = ("add", "read_sample", "with_partitions", "assign_and_rewrite_stored", "calibration")
            for part in (*parts, "calibration_exact_pass"):
                paths[f"crossing add: {part} {unit}"] = ("crossing", "default", f"{part}_{unit}")
            paths[f"crossing add: uncalibrated add {unit}"] = (
                "crossing",
                "uncalibrated_full_scan",
                f"add_{unit}",
            )
            paths[f"crossing add: extra over uncalibrated {unit}"] = ("crossing", f"extra_add_{unit}")
        if "build" in first:
            rows = first["build"]["rows"]
            for side in ("default", "fixed_full_scan"):
                paths[f"build to {rows}: {side} adds {unit}"] = ("build", f"total_add_{unit}", side)
            paths[f"build to {rows}: extra over fixed {unit}"] = ("build", f"extra_add_{unit}")
            paths[f"build to {rows}: ratio {unit}"] = ("build", f"ratio_{unit}")
            for part in sorted({part for _, _, part in BUILD_PARTS}):
                paths[f"build to {rows}: default's {part} {unit}"] = ("build", f"default_parts_{unit}", part)
    if "merge" in first:
        size = f"{first['merge']['parts']} x {first['merge']['rows']}"
        for key in ("merge_s", "merge_user_cpu_s", "merge_system_cpu_s"):
            for which in ("first", "median"):
                paths[f"merge of {size} rows: {which} {key}"] = ("merge", f"{which}_{key}")

    def values_of(version: str, path: tuple[Any, ...]) -> list[float]:
        values = []
        for result in results[version]:
            value: Any = result
            for key in path:
                value = value.get(key) if isinstance(value, dict) else value[key]
                if value is None:
                    break
            if value is not None:
                values.append(value)
        return values

    out = {}
    for name, path in paths.items():
        base, now = values_of("baseline", path), values_of("current", path)
        least_base, least_now = (round(min(v), 3) if v else None for v in (base, now))
        median_base, median_now = (round(statistics.median(v), 3) if v else None for v in (base, now))
        out[name] = {
            "baseline": least_base,
            "current": least_now,
            "ratio": round(least_now / least_base, 3) if least_base and least_now else None,
            "baseline_median": median_base,
            "current_median": median_now,
            "median_ratio": round(median_now / median_base, 3) if median_base and median_now else None,
        }
    return out


def main(ns: argparse.Namespace) -> None:
    sys.path.append(str(REPO))  # appended: a child's PYTHONPATH must come first
    from benchmarks._common import hardware

    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "load_start": os.getloadavg(),
        "baseline": ns.baseline,
        "current": subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "config": {
            "n": ns.n,
            "queries": ns.queries,
            "data": ns.data,
            "parts": ns.parts,
            "seeds": ns.seeds,
            "exact_sizes": ns.exact_sizes,
            "repeats": ns.repeats,
            "sample_rows": SAMPLE_ROWS,
            "lists": LISTS,
            "build_rows": ns.build_rows,
            "batch": ns.batch,
            "merge_rows": ns.merge_rows,
            "merge_parts": ns.merge_parts,
            "merge_repeats": ns.merge_repeats,
        },
        "hardware": hardware(),
    }
    base_root = Path(tempfile.mkdtemp(prefix="ingest-baseline-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ns.baseline, "langchain_vq"],  # noqa: S607
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(base_root)], input=archive.stdout, check=True)  # noqa: S607
        if "store_exact" in ns.parts:  # the stores both versions search, built once by this checkout
            ns.stores_dir = Path(tempfile.mkdtemp(prefix="ingest-stores-"))
            run_child(REPO, ns, ["build_stores"])
        results: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
        for repeat in range(ns.repeats):
            order = ("baseline", "current") if repeat % 2 == 0 else ("current", "baseline")
            for version in order:
                result = run_child(base_root if version == "baseline" else REPO, ns)
                result["repeat"] = repeat
                results[version].append(result)
                print(f"{version} (repeat {repeat}): {json.dumps(result)}", flush=True)
    finally:
        shutil.rmtree(base_root, ignore_errors=True)
        if ns.stores_dir is not None:
            shutil.rmtree(ns.stores_dir, ignore_errors=True)
    record["load_end"] = os.getloadavg()
    record["summary"] = summary(results)
    if "store_exact" in ns.parts:  # every child's hits of each store, keys and scores, alike
        digests = [{e["rows"]: e["digest"] for e in r["store_exact"]} for v in results.values() for r in v]
        record["store_exact_identical"] = all(d == digests[0] for d in digests)
    record["results"] = results
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["summary"], indent=1))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision measured against this checkout")
    parser.add_argument(
        "--n", type=int, default=200_000, help="store rows at the crossing (and for training)"
    )
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries for the lists' quality")
    parser.add_argument("--data", nargs="+", default=["synthetic", "real"], choices=["synthetic", "real"])
    parser.add_argument("--parts", nargs="+", default=["training", "exact", "crossing"])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1234], help="k-means seeds (1234: the library's)"
    )
    parser.add_argument("--exact-sizes", type=int, nargs="+", default=[200_000, 400_000])
    parser.add_argument(
        "--store-sizes",
        type=int,
        nargs="+",
        default=[400_000, 800_000],
        help="rows of the stores (store_exact)",
    )
    parser.add_argument("--stores-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--build-rows", type=int, default=400_000, help="rows of the two builds compared add by add (build)"
    )
    parser.add_argument("--batch", type=int, default=100_000, help="rows per add of the builds (build)")
    parser.add_argument("--merge-rows", type=int, default=100_000, help="rows per part merged (merge)")
    parser.add_argument("--merge-parts", type=int, default=4, help="parts merged (merge)")
    parser.add_argument("--merge-repeats", type=int, default=3, help="merges per child (merge)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each version")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest_costs.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    if args.child:
        child(args)  # PYTHONPATH: the measured version's langchain_vq first, then this checkout (benchmarks)
    else:
        main(args)
