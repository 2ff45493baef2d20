"""Default recall and ingest cost at 1M rows: the calibrating default against a fixed multiplier.

Builds the same store twice from ``N`` synthetic vectors (``langchain_vq.synthetic``, seed 0) in
adds of ``--batch`` rows with ``bench_search.py``'s row metadata, not compacted: once with
``rescore_multiplier=16`` and ``partitions=0`` (the former default: no calibration, every code
scanned, today's ingest) and once with the defaults (calibrated for recall@10 0.99 in the commits of the adds). Reports each build's ingest
seconds, the calibrations committed (rows, multiplier, measured recall), and recall@10 of both
stores' default search against exact float search on ``--queries`` synthetic queries (seed 1),
and for the calibrated store also after every add (untimed; "recall that holds at any size"
means between calibrations too). ``--quantization pq`` measures 4-bit PQ instead of binary.

After every add it also ranks each query's candidates from one code scan
(``Collection.candidate_keys``, as calibration does) to get the held-out recall@10 at every
multiplier up to ``--max-multiplier`` at once: the smallest multiplier reaching 0.99 then, and,
for each growth floor of ``--floors``, the multiplier the store would have served between its
calibrations (``calibration.with_growth``) with the recall it would have had, so the floor is
chosen from one run. ``--no-fixed`` skips the uncalibrated build (no ingest ratio). ``--repeat R`` builds each side
R times (the extra builds only timed, alternating which side goes first) and reports the ratio
of the medians of their ingest seconds, wall and CPU (``ingest``); ``ingest_ratio`` stays the
first builds' wall ratio. Each add's wall and CPU seconds are recorded.

One run, one thread (``OMP_NUM_THREADS=1``); the machine is shared, so the load average is
recorded with the times. Run: ``python benchmarks/measure_default_recall.py``; writes
``benchmarks/results/default_recall.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks._common import run_record  # noqa: E402
from benchmarks.bench_search import row_metadata  # noqa: E402
from langchain_vq.evaluation import exact_top_k, recall_at_k  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

try:  # the growth exponent (absent from older versions, measured side by side with this script)
    from langchain_vq.calibration import Calibration, with_growth
except ImportError:  # pragma: no cover - older versions
    from langchain_vq.calibration import Calibration

    with_growth = None

TARGET = 0.99


class RunningTruth:
    """Exact top 10 of the queries over the rows added so far, updated batch by batch."""

    def __init__(self, queries: np.ndarray) -> None:
        self.queries = queries
        self.scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
        self.rows = np.full((len(queries), 10), -1, dtype=np.int64)

    def add(self, lo: int, batch: np.ndarray) -> list[list[int]]:
        """Merge the best 10 of ``batch`` (rows ``lo..``); the top 10 so far, best first."""
        scores = np.concatenate([self.scores, self.queries @ batch.T], axis=1)
        rows = np.concatenate(
            [self.rows, np.broadcast_to(np.arange(lo, lo + len(batch)), scores[:, 10:].shape)], axis=1
        )
        order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.rows = np.take_along_axis(rows, order, axis=1)
        return self.rows.tolist()


def build(
    path: Path,
    vectors: np.ndarray,
    batch: int,
    queries: np.ndarray | None = None,
    max_multiplier: int = 0,
    **settings: Any,
) -> dict[str, Any]:
    """Add ``vectors`` in batches to a new store at ``path``; ingest seconds and calibrations.

    With ``queries``, recall@10 of the store's default search after every add (not timed), and
    with ``max_multiplier`` the recall at every multiplier up to it, ranked from one code scan.
    """
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    store = VQVectorStore(DeterministicFakeEmbedding(size=vectors.shape[1]), path=path, **settings)
    adds: list[float] = []
    adds_cpu: list[float] = []
    after: list[dict[str, Any]] = []
    calibrations: list[dict[str, Any]] = []
    truth = RunningTruth(queries) if queries is not None else None
    start, start_cpu = time.perf_counter(), time.process_time()
    for lo in range(0, vectors.shape[0], batch):
        hi = min(lo + batch, vectors.shape[0])
        t, t_cpu = time.perf_counter(), time.process_time()
        store.add_embeddings(
            [f"doc {i}" for i in range(lo, hi)],
            vectors[lo:hi],
            [row_metadata(i) for i in range(lo, hi)],
            [str(i) for i in range(lo, hi)],
        )
        adds.append(round(time.perf_counter() - t, 2))
        adds_cpu.append(round(time.process_time() - t_cpu, 2))
        saved = store.collection.snapshot.settings.get("calibration")  # committed with this add?
        if saved and (not calibrations or saved["version"] != calibrations[-1]["version"]):
            keys = ("version", "rows", "multiplier", "recall_by_multiplier", "error_by_multiplier")
            keys += ("queries", "met", "growth", "z")
            calibrations.append({k: saved[k] for k in keys if k in saved} | {"saved": saved})
        if queries is not None:
            paused, paused_cpu = time.perf_counter(), time.process_time()
            now = truth.add(lo, vectors[lo:hi])
            after.append(_recall_now(store, queries, now))
            if max_multiplier:
                curve = ranked_recall(store, queries, now, max_multiplier)
                after[-1]["version"] = store.collection.snapshot.version
                after[-1]["ranked_recall"] = [round(r, 4) for r in curve]
                after[-1]["needed_multiplier"] = next(
                    (m for m, r in enumerate(curve, start=1) if r >= TARGET), None
                )
            start += time.perf_counter() - paused  # the recall check is not ingest
            start_cpu += time.process_time() - paused_cpu
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "store": store,
        "ingest_s": seconds,
        "ingest_cpu_s": round(cpu_seconds, 2),
        "add_s": adds,
        "add_cpu_s": adds_cpu,
        "calibrations": calibrations,
        "multiplier": store.rescore_multiplier,
        "segments": len(store.collection.snapshot.views),
        "partitions": getattr(store.collection.snapshot.quantizer, "partitions", None),
        "load_after": os.getloadavg(),
        **({"after_each_add": after} if queries is not None else {}),
    }


def _recall_now(store: Any, queries: np.ndarray, truth: list[list[int]]) -> dict[str, Any]:
    """Rows, multiplier in use, and recall@10 of the store's default search, now."""
    found = [[int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)]
    snapshot = store.collection.snapshot
    return {
        "rows": snapshot.live_rows,
        "multiplier": store.rescore_multiplier,
        # The first stage: lists once the "auto" store is large (0: every code scanned).
        "partitions": getattr(snapshot.quantizer, "partitions", None),
        "nprobe": getattr(snapshot.quantizer, "nprobe", None),
        "recall_at_10": recall_at_k(found, truth, 10),
    }


def ranked_recall(
    store: Any, queries: np.ndarray, truth: list[list[int]], max_multiplier: int
) -> list[float]:
    """Held-out recall@10 of the store's search at each multiplier ``1..max_multiplier``, from one scan."""
    return per_query_curves(store, truth, queries, max_multiplier).mean(axis=0).tolist()


def per_query_curves(
    store: Any, truth: list[list[int]], queries: np.ndarray, max_multiplier: int
) -> np.ndarray:
    """Recall@10 ``[queries, max_multiplier]`` of each query at every multiplier, ranked from one scan.

    The best candidates by code score, as the search pools them (valid when the quantizer
    ``ranks_candidates_by_one_score``, as calibration's ``_Measurer`` uses it): a true
    neighbour is found at ``m`` when it is among the first ``10 * m`` candidates of the
    segments scanned by code at ``m``, or in a segment read exactly at ``m`` (no codes, or no
    more live rows than candidates). Ids are the row numbers (``build`` adds ``str(i)``).
    Queries go 500 at a time (bounded candidate arrays).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from langchain_vq.collection import ROW_KEY_SHIFT

    collection = store.collection
    snapshot = collection.snapshot
    views = snapshot.views
    assert snapshot.quantizer is not None
    assert snapshot.quantizer.ranks_candidates_by_one_score
    live = np.array([v.live_count for v in views], dtype=np.int64)
    no_codes = np.array([v.segment.stored_codes is None for v in views], dtype=bool)
    small = int(live[live <= 10 * max_multiplier].sum())
    key_of_id = np.full(sum(v.segment.rows for v in views) + 1, -1, dtype=np.int64)  # ids are 0..n-1
    for index, view in enumerate(views):
        ids = pc.cast(view.segment.ids, pa.int64()).to_numpy()
        key_of_id[ids] = (np.int64(index) << ROW_KEY_SHIFT) + np.arange(ids.size, dtype=np.int64)
    out = []
    for begin in range(0, queries.shape[0], 500):
        candidates = collection.candidate_keys(
            queries[begin : begin + 500], 10 * max_multiplier + small, snapshot=snapshot
        )
        wanted = np.array([key_of_id[t] for t in truth[begin : begin + 500]], dtype=np.int64)
        # Column of each true neighbour among its query's candidates (-1: not among them).
        column = np.full(wanted.shape, -1, dtype=np.int64)
        for q in range(wanted.shape[0]):
            where = {key: c for c, key in enumerate(candidates[q].tolist()) if key >= 0}
            column[q] = [where.get(key, -1) for key in wanted[q].tolist()]
        candidate_segment = np.where(candidates >= 0, candidates >> ROW_KEY_SHIFT, 0)
        block = np.empty((wanted.shape[0], max_multiplier))
        for m in range(1, max_multiplier + 1):
            exact = no_codes | (live <= 10 * m)
            scanned = (~exact[candidate_segment]) & (candidates >= 0)
            rank = np.cumsum(scanned, axis=1) - 1  # place among the candidates scanned by code
            rank_of = np.take_along_axis(rank, np.maximum(column, 0), axis=1)
            found = exact[wanted >> ROW_KEY_SHIFT] | ((column >= 0) & (rank_of < 10 * m))
            block[:, m - 1] = found.mean(axis=1)
        out.append(block)
    return np.concatenate(out)


def served_by_floor(run: dict[str, Any], floors: list[float]) -> dict[str, Any]:
    """Per floor: the multiplier served after each add between calibrations, and its held-out recall."""
    assert with_growth is not None
    saved = [Calibration.from_dict(c["saved"]) for c in run["calibrations"]]
    out: dict[str, Any] = {}
    for floor in floors:
        grown: list[Calibration] = []
        for calibration in saved:  # as the store chains them: each from the last one it kept
            grown.append(with_growth(calibration, grown[-1] if grown else None, floor=floor))
        served = []
        for add in run["after_each_add"]:
            last = [c for c in grown if c.version <= add["version"]]
            if not last:
                continue
            m = last[-1].multiplier_for(add["rows"])
            curve = add["ranked_recall"]
            served.append(
                {
                    "rows": add["rows"],
                    "multiplier": m,
                    "recall_at_10": curve[m - 1] if m <= len(curve) else None,
                }
            )
        known = [s["recall_at_10"] for s in served if s["recall_at_10"] is not None]
        out[str(floor)] = {
            "growth": [round(c.growth, 3) for c in grown],
            "served": served,
            "min_recall": min(known) if known else None,
            "mean_multiplier": float(np.mean([s["multiplier"] for s in served])) if served else None,
        }
    return out


def repeated_ingest(
    root: Path,
    vectors: np.ndarray,
    batch: int,
    repeat: int,
    first: list[dict[str, Any]],
    fixed_settings: dict[str, Any],
    default_settings: dict[str, Any],
) -> dict[str, Any]:
    """Ingest seconds of ``repeat`` builds per side and the ratio of their medians, wall and CPU.

    ``first``: the fixed and default runs already built (fixed first; the default's recall
    checks are paused out of its times). The other ``repeat - 1`` builds of each side are only
    timed and deleted, the side that goes first alternating, so a load change or the process's
    memory state hits both alike. One quiet-machine run of the same default build took 30.1 and
    another 26.0 s (session 11, 1M rows): one build per side does not decide a 1.5x cap. CPU
    seconds (this process only) move less than wall seconds with other processes' load.
    """
    sides: dict[str, list[dict[str, Any]]] = {"fixed": [first[0]], "default": [first[1]]}
    settings = {"fixed": fixed_settings, "default": default_settings}
    for r in range(1, repeat):
        for side in ("default", "fixed") if r % 2 else ("fixed", "default"):
            path = root / f"{side}-{r}"
            run = build(path, vectors, batch, **settings[side])
            del run["store"]
            shutil.rmtree(path, ignore_errors=True)
            sides[side].append(run)
            print(f"repeat {r} {side}: {run['ingest_s']:.2f} s, {run['ingest_cpu_s']:.2f} s CPU", flush=True)
    out: dict[str, Any] = {"repeat": repeat}
    for side, runs in sides.items():
        out[side] = {
            key: [run[key] if isinstance(run[key], list) else round(run[key], 2) for run in runs]
            for key in ("ingest_s", "ingest_cpu_s", "add_s", "add_cpu_s")
        }
        out[side]["load_after"] = [run["load_after"] for run in runs]
    for key in ("ingest_s", "ingest_cpu_s"):
        medians = {side: float(np.median(out[side][key])) for side in sides}
        out[f"ratio_median_{key}"] = round(medians["default"] / medians["fixed"], 3)
    return out


def main() -> None:
    """Run the comparison and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--quantization", choices=["binary", "pq"], default="binary")
    parser.add_argument("--max-multiplier", type=int, default=0, help="held-out recall ranked up to this m")
    parser.add_argument("--floors", type=float, nargs="*", default=[], help="growth floors to replay")
    parser.add_argument("--no-fixed", action="store_true", help="skip the uncalibrated build")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="builds of each side timed: the extra ones only timed, alternating which goes first",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "default_recall.json")
    args = parser.parse_args()
    record = run_record(args.n, 384, args.queries, 10, batch=args.batch, quantization=args.quantization)
    vectors = synthetic_embeddings(args.n, 384, seed=0)
    queries = synthetic_embeddings(args.queries, 384, seed=1)
    root = Path(tempfile.mkdtemp(prefix="default-recall-"))
    q = args.quantization
    try:
        runs = {}
        fixed_settings = {"quantization": q, "rescore_multiplier": 16, "quantizer_options": {"partitions": 0}}
        if not args.no_fixed:
            runs["fixed m=16 (no calibration)"] = build(root / "fixed", vectors, args.batch, **fixed_settings)
        runs["default (calibrated)"] = build(
            root / "default", vectors, args.batch, queries, args.max_multiplier, quantization=q
        )
        if not args.no_fixed:
            record["ingest"] = repeated_ingest(
                root,
                vectors,
                args.batch,
                args.repeat,
                list(runs.values()),
                fixed_settings,
                {"quantization": q},
            )
        t = time.perf_counter()
        truth = exact_top_k(queries, vectors, 10).tolist()
        record["exact_truth_s"] = time.perf_counter() - t
        for name, run in runs.items():
            store = run.pop("store")
            found = [
                [int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)
            ]
            run["recall_at_10"] = recall_at_k(found, truth, 10)
            if args.floors and "after_each_add" in run:
                run["served_by_floor"] = served_by_floor(run, args.floors)
            for calibration in run["calibrations"]:
                del calibration["saved"]
            print(name, json.dumps(run), flush=True)
        record["runs"] = runs
        if len(runs) == 2:
            fixed, default = runs.values()
            record["ingest_ratio"] = default["ingest_s"] / fixed["ingest_s"]  # the first builds only
        record["load_end"] = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    ingest = record.get("ingest") or {}
    summary = {k: record.get(k) for k in ("ingest_ratio", "exact_truth_s", "load_end")}
    print(json.dumps(summary | {k: v for k, v in ingest.items() if k.startswith("ratio")}))


if __name__ == "__main__":
    main()
