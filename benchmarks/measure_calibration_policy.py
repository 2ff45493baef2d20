"""Calibration policy side by side: chosen multiplier, held-out recall and calibration seconds per add.

Two modes, both one thread (``OMP_NUM_THREADS=1``), the load average recorded with the times:

``--compare NAME=TREE[@MAX_SAMPLE] ...`` builds the same store once per source tree (e.g.
``main=/work/main calib=/work/wt-calib``, or ``seq800=.@800`` for the store's calibration with
sequential sampling up to 800 queries, ``DEFAULT_MAX_SAMPLE``), one after the other in one run, each in its own process importing
``langchain_vq`` from that tree: ``--n`` rows of ``--data`` (synthetic, seed 0, or the real
sentence embeddings, ``--data sentences``, minus ``--queries`` rows held out as queries) added in
adds of ``--batch`` with the defaults (calibrated for recall@10 0.99). After every add: the
seconds of the add and of its calibration (``calibrate_multiplier`` timed inside the store),
the calibration committed (multiplier, queries measured, recall per multiplier), the
multiplier served and the default search's recall@10 against exact float search on the held-out
queries (not timed). ``--growth-rules`` also replays the growth exponent rules on the tree's
calibrations (served multiplier and its held-out recall, searched at that multiplier).

``--replay N`` measures the statistical guarantee on one store built by adds with ``partitions=0``
(ranked from one scan): each of ``--queries`` held-out queries gets its recall@10 at every
multiplier up to ``--max-multiplier`` once; N calibrations then draw their queries from them
(seeded) and replay the store's rules (walk from its last multiplier both ways, ``z``, margin,
early stop, bisection to the integer; ``calibration``'s own ``_walk``/``_refine``/``_meets``) with
200 queries (the rule before), and doubling to 400 or 800 when borderline. Per policy: the
share of calibrations whose multiplier has held-out recall@10 below 0.99, the mean multiplier,
and the exact queries and passes a calibration needed.

Run: ``python benchmarks/measure_calibration_policy.py --compare main=/work/main calib=. --n 400000
--batch 40000 --growth-rules``, or ``--replay 500 --n 200000 --queries 4000 --max-multiplier 192``;
writes ``--out`` (default ``benchmarks/results/calibration_policy.json``). Each tree is imported as
it is on disk when its side starts: benchmark a copy (``git archive``), not a tree being edited.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SENTENCES = Path("/work/shared/data/sentences/emb")
TARGET = 0.99


def load_data(kind: str, n: int, queries: int) -> tuple[Any, Any]:
    """Corpus ``[n, 384]`` and held-out queries, float32: synthetic (seeds 0/1) or real sentences."""
    import numpy as np

    if kind == "synthetic":
        from langchain_vq.synthetic import synthetic_embeddings

        return synthetic_embeddings(n, 384, seed=0), synthetic_embeddings(queries, 384, seed=1)
    chunks = [np.load(SENTENCES / f"chunk_{i:02d}.npy").astype(np.float32) for i in range(4)]
    rows = np.concatenate(chunks)
    held = np.zeros(rows.shape[0], dtype=bool)
    held[np.random.default_rng(1).choice(rows.shape[0], size=queries, replace=False)] = True
    return np.ascontiguousarray(rows[~held][:n]), np.ascontiguousarray(rows[held])


def running_truth(queries: Any, lo: int, batch: Any, state: dict[str, Any]) -> list[list[int]]:
    """Exact top 10 (inner product: unit vectors, cosine) over the rows added so far."""
    import numpy as np

    scores = queries @ batch.T
    ids = np.broadcast_to(np.arange(lo, lo + batch.shape[0]), scores.shape)
    if "scores" in state:
        scores = np.concatenate([state["scores"], scores], axis=1)
        ids = np.concatenate([state["ids"], ids], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    state["scores"], state["ids"] = (
        np.take_along_axis(scores, order, axis=1),
        np.take_along_axis(ids, order, axis=1),
    )
    return state["ids"].tolist()


def held_out_recall(store: Any, queries: Any, truth: list[list[int]], multiplier: int | None = None) -> float:
    """Recall@10 of the store's search (at its own multiplier, or ``multiplier``) on the queries."""
    from langchain_vq.evaluation import recall_at_k

    kwargs = {} if multiplier is None else {"rescore_multiplier": multiplier}
    found = [
        [int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10, **kwargs)
    ]
    return float(recall_at_k(found, truth, 10))


def damped_growth(calibration: Any, previous: Any) -> Any:
    """The growth rule replayed against the store's: an exponent measured above 1 keeps the previous one."""
    from dataclasses import replace

    from langchain_vq.calibration import with_growth

    grown = with_growth(calibration, previous)
    if previous is not None and previous.met and calibration.met and previous.rows > 0:
        span = calibration.rows / previous.rows
        if span >= 1.5 and math.log(calibration.multiplier / previous.multiplier) / math.log(span) > 1:
            return replace(grown, growth=previous.growth)
    return grown


def side(args: argparse.Namespace) -> dict[str, Any]:
    """One tree's build: per add, its seconds, calibration seconds, multiplier and held-out recall."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    from langchain_core.embeddings import DeterministicFakeEmbedding

    import langchain_vq
    import langchain_vq.vectorstore as vectorstore_module
    from langchain_vq import VQVectorStore
    from langchain_vq.calibration import Calibration

    vectors, queries = load_data(args.data, args.n, args.queries)
    timed: list[float] = []
    real = vectorstore_module.calibrate_multiplier

    def calibrate(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            timed.append(time.perf_counter() - t)

    vectorstore_module.calibrate_multiplier = calibrate  # type: ignore[assignment]
    if args.max_sample:  # the store's sequential sampling limit, as if it were the default
        vectorstore_module.DEFAULT_MAX_SAMPLE = args.max_sample  # type: ignore[attr-defined]
    root = Path(tempfile.mkdtemp(prefix="calibration-policy-"))
    state: dict[str, Any] = {}
    adds: list[dict[str, Any]] = []
    saved: list[Any] = []
    try:
        store = VQVectorStore(
            DeterministicFakeEmbedding(size=384), path=root / "s", quantization=args.quantization
        )
        for lo in range(0, vectors.shape[0], args.batch):
            hi = min(lo + args.batch, vectors.shape[0])
            timed.clear()
            t = time.perf_counter()
            store.add_embeddings(
                [f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], ids=[str(i) for i in range(lo, hi)]
            )
            add_s = time.perf_counter() - t
            snapshot = store.collection.snapshot
            truth = running_truth(queries, lo, vectors[lo:hi], state)
            row: dict[str, Any] = {
                "rows": snapshot.live_rows,
                "add_s": round(add_s, 2),
                "calibration_s": round(sum(timed), 2),
                "load": os.getloadavg()[0],
                "multiplier": store.rescore_multiplier,
                "nprobe": getattr(snapshot.quantizer, "nprobe", None),
                "recall_at_10": held_out_recall(store, queries, truth),
            }
            calibration = snapshot.settings.get("calibration")
            if calibration and calibration["version"] == snapshot.version:
                saved.append(Calibration.from_dict(calibration))
                row["calibration"] = {
                    key: calibration.get(key)
                    for key in (
                        "multiplier",
                        "queries",
                        "growth",
                        "recall_by_multiplier",
                        "error_by_multiplier",
                    )
                }
            if args.growth_rules and saved:
                chain: list[Any] = []
                for c in saved:
                    chain.append(damped_growth(c, chain[-1] if chain else None))
                m = chain[-1].multiplier_for(snapshot.live_rows)
                row["damped"] = {
                    "growth": round(chain[-1].growth, 3),
                    "multiplier": m,
                    "recall_at_10": row["recall_at_10"]
                    if m == row["multiplier"]
                    else held_out_recall(store, queries, truth, m),
                }
            adds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "tree": str(args.tree),
        "max_sample": args.max_sample,
        "package": str(Path(langchain_vq.__file__).parent),
        "adds": adds,
        "calibration_s": round(sum(a["calibration_s"] for a in adds), 2),
        "ingest_s": round(sum(a["add_s"] for a in adds), 2),
        "min_recall_at_10": min(a["recall_at_10"] for a in adds),
    }


class _ReplayMeasurer:
    """``_Measurer``'s decisions (early stop, lower bound, sequential doubling) on per-query recall curves.

    ``curves[i, m - 1]`` is query ``i``'s recall@10 at multiplier ``m``, measured once; a resampled
    calibration reads rows of it instead of searching, so hundreds replay in seconds with the
    module's own ``_walk``, ``_refine``, ``_meets``, ``_decided`` and ``_standard_error``.
    """

    def __init__(self, curves: Any, order: Any, sample: int, limit: int, calibration: Any) -> None:
        self.curves, self.order, self.cal = curves, order, calibration
        self.active, self.limit = sample, limit
        self.met: dict[int, bool] = {}
        self.ceiling = curves.shape[1]
        self.exact_queries = sample  # exact truth computed (one pass per doubling)
        self.passes = 1

    def meets(self, m: int) -> bool:
        import numpy as np

        cal = self.cal
        column = self.curves[:, min(m, self.curves.shape[1]) - 1]
        done = 0
        while True:
            values: list[float] = []
            stopped = False
            for begin in range(0, self.active, cal._CHUNK):  # noqa: SLF001 - the module's own constants
                end = min(begin + cal._CHUNK, self.active)  # noqa: SLF001
                values += column[self.order[begin:end]].tolist()
                if (
                    end < self.active
                    and float(np.mean(values)) < cal.DEFAULT_TARGET + cal.DEFAULT_MARGIN
                    and cal._decided(values, cal.DEFAULT_TARGET + cal.DEFAULT_MARGIN, 10)  # noqa: SLF001
                ):
                    stopped = True
                    break
            recall = float(np.mean(values))
            error = cal._standard_error(values, 10)  # noqa: SLF001
            goal = cal.DEFAULT_TARGET + cal.DEFAULT_MARGIN
            met = cal._meets(recall, error, cal.DEFAULT_TARGET, goal, cal.DEFAULT_CONFIDENCE_Z)  # noqa: SLF001
            deviation = error * math.sqrt(len(values))
            more = (
                not met
                and not stopped
                and self.active < self.limit
                and recall >= goal
                and recall - cal.DEFAULT_CONFIDENCE_Z * deviation / math.sqrt(self.limit)
                >= cal.DEFAULT_TARGET
            )
            if not more:
                break
            self.active = min(2 * self.active, self.limit)
            self.exact_queries, self.passes = self.active, self.passes + 1
            done += 1
        self.met[m] = met
        return met


def replay(args: argparse.Namespace) -> dict[str, Any]:
    """Resampled calibrations per policy on one store's per-query curves; the share choosing below 0.99.

    The store is built by adds with ``partitions=0`` (ranked from one scan). Its ``--queries``
    held-out queries get per-query recall@10 at every multiplier up to ``--max-multiplier``;
    their mean is the held-out recall of each multiplier. Sampled stored rows are queries like
    these (session 10: 6,000 of each gave 0.9900 / 0.9899), so each replayed calibration draws
    its queries from them (seeded, without replacement), walks from the store's last multiplier
    both ways with the module's rules, and is judged by the held-out recall of its choice.
    """
    sys.path.insert(0, str(REPO))
    import numpy as np
    from langchain_core.embeddings import DeterministicFakeEmbedding

    import langchain_vq.calibration as cal
    from langchain_vq import VQVectorStore

    vectors, queries = load_data(args.data, args.n, args.queries)
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=384),
        quantization=args.quantization,
        quantizer_options={"partitions": 0},
    )
    state: dict[str, Any] = {}
    for lo in range(0, vectors.shape[0], args.batch):
        hi = min(lo + args.batch, vectors.shape[0])
        ids = [str(i) for i in range(lo, hi)]
        store.add_embeddings([f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], ids=ids)
        truth = running_truth(queries, lo, vectors[lo:hi], state)
    from benchmarks.measure_default_recall import per_query_curves

    curves = per_query_curves(store, truth, queries, args.max_multiplier)
    held = curves.mean(axis=0)
    start = store.calibration.multiplier if store.calibration else 16
    steps = cal.check_multipliers(cal.DEFAULT_MULTIPLIERS)
    out: dict[str, Any] = {
        "rows": store.collection.snapshot.live_rows,
        "segments": len(store.collection.snapshot.views),
        "start": start,
        "held_out_needed": next((m for m, r in enumerate(held, start=1) if r >= TARGET), None),
        "resamples": args.replay,
        "policies": {},
    }
    for limit in (cal.DEFAULT_SAMPLE, 400, 800):
        chosen, queries_used, passes = [], [], []
        for seed in range(args.replay):
            order = np.random.default_rng(seed).permutation(curves.shape[0])
            measured = _ReplayMeasurer(curves, order, cal.DEFAULT_SAMPLE, limit, cal)
            walk = tuple(sorted({*steps, start}))
            m = cal._walk(walk, measured.meets, start, descend=True, sweep=False)  # noqa: SLF001
            if m is not None:
                m = cal._refine(m, measured, m.bit_length())  # type: ignore[arg-type]  # noqa: SLF001
            chosen.append(m if m is not None else steps[-1])
            queries_used.append(measured.exact_queries)
            passes.append(measured.passes)
        recall = [float(held[min(m, len(held)) - 1]) for m in chosen]
        name = "sample 200 (before)" if limit == cal.DEFAULT_SAMPLE else f"sequential to {limit}"
        out["policies"][name] = {
            "share_below_target": float(np.mean([r < TARGET for r in recall])),
            "min_held_out": min(recall),
            "mean_multiplier": float(np.mean(chosen)),
            "median_multiplier": float(np.median(chosen)),
            "mean_exact_queries": float(np.mean(queries_used)),
            "mean_exact_passes": float(np.mean(passes)),
        }
        print(name, json.dumps(out["policies"][name]), flush=True)
    return out


def _uptime() -> str:
    command = ["uptime"]
    return subprocess.run(command, check=False, capture_output=True, text=True).stdout.strip()


def main() -> None:
    """Parse the arguments; run one side, the comparison, or the replay; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["synthetic", "sentences"], default="synthetic")
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=40_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--quantization", choices=["binary", "pq"], default="binary")
    parser.add_argument("--compare", nargs="*", default=[], help="NAME=TREE pairs, built one after the other")
    parser.add_argument("--tree", default=str(REPO), help="(one side) the tree to import langchain_vq from")
    parser.add_argument("--growth-rules", action="store_true", help="replay the damped growth rule too")
    parser.add_argument("--replay", type=int, default=0, help="resampled calibrations per policy")
    parser.add_argument(
        "--max-multiplier", type=int, default=256, help="(replay) held-out curve up to this m"
    )
    parser.add_argument(
        "--max-sample", type=int, default=0, help="(one side) DEFAULT_MAX_SAMPLE; 0: the tree's"
    )
    parser.add_argument("--side-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.side_out:
        args.side_out.write_text(json.dumps(side(args)))
        return
    sys.path.insert(0, str(REPO))
    from benchmarks._common import run_record

    record = run_record(
        args.n, 384, args.queries, 10, data=args.data, batch=args.batch, quantization=args.quantization
    )
    record["uptime_start"] = _uptime()
    if args.replay:
        record["replay"] = replay(args)
    sides: dict[str, Any] = {}
    for pair in args.compare:
        name, tree = pair.split("=", 1)
        tree, _, max_sample = tree.partition("@")
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            command = [sys.executable, __file__, "--tree", tree, "--side-out", tmp.name, "--data", args.data]
            command += ["--max-sample", max_sample] if max_sample else []
            command += ["--n", str(args.n), "--batch", str(args.batch), "--queries", str(args.queries)]
            command += ["--quantization", args.quantization] + (
                ["--growth-rules"] if args.growth_rules else []
            )
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            subprocess.run(command, check=True, env=env, cwd=tree)
            sides[name] = json.loads(Path(tmp.name).read_text())
    if sides:
        record["sides"] = sides
    record["uptime_end"] = _uptime()
    out = args.out or REPO / "benchmarks" / "results" / "calibration_policy.json"
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
