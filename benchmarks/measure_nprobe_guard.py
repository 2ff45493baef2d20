"""Lists that cap recall after their training commit: nprobe, multiplier and held-out recall per add.

Builds a float32-rescoring binary store (``rescore_precision="float32"``: the codes are the only
approximation, so the lists' cap shows; ``bench_search``'s binary-float32 mode served m=1024 at 1M
because of it) from ``--n`` synthetic rows (seed 0) in adds of ``--batch``, with the defaults
(calibrated for recall@10 0.99), once per source tree (``--compare NAME=TREE ...``, each in its
own process importing ``langchain_vq`` from that tree, one after the other in one run). The
crossing size (``AUTO_PARTITION_ROWS``) is ``--cross`` rows and the growth that recalibrates
(``RECALIBRATE_GROWTH``, 2) is ``--growth``, so the crossing add and later calibrations on the
saved quantizer both fall within ``--n`` (at most 300k here).

After every add (one thread): the add's and its calibration's seconds, ``nprobe``, the committed
calibration (multiplier, met, recall at its largest multipliers), the multiplier served, and on
``--queries`` held-out queries (seed 1): recall@10 of the default search against exact search,
the share of their true top 10 that the probed lists hold at all (``coverage``: the cap on recall
whatever the multiplier, measured directly from the centroids and each neighbour's list), and the
p50 of one-query searches at the served settings (``--timed`` of them; noisy while others run:
compare the sides' ratios, with the load average recorded).

Run: ``python benchmarks/measure_nprobe_guard.py --compare main=/tmp/main nprobe=/tmp/nprobe
--n 300000 --batch 50000 --cross 200000 --growth 1.2``; writes ``--out`` (default
``benchmarks/results/nprobe_guard.json``). Benchmark copies of the trees (``git archive``), not
trees being edited.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def side(args: argparse.Namespace) -> dict[str, Any]:
    """One tree's build: per add, nprobe, calibration, served multiplier, held-out recall and coverage."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import numpy as np
    from langchain_core.embeddings import DeterministicFakeEmbedding

    import langchain_vq
    import langchain_vq.vectorstore as vectorstore_module
    from langchain_vq import VQVectorStore
    from langchain_vq.quantization import _partitions
    from langchain_vq.synthetic import synthetic_embeddings

    _partitions.AUTO_PARTITION_ROWS = args.cross
    if args.growth:  # later calibrations on the saved quantizer within --n rows
        import langchain_vq.calibration as calibration_module

        calibration_module.RECALIBRATE_GROWTH = args.growth
    vectors = synthetic_embeddings(args.n, 384, seed=0)
    queries = synthetic_embeddings(args.queries, 384, seed=1)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    timed: list[float] = []
    real = vectorstore_module.calibrate_multiplier

    def calibrate(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            timed.append(time.perf_counter() - t)

    vectorstore_module.calibrate_multiplier = calibrate  # type: ignore[assignment]
    root = Path(tempfile.mkdtemp(prefix="nprobe-guard-"))
    adds: list[dict[str, Any]] = []
    try:
        store = VQVectorStore(
            DeterministicFakeEmbedding(size=384),
            path=root / "s",
            quantization="binary",
            rescore_precision="float32",
        )
        for lo in range(0, args.n, args.batch):
            hi = min(lo + args.batch, args.n)
            timed.clear()
            t = time.perf_counter()
            store.add_embeddings(
                [f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], ids=[str(i) for i in range(lo, hi)]
            )
            add_s = time.perf_counter() - t
            row = {"add_s": round(add_s, 2), "calibration_s": round(sum(timed), 2)}
            row = measure_version(store, q, unit, hi, args, row)
            adds.append(row)
            print(json.dumps(row), flush=True)
        if args.later_target:  # a handle asking for more recall: calibrate() on the saved quantizer
            later = VQVectorStore(
                DeterministicFakeEmbedding(size=384), path=root / "s", recall_target=args.later_target
            )
            timed.clear()
            t = time.perf_counter()
            later.calibrate()
            row = {"later_target": args.later_target, "calibrate_s": round(time.perf_counter() - t, 2)}
            row = measure_version(later, q, unit, args.n, args, row)
            adds.append(row)
            print(json.dumps(row), flush=True)
        truth = np.argsort(-(q @ unit.T), axis=1)[:, :10]
        has_copies = hasattr(store.collection.snapshot.quantizer, "with_nprobe")  # a tree with the guard
        sweep = nprobe_sweep(store, q, truth, args) if args.sweep and has_copies else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "sweep": sweep,
        "tree": str(args.tree),
        "package": str(Path(langchain_vq.__file__).parent),
        "adds": adds,
        "ingest_s": round(sum(a.get("add_s", 0) for a in adds), 2),
        "calibration_s": round(sum(a.get("calibration_s", 0) for a in adds), 2),
        "min_recall_at_10": min(a["recall_at_10"] for a in adds if "add_s" in a),
    }


def measure_version(
    store: Any, q: Any, unit: Any, hi: int, args: argparse.Namespace, row: dict[str, Any]
) -> dict[str, Any]:
    """The store's current version: nprobe, calibration, served multiplier, held-out recall, coverage, p50."""
    import numpy as np

    snapshot = store.collection.snapshot
    quantizer = snapshot.quantizer
    truth = np.argsort(-(q @ unit[:hi].T), axis=1)[:, :10]  # exact top 10 over the rows so far
    m = store.rescore_multiplier
    found = [  # 50 queries at a time: bounds the rescoring vectors gathered at m=1024
        rows
        for at in range(0, q.shape[0], 50)
        for rows in store.collection.search(q[at : at + 50], 10, rescore_multiplier=m)
    ]
    hits = [len({int(r.id) for r in got} & set(t_.tolist())) for got, t_ in zip(found, truth, strict=True)]
    row |= {
        "rows": snapshot.live_rows,
        "load": os.getloadavg()[0],
        "partitions": getattr(quantizer, "partitions", 0),
        "nprobe": getattr(quantizer, "nprobe", None),
        "multiplier": m,
        "recall_at_10": float(np.mean(hits)) / 10,
    }
    if getattr(quantizer, "partitions", 0):
        # Coverage: each neighbour's list (as stored: assigned from its float32 vector)
        # ranked by the query's centroid scores; the probed lists hold ranks < nprobe.
        centroids = quantizer.partition_centroids_
        lists = quantizer.assign(unit[truth.ravel()]).astype(np.int64).reshape(truth.shape)
        scores = q @ centroids.T
        own = np.take_along_axis(scores, lists, axis=1)
        ranks = (scores[:, None, :] > own[:, :, None]).sum(axis=2)
        row["coverage"] = float(np.mean(ranks < quantizer.nprobe))
        row["coverage_by_nprobe"] = {
            str(p): float(np.mean(ranks < p))
            for p in (64, 128, 256, 384, 512, 768)
            if p < quantizer.partitions
        }
    calibration = snapshot.settings.get("calibration")
    if calibration and (calibration["version"] == snapshot.version or "later_target" in row):
        by = calibration["recall_by_multiplier"]
        row["calibration"] = {
            "multiplier": calibration["multiplier"],
            "met": calibration["met"],
            "target": calibration["target"],
            "recall_top": {k: by[k] for k in sorted(by, key=int)[-3:]},
        }
    times = []
    for vector in q[: args.timed]:
        t = time.perf_counter()
        store.collection.search(vector[None, :], 10, rescore_multiplier=m)
        times.append(time.perf_counter() - t)
    row["p50_ms"] = round(1000 * float(np.median(times)), 3) if times else None
    return row


def nprobe_sweep(store: Any, q: Any, truth: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The built store at other ``nprobe``: the store's calibration rule at each, held-out recall, p50.

    Each ``nprobe`` of ``--sweep`` gets a copy of the store's quantizer (``with_nprobe``: a tree
    with the guard) on the last version, calibrated by the store's own walk from the served
    multiplier; the one-query searches of all of them are interleaved query by query, so load
    changes hit every ``nprobe`` alike.
    """
    from dataclasses import replace

    import numpy as np

    snapshot = store.collection.snapshot
    quantizer = snapshot.quantizer
    sides = []
    for nprobe in args.sweep:
        copy = quantizer.with_nprobe(nprobe) if nprobe != quantizer.nprobe else quantizer
        staged = replace(snapshot, quantizer=copy)
        t = time.perf_counter()
        calibration = store._walk(staged, store.rescore_multiplier)  # noqa: SLF001 - the store's rule
        seconds = time.perf_counter() - t
        found = store.collection.search_keys(
            q, 10, rescore_multiplier=calibration.multiplier, snapshot=staged
        )
        ids = [
            [
                int(store.collection.snapshot.views[k >> 40].segment.ids[k & ((1 << 40) - 1)].as_py())
                for k in row
                if k >= 0
            ]
            for row in found
        ]
        hits = [len(set(f) & set(t_.tolist())) for f, t_ in zip(ids, truth, strict=True)]
        sides.append(
            {
                "nprobe": nprobe,
                "multiplier": calibration.multiplier,
                "met": calibration.met,
                "calibration_s": round(seconds, 2),
                "recall_top": {str(m): r for m, r in list(calibration.recall_by_multiplier.items())[-3:]},
                "recall_at_10": float(np.mean(hits)) / 10,
                "staged": staged,
                "times": [],
            }
        )
    for vector in q[: args.timed]:
        for entry in sides:
            t = time.perf_counter()
            store.collection.search_keys(
                vector[None, :], 10, rescore_multiplier=entry["multiplier"], snapshot=entry["staged"]
            )
            entry["times"].append(time.perf_counter() - t)
    out = []
    for entry in sides:
        times = entry.pop("times")
        entry.pop("staged")
        entry["p50_ms"] = round(1000 * float(np.median(times)), 3)
        entry["load"] = os.getloadavg()[0]
        out.append(entry)
        print(json.dumps(entry), flush=True)
    return out


def _uptime() -> str:
    command = ["uptime"]
    return subprocess.run(command, check=False, capture_output=True, text=True).stdout.strip()


def main() -> None:
    """Parse the arguments; run one side or the comparison; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--cross", type=int, default=100_000, help="AUTO_PARTITION_ROWS for the build")
    parser.add_argument(
        "--growth", type=float, default=0.0, help="RECALIBRATE_GROWTH for the build (0: the tree's, 2)"
    )
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=[],
        help="(a tree with the guard) nprobe values to time at the end",
    )
    parser.add_argument(
        "--later-target",
        type=float,
        default=0.0,
        help="after the build: calibrate() a handle for this recall",
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--timed", type=int, default=200, help="one-query searches timed per add")
    parser.add_argument("--compare", nargs="*", default=[], help="NAME=TREE pairs, built one after the other")
    parser.add_argument("--tree", default=str(REPO), help="(one side) the tree to import langchain_vq from")
    parser.add_argument("--side-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.n > 300_000:
        parser.error(f"--n {args.n}: at most 300,000 rows (a shared machine); the crossing is --cross")
    if args.side_out:
        args.side_out.write_text(json.dumps(side(args)))
        return
    sys.path.insert(0, str(REPO))
    from benchmarks._common import run_record

    record = run_record(
        args.n, 384, args.queries, 10, data="synthetic", batch=args.batch, quantization="binary"
    )
    record["rescore_precision"] = "float32"
    record["cross"] = args.cross
    record["growth"] = args.growth
    record["later_target"] = args.later_target
    record["uptime_start"] = _uptime()
    sides: dict[str, Any] = {}
    for pair in args.compare:
        name, tree = pair.split("=", 1)
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            command = [sys.executable, __file__, "--tree", tree, "--side-out", tmp.name]
            command += ["--n", str(args.n), "--batch", str(args.batch), "--cross", str(args.cross)]
            command += [
                "--queries",
                str(args.queries),
                "--timed",
                str(args.timed),
                "--growth",
                str(args.growth),
            ]
            command += ["--sweep", *map(str, args.sweep)] if args.sweep else []
            command += ["--later-target", str(args.later_target)]
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            subprocess.run(command, check=True, env=env, cwd=tree)
            sides[name] = json.loads(Path(tmp.name).read_text())
    record["sides"] = sides
    record["uptime_end"] = _uptime()
    out = args.out or REPO / "benchmarks" / "results" / "nprobe_guard.json"
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
