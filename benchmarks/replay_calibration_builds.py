"""Calibration rules replayed over whole builds: dips at and between calibrations, multiplier served.

A store calibrates at its first add and whenever its live rows have doubled
(``calibration.RECALIBRATE_GROWTH``); between calibrations it serves the last multiplier grown
with the rows (``Calibration.multiplier_for``). Whether a rule holds recall@10 >= 0.99 "after
every add" therefore depends on a sequence of noisy choices, not one. This script measures it.

1. **Curves** (built when ``--cache`` has none for these settings): one store built by adds of ``--batch`` rows (``partitions=0``: ranked
   from one scan; fixed multiplier, so no calibration cost), and after every add each of
   ``--queries`` held-out queries' recall@10 at every multiplier up to ``--max-multiplier``
   (``measure_default_recall.per_query_curves``), cached as ``.npz``. Held-out and sampled stored
   rows are queries alike (session 10: 6,000 of each, 0.9900 / 0.9899).
2. **Replay** (``--resamples N``): per rule, N builds; each draws its calibration queries from
   the curves at each calibration point (seeded, without replacement), applies the rule in
   order (walk both ways, bisection to the integer: the smallest integer meeting the rule),
   measures the growth exponent from the last two calibrations (``calibration.with_growth``),
   and serves the grown multiplier after every add. Each choice is judged by the mean curve of
   all held-out queries at that add. Per rule: the share of calibrations below 0.99 (a dip
   right after a calibration), the share of adds in between below 0.99, the share of builds
   with any dip, the mean served multiplier per add and at the last add, and the exact
   query-rows computed per build (the cost of exact truth). Simplifications: a calibration's
   200 queries are among the 3,000 that judge it (7%), and early stopping is not replayed (it
   only decides clear misses, which the full sample misses too).

Run: ``python benchmarks/replay_calibration_builds.py --data synthetic --n 400000 --batch 40000``
(and ``--data sentences --n 200000 --batch 20000``); writes ``--out``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

TARGET = 0.99


def build_curves(
    data: str, n: int, batch: int, queries: int, max_multiplier: int, cache: Path
) -> dict[str, Any]:
    """Per add: live rows and ``[queries, max_multiplier]`` per-query recall@10 curves (cached)."""
    if cache.exists():
        loaded = np.load(cache)
        return {
            "rows": loaded["rows"].tolist(),
            "curves": [loaded[f"c{i}"] for i in range(len(loaded["rows"]))],
        }
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from benchmarks.measure_calibration_policy import load_data, running_truth
    from benchmarks.measure_default_recall import per_query_curves
    from langchain_vq import VQVectorStore

    vectors, held = load_data(data, n, queries)
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=384),
        quantization="binary",
        rescore_multiplier=16,
        quantizer_options={"partitions": 0},
    )
    state: dict[str, Any] = {}
    rows, curves = [], []
    for lo in range(0, vectors.shape[0], batch):
        t = time.perf_counter()
        hi = min(lo + batch, vectors.shape[0])
        store.add_embeddings(
            [f"doc {i}" for i in range(lo, hi)], vectors[lo:hi], ids=[str(i) for i in range(lo, hi)]
        )
        truth = running_truth(held, lo, vectors[lo:hi], state)
        curves.append(per_query_curves(store, truth, held, max_multiplier).astype(np.float32))
        rows.append(hi)
        print(f"{hi} rows: {time.perf_counter() - t:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    np.savez(cache, rows=np.array(rows), **{f"c{i}": c for i, c in enumerate(curves)})
    return {"rows": rows, "curves": curves}


class _Choice:
    """The store's walk (``calibration._walk``/``_refine``) over a rule's met-or-not per multiplier."""

    def __init__(self, met: np.ndarray) -> None:
        self.ok, self.met = met, {}

    def meets(self, m: int) -> bool:
        self.met[m] = bool(self.ok[min(m, self.ok.size) - 1])
        return self.met[m]


def walk(met: np.ndarray, start: int) -> int:
    """The multiplier the store's walk from ``start`` chooses given the rule's verdicts ``met[m - 1]``."""
    import langchain_vq.calibration as cal

    steps = tuple(sorted({*cal.DEFAULT_MULTIPLIERS, start}))
    choice = _Choice(met)
    m = cal._walk(steps, choice.meets, start, descend=True, sweep=False)  # noqa: SLF001
    if m is None:
        return steps[-1]
    return cal._refine(m, choice, m.bit_length())  # type: ignore[arg-type]  # noqa: SLF001


def deviation_floor(mean: np.ndarray, k: int = 10) -> np.ndarray:
    """The smallest per-query deviation possible at ``mean`` (``calibration._standard_error``'s floor)."""
    imperfect = np.minimum(1.0, (1.0 - mean) * k)
    return np.sqrt(imperfect * (1.0 - imperfect)) / k


def verdicts(values: np.ndarray, rule: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per multiplier: whether the rule's test passes on these per-query curves, and their mean."""
    n = values.shape[0]
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    deviation = np.maximum(std, deviation_floor(mean))
    if rule.get("tail"):  # an honest floor: per-query deviation measured on large held-out sets
        deviation = np.maximum(deviation, rule["tail"] * np.sqrt(np.maximum(1.0 - mean, 0.0)))
    error = deviation / math.sqrt(n)
    goal = TARGET + rule.get("margin", 0.003)
    return (mean >= goal) & (mean - rule["z"] * error >= TARGET), mean


def growth_exponent(
    m: float, r: int, m_prev: float | None, r_prev: int | None, g_prev: float, floor: float
) -> float:
    """``calibration.with_growth``'s exponent: from the last two calibrations, clamped, noise kept out."""
    if m_prev is None or r_prev is None:
        return 1.0
    span = r / r_prev
    measured = math.log(m / m_prev) / math.log(span) if span > 1 else 0.0
    return max(floor, measured) if span >= 1.5 and measured <= 1.0 else g_prev


def replay_build(
    rows: list[int], curves: list[np.ndarray], rule: dict[str, Any], seed: int
) -> dict[str, Any]:
    """One build under ``rule``: per add, the multiplier served and whether it is a calibration.

    ``rule``: ``z`` (lower bound of the first calibration, and of every one without ``pool``),
    ``pooled_z`` (of pooled ones), ``pool`` (``"store"``: ``calibration.pooled_multiplier``;
    a number: the weight of the measurement in log m against the prediction grown by
    ``pool_growth``, or by the last exponent measured, at least ``pool_measured``), ``tail``
    (a per-query deviation floor ``tail * sqrt(1 - mean)``), ``sample``, ``carry`` and
    ``fresh`` (exact truth kept across calibrations: ``sample`` queries carried, ``fresh`` new
    ones each time), ``floor`` (the growth exponent's floor between calibrations).
    """
    import langchain_vq.calibration as cal

    rng = np.random.default_rng(seed)
    total = curves[0].shape[0]
    sample = rule.get("sample", 200)
    floor = rule.get("floor", 0.75)
    served, at_calibration, cost = [], [], 0
    spread: list[bool] = []  # per pooled calibration: measurement and prediction beyond POOL_SPREAD
    last: dict[str, Any] | None = None
    carried = np.empty(0, dtype=np.int64)
    for r, curve in zip(rows, curves, strict=True):
        due = last is None or r >= 2 * last["rows"]
        if due:
            if rule.get("carry") and carried.size:
                # Exact truth kept from the last calibration, extended by the rows added since.
                fresh = rng.choice(
                    np.setdiff1d(np.arange(total), carried), size=rule.get("fresh", 0), replace=False
                )
                cost += carried.size * (r - last["rows"]) + fresh.size * r
                chosen_queries = np.concatenate([carried, fresh])
            else:
                chosen_queries = rng.choice(total, size=sample, replace=False)
                cost += chosen_queries.size * r
            carried = chosen_queries
            z = rule["z"] if last is None or not rule.get("pool") else rule.get("pooled_z", rule["z"])
            met, _ = verdicts(curve[chosen_queries], {**rule, "z": z})
            start = 16 if last is None else last["m"]
            m = walk(met, start)
            own = m
            if rule.get("pool") == "store" and last is not None:
                predicted = last["m"] * (r / last["rows"]) ** cal.pooled_exponent(last["raw"])
                spread.append(abs(math.log(m / predicted)) > math.log(cal.POOL_SPREAD))
                m = cal.pooled_multiplier(m, last["m"], r / last["rows"], last["raw"])  # the store's rule
            elif rule.get("pool") and last is not None:
                # Shrink toward the last calibration's prediction, in log m, with weight ``pool``.
                exponent = rule.get("pool_growth", last["g"])
                if rule.get("pool_trend") is not None and last.get("trend") is not None:
                    exponent = min(1.0, max(rule["pool_trend"], last["trend"]))
                if rule.get("pool_measured") and last.get("raw") is not None:
                    exponent = min(1.0, max(rule["pool_measured"], last["raw"]))
                predicted = math.log(last["m"]) + exponent * math.log(r / last["rows"])
                w = rule["pool"]
                m = max(1, math.ceil(math.exp(w * math.log(m) + (1 - w) * predicted) - 1e-9))
            g = growth_exponent(
                m,
                r,
                None if last is None else last["m"],
                None if last is None else last["rows"],
                1.0 if last is None else last["g"],
                floor,
            )
            raw = None if last is None else math.log(m / last["m"]) / math.log(r / last["rows"])
            trend = None if last is None else math.log(own / last["own"]) / math.log(r / last["rows"])
            last = {"rows": r, "m": m, "g": g, "raw": raw, "own": own, "trend": trend}
            served.append(m)
        else:
            assert last is not None
            grown = math.ceil(last["m"] * (r / last["rows"]) ** last["g"])
            served.append(max(last["m"], min(grown, 1024)))
        at_calibration.append(due)
    return {"served": served, "at_calibration": at_calibration, "cost": cost, "spread": spread}


def evaluate(
    rows: list[int], curves: list[np.ndarray], rule: dict[str, Any], resamples: int
) -> dict[str, Any]:
    """The rule over ``resamples`` replayed builds: dip shares, multipliers served, exact cost."""
    held = [c.mean(axis=0) for c in curves]
    recall_of = [lambda m, h=h: float(h[min(m, h.size) - 1]) for h in held]
    by_calibration: dict[int, list[bool]] = {}
    spreads: list[bool] = []
    cal_dips, add_dips, builds_dipped, served, last_m, costs, worst = [], [], [], [], [], [], 1.0
    for seed in range(resamples):
        build = replay_build(rows, curves, rule, seed)
        recalls = [recall_of[i](m) for i, m in enumerate(build["served"])]
        worst = min(worst, *recalls)
        cal_dips += [r < TARGET for r, c in zip(recalls, build["at_calibration"], strict=True) if c]
        add_dips += [r < TARGET for r, c in zip(recalls, build["at_calibration"], strict=True) if not c]
        builds_dipped.append(any(r < TARGET for r in recalls))
        for i, (r, c) in enumerate(zip(recalls, build["at_calibration"], strict=True)):
            if c:
                by_calibration.setdefault(rows[i], []).append(r < TARGET)
        served.append(build["served"])
        last_m.append(build["served"][-1])
        costs.append(build["cost"])
        spreads += build["spread"]
    served_array = np.array(served, dtype=float)
    return {
        "rule": rule,
        "dip_share_at_calibrations": round(float(np.mean(cal_dips)), 4),
        "dip_share_by_calibration": {str(r): round(float(np.mean(v)), 4) for r, v in by_calibration.items()},
        "dip_share_between": round(float(np.mean(add_dips)), 4) if add_dips else 0.0,
        "builds_with_a_dip": round(float(np.mean(builds_dipped)), 4),
        "min_held_out": round(worst, 4),
        "mean_served_per_add": [round(float(v), 1) for v in served_array.mean(axis=0)],
        "mean_served": round(float(served_array.mean()), 1),
        "mean_served_last": round(float(np.mean(last_m)), 1),
        "p90_served_last": round(float(np.percentile(last_m, 90)), 1),
        "exact_query_rows_per_build": int(np.mean(costs)),
        "pooled_beyond_spread": round(float(np.mean(spreads)), 4) if spreads else None,
    }


def tail_deviation(curves: list[np.ndarray], low: float = 0.98, high: float = 0.998) -> dict[str, float]:
    """Per-query deviation over ``sqrt(1 - mean)`` on all held-out queries, where the mean is near the target.

    A binomial miss per neighbour gives about ``0.32`` (``sqrt(1 / k)``); heavy tails (a few
    queries losing several neighbours) give more. Quantiles over every add and multiplier.
    """
    ratios = []
    for curve in curves:
        mean, std = curve.mean(axis=0), curve.std(axis=0)
        keep = (mean >= low) & (mean <= high)
        ratios += (std[keep] / np.sqrt(1.0 - mean[keep])).tolist()
    values = np.array(ratios)
    return {
        "points": int(values.size),
        "median": round(float(np.median(values)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "max": round(float(values.max()), 3),
    }


RULES: list[dict[str, Any]] = [
    {"name": "before: z=3, 200 queries", "z": 3.0},
    {"name": "z=2.33", "z": 2.33},
    {"name": "z=2", "z": 2.0},
    {"name": "tail floor 0.5, z=2.33", "z": 2.33, "tail": 0.5},
    {"name": "store: z=3 first, pooled z=2, trend >= 0.4", "z": 3.0, "pooled_z": 2.0, "pool": "store"},
    {"name": "pooled z=2.33, growth 0.4", "z": 3.0, "pooled_z": 2.33, "pool": 0.5, "pool_growth": 0.4},
    {"name": "pooled z=1.5, growth 0.4", "z": 3.0, "pooled_z": 1.5, "pool": 0.5, "pool_growth": 0.4},
    {"name": "pooled z=2, growth 0.5", "z": 3.0, "pooled_z": 2.0, "pool": 0.5, "pool_growth": 0.5},
    {"name": "pooled z=2, growth 0.25", "z": 3.0, "pooled_z": 2.0, "pool": 0.5, "pool_growth": 0.25},
    {"name": "pooled z=2, growth 0", "z": 3.0, "pooled_z": 2.0, "pool": 0.5, "pool_growth": 0.0},
    {
        "name": "pooled z=2, growth measured >= 0.25",
        "z": 3.0,
        "pooled_z": 2.0,
        "pool": 0.5,
        "pool_growth": 0.5,
        "pool_measured": 0.25,
    },
    {
        "name": "pooled z=2.33, weight 0.6, growth 0.25",
        "z": 3.0,
        "pooled_z": 2.33,
        "pool": 0.6,
        "pool_growth": 0.25,
    },
    {"name": "truth kept: 375 queries, z=2.33", "z": 2.33, "carry": True, "sample": 375, "fresh": 0},
    {"name": "truth kept: 300 + 100 fresh, z=2", "z": 2.0, "carry": True, "sample": 300, "fresh": 100},
]


def main() -> None:
    """Build or load the curves, replay every rule, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["synthetic", "sentences"], default="synthetic")
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=40_000)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--max-multiplier", type=int, default=256)
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()), help="curves' .npz folder")
    parser.add_argument("--rules", type=Path, help="JSON list of rules (default: RULES)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from benchmarks._common import run_record

    record = run_record(
        args.n, 384, args.queries, 10, data=args.data, batch=args.batch, quantization="binary"
    )
    cache = args.cache / f"calibration_curves_{args.data}_{args.n}_{args.batch}_{args.queries}.npz"
    built = build_curves(args.data, args.n, args.batch, args.queries, args.max_multiplier, cache)
    rows, curves = built["rows"], built["curves"]
    held = [c.mean(axis=0) for c in curves]
    record["held_out_needed"] = {
        str(r): next((m for m, v in enumerate(h, start=1) if v >= TARGET), None)
        for r, h in zip(rows, held, strict=True)
    }
    record["tail_deviation"] = tail_deviation(curves)
    rules = json.loads(args.rules.read_text()) if args.rules else RULES
    record["rules"] = []
    for rule in rules:
        result = evaluate(rows, curves, rule, args.resamples)
        record["rules"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "mean_served_per_add"}), flush=True)
    record["load_end"] = os.getloadavg()
    out = args.out or REPO / "benchmarks" / "results" / f"calibration_builds_{args.data}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
