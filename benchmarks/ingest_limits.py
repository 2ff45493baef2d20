"""Whether ingest at 1M can cost at most 1.5x the uncalibrated build (issue 12), and what would reach it.

The default binary store calibrates (recall@10 0.99) in the commits of its adds and keeps 1024
inverted-file lists from 200k rows; the "fixed" store (``rescore_multiplier=16``,
``partitions=0``) does neither. Measured on one thread, seeded, ``--n`` synthetic rows:

1. **builds**: both stores built by adds of 100k, alternating (fixed, default, default, fixed,
   ...), inputs made before the timer: wall and CPU seconds per add and in total, medians, the
   ratio of the medians.
2. **floor**: the kernels any calibrated, partitioned default must run, with the library's own
   functions on the same data (CPU seconds, medians): (a) assigning every row its list with the
   store's centroids and axes; (b) training the lists once and ``choose_nprobe``; (c) the exact
   top 10 of the calibration's 200 queries in float32, over the N rows once and over the rows
   today's schedule scans; (d) one calibration's ranked code scans
   (``Collection.candidate_keys``) on the built store. Their multiply-adds, against this core's
   matrix-product rate, show how near its peak they run. Floor ratio: (fixed + a + b + c at N +
   d at N) / fixed; today's schedule: c over every calibration's rows, d at every calibration.
3. **variants**: the cost (not the quality) of 100 queries instead of 200, 32 projected axes
   instead of 64, 512 lists instead of 1024, calibrating at 4x growth instead of 2x. Their
   effect on recall and query speed is NOT measured here.

Run: ``python benchmarks/ingest_limits.py [--n 1000000] [--repeat 3]`` ->
``results/ingest_limits.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import faiss
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import run_record  # noqa: E402
from benchmarks.bench_search import row_metadata  # noqa: E402
from langchain_vq import VQVectorStore  # noqa: E402
from langchain_vq.calibration import (  # noqa: E402
    DEFAULT_K,
    DEFAULT_SAMPLE,
    RANKED_REACH,
    RECALIBRATE_GROWTH,
    query_set,
)
from langchain_vq.collection import TRAIN_SAMPLE  # noqa: E402
from langchain_vq.quantization import _ivf  # noqa: E402
from langchain_vq.quantization._partitions import AUTO_PARTITION_ROWS  # noqa: E402
from langchain_vq.search.engine import exact_search  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

DIM = 384
BATCH = 100_000
FIXED = {"rescore_multiplier": 16, "quantizer_options": {"partitions": 0}}
KERNEL_REPEATS = 3
TARGET_RATIO = 1.5
#: The lists kernels measured: (lists, projected axes).
LISTS = {"default": (1024, 64), "dims_32": (1024, 32), "lists_512": (512, 64), "dims_32_lists_512": (512, 32)}
#: The variants costed: (lists of LISTS, calibration queries, growth between calibrations, what).
VARIANTS = {
    "queries_100": ("default", 100, 2.0, "100 calibration queries instead of 200"),
    "dims_32": ("dims_32", 200, 2.0, "lists trained and assigned on 32 principal axes instead of 64"),
    "lists_512": ("lists_512", 200, 2.0, "512 lists instead of 1024"),
    "growth_4x": ("default", 200, 4.0, "calibrating at 4x growth instead of 2x"),
    "all_four": ("dims_32_lists_512", 100, 4.0, "the four together"),
}

Inputs = list[tuple[list[str], np.ndarray, list[dict[str, Any]], list[str]]]


# -- measuring ---------------------------------------------------------------------------------
def timed(run: Callable[[], Any], repeats: int = KERNEL_REPEATS) -> tuple[float, Any]:
    """Median CPU seconds of ``run()`` over ``repeats`` calls, and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.process_time()
        out = run()
        times.append(time.process_time() - start)
    return float(np.median(times)), out


def matmul_rate() -> float:
    """Multiply-adds per second of one float32 matrix product on this core (its practical peak)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, DIM), dtype=np.float32)
    b = rng.standard_normal((DIM, 4096), dtype=np.float32)
    seconds, _ = timed(lambda: a @ b, repeats=7)
    return 4096 * DIM * 4096 / seconds


# -- 1. the two builds -------------------------------------------------------------------------
def make_inputs(vectors: np.ndarray) -> Inputs:
    """The arguments of each add of :data:`BATCH` rows: texts, vectors, metadata, ids."""
    adds = []
    for lo in range(0, len(vectors), BATCH):
        rows = range(lo, min(lo + BATCH, len(vectors)))
        adds.append(
            (
                [f"doc {i}" for i in rows],
                vectors[lo : rows.stop],
                [row_metadata(i) for i in rows],
                [str(i) for i in rows],
            )
        )
    return adds


@contextlib.contextmanager
def scratch_store(settings: dict[str, Any], scratch: Path) -> Iterator[VQVectorStore]:
    """A new store in a fresh directory under ``scratch``, removed afterwards."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    path = tempfile.mkdtemp(dir=scratch)
    try:
        yield VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, **settings)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def timed_build(inputs: Inputs, settings: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """One build by the adds of ``inputs``: wall and CPU seconds per add and in total."""
    with scratch_store(settings, scratch) as store:
        walls, cpus = [], []
        for args in inputs:
            wall, cpu = time.perf_counter(), time.process_time()
            store.add_embeddings(*args)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        calibration = store.calibration
    return {
        "wall_s": sum(walls),
        "cpu_s": sum(cpus),
        "add_wall_s": [round(t, 3) for t in walls],
        "add_cpu_s": [round(t, 3) for t in cpus],
        "multiplier": None if calibration is None else calibration.multiplier,
        "load": os.getloadavg(),
    }


def compare_builds(inputs: Inputs, repeat: int, scratch: Path) -> dict[str, Any]:
    """Fixed and default builds alternating (fixed, default, default, fixed, ...); medians and ratio."""
    runs: dict[str, list[dict[str, Any]]] = {"fixed": [], "default": []}
    for i in range(repeat):
        for side in ("fixed", "default") if i % 2 == 0 else ("default", "fixed"):
            runs[side].append(timed_build(inputs, FIXED if side == "fixed" else {}, scratch))
            print(side, {k: runs[side][-1][k] for k in ("wall_s", "cpu_s", "multiplier")}, flush=True)
    out: dict[str, Any] = {"runs": runs}
    for measure in ("wall_s", "cpu_s"):
        fixed = float(np.median([r[measure] for r in runs["fixed"]]))
        default = float(np.median([r[measure] for r in runs["default"]]))
        out[f"median_{measure}"] = {"fixed": fixed, "default": default, "ratio": default / fixed}
    return out


# -- 2. the floor kernels ----------------------------------------------------------------------
def calibration_schedule(n: int, growth: float) -> list[int]:
    """Rows at each calibration of a default build by adds of :data:`BATCH` (``needs_calibration``).

    The first add calibrates, the add that trains the lists (a new quantizer) does, and any add
    that brings the rows to ``growth`` times those of the last calibration.
    """
    points: list[int] = []
    for rows in range(BATCH, n + 1, BATCH):
        crossing = rows >= AUTO_PARTITION_ROWS > rows - BATCH
        if not points or crossing or rows >= growth * points[-1]:
            points.append(rows)
    return points


def default_build(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    """A default build (untimed) with kernel (d) timed as it goes, and the store's final quantizer.

    After each add that calibrated, that calibration's ranked code scans: the ``k * ceiling``
    best candidates of each query (``RANKED_REACH`` times the multiplier the walk started from),
    as ``calibration._Measurer`` fetches them; of :data:`DEFAULT_SAMPLE` queries and of half as
    many (a variant). At the end, the same at N rows from the last multiplier.
    """
    scans: dict[int, list[dict[str, Any]]] = {DEFAULT_SAMPLE: [], DEFAULT_SAMPLE // 2: []}
    with scratch_store({}, scratch) as store:
        start = store.rescore_multiplier  # the first calibration's walk starts at the default
        for args in inputs:
            store.add_embeddings(*args)
            calibration = store.calibration
            collection = store.collection
            if calibration is None or calibration.rows != collection.snapshot.live_rows:
                continue
            for queries, found in scans.items():
                found.append(candidate_scan(collection, RANKED_REACH * start, queries))
            start = calibration.multiplier
        assert calibration is not None  # a default store calibrates its first add
        at_n = {q: candidate_scan(collection, RANKED_REACH * calibration.multiplier, q) for q in scans}
        quantizer = collection.snapshot.quantizer
    return {"quantizer": quantizer, "scans": scans, "scan_at_n": at_n, "multiplier": calibration.multiplier}


def candidate_scan(collection: Any, ceiling: int, queries: int) -> dict[str, Any]:
    """CPU seconds of one calibration's ranked candidate scans (kernel d) on the current snapshot."""
    snapshot = collection.snapshot
    qs = query_set(collection, None, queries, 0, snapshot=snapshot)
    live = np.array([v.live_count for v in snapshot.views], dtype=np.int64)
    small = int(live[live <= DEFAULT_K * ceiling].sum())  # rows read exactly: fetched on top
    fetched = DEFAULT_K * ceiling + small
    seconds, _ = timed(
        lambda: collection.candidate_keys(qs.vectors, fetched, exclude=qs.keys, snapshot=snapshot)
    )
    quantizer = snapshot.quantizer
    return {
        "rows": snapshot.live_rows,
        "queries": int(qs.vectors.shape[0]),
        "ceiling": ceiling,
        "candidates": fetched,
        "ranked": fetched + 1 <= collection.ranked_candidates(snapshot),
        "segments": len(snapshot.views),
        "lists_probed": quantizer.lists_probed if getattr(quantizer, "partitioned", False) else None,
        "cpu_s": seconds,
    }


def training_sample(vectors: np.ndarray) -> np.ndarray:
    """The rows the store trains its lists on: :data:`TRAIN_SAMPLE` drawn as ``_sample_vectors`` draws them."""
    rows = min(AUTO_PARTITION_ROWS, len(vectors))
    picks = np.sort(np.random.default_rng(0).choice(rows, size=min(TRAIN_SAMPLE, rows), replace=False))
    return np.ascontiguousarray(vectors[picks])


@contextlib.contextmanager
def projected_dims(count: int) -> Iterator[None]:
    """Train with ``count`` principal axes instead of ``_ivf.PROJECTED_DIMS`` (a variant)."""
    saved = _ivf.PROJECTED_DIMS
    _ivf.PROJECTED_DIMS = count
    try:
        yield
    finally:
        _ivf.PROJECTED_DIMS = saved


def lists_kernels(sample: np.ndarray, vectors: np.ndarray, lists: int, dims: int) -> dict[str, Any]:
    """(a) and (b) for ``lists`` lists on ``dims`` axes: train, choose nprobe, assign every row."""
    with projected_dims(dims):
        train_s, centroids = timed(lambda: _ivf.train_partitions(sample, lists, "ip"))
        projection = _ivf.ListProjection(_ivf._principal_axes(centroids, dims))  # noqa: SLF001 - as project_lists
        nprobe_s, nprobe = timed(lambda: _ivf.choose_nprobe(sample, centroids, "ip", projection=projection))
    assign_s, _ = timed(lambda: _ivf.assign_partitions(centroids, vectors, "ip", projection))
    return {
        "lists": lists,
        "dims": dims,
        "nprobe": nprobe,
        "train_cpu_s": train_s,
        "choose_nprobe_cpu_s": nprobe_s,
        "assign_cpu_s": assign_s,
        "assign_multiply_adds": len(vectors) * (DIM * dims + (dims + 1) * lists),
        "train_multiply_adds": training_multiply_adds(len(sample), lists, dims),
    }


def training_multiply_adds(rows: int, lists: int, dims: int) -> int:
    """Multiply-adds of ``train_partitions`` + ``choose_nprobe`` (their products; k-means dominates)."""
    kmeans_rows = min(rows, lists * _ivf._KMEANS_ROWS_PER_PARTITION)  # noqa: SLF001
    pca = _ivf._PCA_ROWS * DIM * DIM  # noqa: SLF001
    kmeans = (_ivf._PROJECTED_KMEANS_ITERATIONS + 1) * kmeans_rows * lists * dims  # noqa: SLF001
    nprobe_knn = _ivf._NPROBE_QUERIES * rows * DIM  # noqa: SLF001
    return pca + kmeans_rows * DIM * dims + kmeans + nprobe_knn


def exact_pass(vectors: np.ndarray, queries: np.ndarray, rows: int) -> float:
    """(c): CPU seconds of the exact top 10 of ``queries`` over the first ``rows`` float32 rows."""
    seconds, _ = timed(lambda: exact_search(vectors[:rows], queries, DEFAULT_K, "ip"))
    return seconds


# -- the report --------------------------------------------------------------------------------
def kernel_seconds(costs: dict[str, Any], n: int, schedule: list[int]) -> dict[str, float]:
    """CPU seconds of the kernels at the floor (everything once, at N) and at ``schedule``'s calibrations.

    ``costs``: ``assign``, ``train``, ``nprobe``; ``exact`` and ``scan`` by rows; ``scan_n``.
    """
    once = costs["assign"] + costs["train"] + costs["nprobe"]
    return {
        "floor": once + costs["exact"][n] + costs["scan_n"],
        "schedule": once + sum(costs["exact"][r] + costs["scan"][r] for r in schedule),
    }


def ratios(fixed_s: float, seconds: dict[str, float]) -> dict[str, Any]:
    """(fixed + kernels) / fixed, at the floor and at the schedule."""
    return {
        "floor_kernels_cpu_s": seconds["floor"],
        "floor_ratio": (fixed_s + seconds["floor"]) / fixed_s,
        "schedule_kernels_cpu_s": seconds["schedule"],
        "schedule_ratio": (fixed_s + seconds["schedule"]) / fixed_s,
    }


def costs_of(lists: dict[str, Any], queries: int, measured: dict[str, Any]) -> dict[str, Any]:
    """The kernels' CPU seconds for one choice of lists (``lists_kernels``) and of calibration queries."""
    return {
        "assign": lists["assign_cpu_s"],
        "train": lists["train_cpu_s"],
        "nprobe": lists["choose_nprobe_cpu_s"],
        "exact": measured["exact"][queries],
        "scan": {s["rows"]: s["cpu_s"] for s in measured["scans"][queries]},
        "scan_n": measured["scan_at_n"][queries]["cpu_s"],
    }


def multiply_adds(lists: dict[str, Any], queries: int, schedule: list[int]) -> int:
    """Multiply-adds of the matrix-product kernels (a, b, c) of a build with ``schedule``."""
    return lists["assign_multiply_adds"] + lists["train_multiply_adds"] + queries * sum(schedule) * DIM


def judged(
    builds: dict[str, Any], costs: dict[str, Any], lists: dict[str, Any], measured: dict[str, Any], n: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Today's floor and schedule ratios against the target, and each variant's (costs only)."""
    fixed_s = builds["median_cpu_s"]["fixed"]
    today = calibration_schedule(n, RECALIBRATE_GROWTH)
    base = ratios(fixed_s, kernel_seconds(costs, n, today))
    base["floor_above_target"] = base["floor_ratio"] > TARGET_RATIO
    base["kernel_budget_at_target_cpu_s"] = (TARGET_RATIO - 1) * fixed_s
    # What the measured default spends beyond the fixed build and the schedule's kernels.
    base["default_beyond_kernels_cpu_s"] = (
        builds["median_cpu_s"]["default"] - fixed_s - base["schedule_kernels_cpu_s"]
    )
    base_ma = multiply_adds(lists["default"], DEFAULT_SAMPLE, today)
    variants: dict[str, Any] = {
        "warning": "COSTS ONLY: the variants' effect on recall and query speed is not measured by this script"
    }
    for name, (lists_name, queries, growth, what) in VARIANTS.items():
        schedule = calibration_schedule(n, growth)
        variants[name] = {
            "what": what,
            "schedule": schedule,
            **ratios(fixed_s, kernel_seconds(costs_of(lists[lists_name], queries, measured), n, schedule)),
            "multiply_adds_saved_schedule": base_ma - multiply_adds(lists[lists_name], queries, schedule),
        }
    return base, variants


def main(ns: argparse.Namespace) -> None:
    faiss.omp_set_num_threads(1)
    scratch = Path(ns.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    record = run_record(
        ns.n, DIM, DEFAULT_SAMPLE, DEFAULT_K, batch=BATCH, repeat=ns.repeat, threads=1, fixed=FIXED
    )
    vectors = synthetic_embeddings(ns.n, DIM, seed=0)
    inputs = make_inputs(vectors)

    builds = compare_builds(inputs, ns.repeat, scratch)

    built = default_build(inputs, scratch)
    today = calibration_schedule(ns.n, RECALIBRATE_GROWTH)
    scans = built["scans"]
    assert [s["rows"] for s in scans[DEFAULT_SAMPLE]] == today  # the store's own schedule
    assign_s, _ = timed(lambda: built["quantizer"].assign(vectors))

    sample = training_sample(vectors)
    lists = {name: lists_kernels(sample, vectors, *shape) for name, shape in LISTS.items()}
    print("lists", json.dumps(lists, default=float), flush=True)

    picks = np.sort(np.random.default_rng(0).choice(ns.n, DEFAULT_SAMPLE, replace=False))
    queries = np.ascontiguousarray(vectors[picks])
    sizes = sorted({ns.n, *today})
    measured = {
        "exact": {q: {r: exact_pass(vectors, queries[:q], r) for r in sizes} for q in scans},
        "scans": scans,
        "scan_at_n": built["scan_at_n"],
    }

    # (a) as the store runs it (its own centroids and axes), for the base and the variants on its lists
    lists["default"]["assign_cpu_s_retrained"] = lists["default"]["assign_cpu_s"]
    lists["default"]["assign_cpu_s"] = assign_s
    costs = costs_of(lists["default"], DEFAULT_SAMPLE, measured)
    base, variants = judged(builds, costs, lists, measured, ns.n)
    rate = matmul_rate()
    result = {
        **record,
        "builds": builds,
        "matmul_multiply_adds_per_s": rate,
        "kernels_cpu_s": {
            "a_assign_all_rows": assign_s,
            "a_multiply_adds": lists["default"]["assign_multiply_adds"],
            "a_share_of_matmul_rate": lists["default"]["assign_multiply_adds"] / assign_s / rate,
            "b_train": costs["train"],
            "b_choose_nprobe": costs["nprobe"],
            "b_multiply_adds": lists["default"]["train_multiply_adds"],
            "c_exact_by_rows": measured["exact"][DEFAULT_SAMPLE],
            "c_share_of_matmul_rate": {
                r: DEFAULT_SAMPLE * r * DIM / s / rate for r, s in measured["exact"][DEFAULT_SAMPLE].items()
            },
            "schedule_rows": today,
            "d_scans_per_calibration": scans[DEFAULT_SAMPLE],
            "d_scan_at_n": built["scan_at_n"][DEFAULT_SAMPLE],
            "final_multiplier": built["multiplier"],
        },
        "ratios": base,
        "variants_cost_only": variants,
        "lists_kernels": lists,
        "half_queries": {
            "exact_by_rows": measured["exact"][DEFAULT_SAMPLE // 2],
            "scans": scans[DEFAULT_SAMPLE // 2],
            "scan_at_n": built["scan_at_n"][DEFAULT_SAMPLE // 2],
        },
        "load_end": os.getloadavg(),
    }
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    summary = ("builds", "kernels_cpu_s", "ratios", "variants_cost_only")
    print(json.dumps({k: result[k] for k in summary}, indent=1, default=float))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="builds of each store, alternating")
    parser.add_argument("--scratch", default="/work/bs-tmp")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ingest_limits.json"))
    main(parser.parse_args())
