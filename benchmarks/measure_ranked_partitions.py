"""Calibration of a partitioned store from one candidate scan per query, against a search per multiplier.

Issue 12: with lists (the default from 200k rows), calibration measured every multiplier with a
search of every sampled query, since the partitioned scan's best ``n`` at two counts differed in
tied rows (FAISS keeps ties in the order it visits lists). Probes now order ties by row
(``_ivf.probe``), so a partitioned store is ranked from one scan like a full scan. One store,
built as users build it (adds of ``--batch`` rows, default options, a fixed multiplier so the adds
do not calibrate), then in the same run:

* for each ``--starts`` value, ``calibrate_multiplier`` as the store calls it (target 0.99,
  ``DEFAULT_MARGIN``, ``DEFAULT_CONFIDENCE_Z``, early stop, refinement, walking both ways),
  **ranked** (today) and **searched** (ranking turned off: the path partitioned stores took
  before), alternating which goes first, after a warm-up (lists packed, vectors read once):
  seconds, code scans and searches run (and the exact truth's share), the multipliers
  measured and the one chosen; the recall measured at each multiplier both measured must be
  equal;
* recall@10 on ``--queries`` held-out queries (seed 1) against exact float search at each
  chosen multiplier;
* p50 of single queries on one thread at the chosen multiplier with the probe ordering ties by
  row (today) and with FAISS's order (one kernel call, before), **interleaved** query by query.

Run: ``python benchmarks/measure_ranked_partitions.py [--n 300000]`` ->
``benchmarks/results/ranked_partitions.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
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

K = 10


@contextlib.contextmanager
def counting_scans(counts: dict[str, Any]) -> Any:
    """Count the collection's calls by kind (queries each) and their seconds.

    Kinds: ``candidate_scans`` (calibration's ranking), ``searches`` (two-stage) and ``exact``
    (the ground truth, the same for both ways of measuring).
    """
    from langchain_vq import collection as collection_module

    real = collection_module.search_segments

    def spy(views: Any, queries: Any, k: int, **kwargs: Any) -> Any:
        kind = "exact" if kwargs.get("quantizer") is None else "searches"
        kind = "candidate_scans" if kwargs.get("candidates_only") else kind
        t = time.perf_counter()
        hits = real(views, queries, k, **kwargs)
        counts[kind] += len(queries)
        counts[f"{kind}_s"] += time.perf_counter() - t
        return hits

    collection_module.search_segments = spy  # type: ignore[assignment]
    try:
        yield
    finally:
        collection_module.search_segments = real  # type: ignore[assignment]


@contextlib.contextmanager
def ranking_off(quantizer: Any) -> Any:
    """Partitioned stores' calibration before: no ranking from one scan, a search per multiplier."""
    cls = type(quantizer)
    original = cls.__dict__["ranks_candidates_by_one_score"]
    cls.ranks_candidates_by_one_score = property(lambda _: False)  # type: ignore[assignment]
    try:
        yield
    finally:
        cls.ranks_candidates_by_one_score = original  # type: ignore[assignment]


@contextlib.contextmanager
def faiss_tie_order() -> Any:
    """The probe before: one kernel call per probe, tied rows at the k-th place as FAISS keeps them."""
    from langchain_vq.quantization import _ivf

    today = _ivf._by_score_then_row  # noqa: SLF001 - the probe measured

    def one_call(scan: Any, queries: Any, k: int, nprobe: int) -> tuple[Any, Any]:
        return scan.search(queries, k, nprobe)  # type: ignore[no-any-return]

    _ivf._by_score_then_row = one_call  # type: ignore[assignment]  # noqa: SLF001
    try:
        yield
    finally:
        _ivf._by_score_then_row = today  # type: ignore[assignment]  # noqa: SLF001


def main(ns: argparse.Namespace) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore
    from langchain_vq.calibration import (
        DEFAULT_CONFIDENCE_Z,
        DEFAULT_MARGIN,
        DEFAULT_REFINE,
        calibrate_multiplier,
    )
    from langchain_vq.evaluation import exact_top_k, recall_at_k
    from langchain_vq.quantization._partitions import PartitionedQuantizer
    from langchain_vq.synthetic import synthetic_embeddings

    record = run_record(
        ns.n,
        384,
        ns.queries,
        K,
        batch=ns.batch,
        quantization=ns.quantization,
        starts=ns.starts,
        timed=ns.timed,
    )
    x = synthetic_embeddings(ns.n, 384, seed=0)
    queries = synthetic_embeddings(ns.queries, 384, seed=1)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_top_k(queries, x, K).tolist()
    root = Path(tempfile.mkdtemp(prefix="ranked-partitions-", dir=ns.tmp))
    try:
        store = VQVectorStore(
            DeterministicFakeEmbedding(size=384),
            path=root / "s",
            quantization=ns.quantization,
            rescore_multiplier=16,
        )
        t = time.perf_counter()
        for lo in range(0, ns.n, ns.batch):
            ids = [str(i) for i in range(lo, min(ns.n, lo + ns.batch))]
            store.add_embeddings([f"doc {i}" for i in ids], x[lo : lo + ns.batch], ids=ids)
        record["build_s"] = round(time.perf_counter() - t, 1)
        collection = store.collection
        snapshot = collection.snapshot
        quantizer = snapshot.quantizer
        if not isinstance(quantizer, PartitionedQuantizer) or not quantizer.partitioned:
            msg = f"the store has no lists at {ns.n} rows; give --n of at least 200000 (the 'auto' threshold)"
            raise SystemExit(msg)
        record["partitions"], record["nprobe"] = quantizer.partitions, quantizer.nprobe
        record["segments"] = [v.live_count for v in snapshot.views]
        record["ranked_candidates"] = collection.ranked_candidates(snapshot)
        # Warm up outside the timed walks: the first search packs the joined lists, the first
        # exact pass reads the vectors from disk (10 s against 2 s warm at 300k, PQ).
        collection.search(unit[:1], K, rescore_multiplier=16)
        collection.search_keys(unit[:8], K, exact=True)

        def calibrate(start: int, ranked: bool) -> dict[str, Any]:
            counts: dict[str, Any] = dict.fromkeys(
                ("candidate_scans", "searches", "exact", "candidate_scans_s", "searches_s", "exact_s"), 0
            )
            off = contextlib.nullcontext() if ranked else ranking_off(quantizer)
            with counting_scans(counts), off:
                t = time.perf_counter()
                calibration = calibrate_multiplier(
                    collection,
                    target=0.99,
                    margin=DEFAULT_MARGIN,
                    z=DEFAULT_CONFIDENCE_Z,
                    early_stop=True,
                    start=start,
                    descend=True,
                    refine=DEFAULT_REFINE,
                )
                seconds = time.perf_counter() - t
            return {
                "seconds": round(seconds, 2),
                "multiplier": calibration.multiplier,
                "met": calibration.met,
                "recall_by_multiplier": calibration.recall_by_multiplier,
                **{name: round(value, 2) if name.endswith("_s") else value for name, value in counts.items()},
            }

        walks = []
        for i, start in enumerate(ns.starts):
            order = (True, False) if i % 2 == 0 else (False, True)  # alternate which runs first
            runs = {("ranked" if ranked else "searched"): calibrate(start, ranked) for ranked in order}
            both = set(runs["ranked"]["recall_by_multiplier"]) & set(runs["searched"]["recall_by_multiplier"])
            same = all(
                runs["ranked"]["recall_by_multiplier"][m] == runs["searched"]["recall_by_multiplier"][m]
                for m in both
            )
            walk = {
                "start": start,
                **runs,
                "speedup": round(runs["searched"]["seconds"] / runs["ranked"]["seconds"], 2),
                # The exact truth (one pass, the same both ways) left out: what ranking changes.
                "speedup_without_truth": round(
                    (runs["searched"]["seconds"] - runs["searched"]["exact_s"])
                    / (runs["ranked"]["seconds"] - runs["ranked"]["exact_s"]),
                    2,
                ),
                "equal_recall_where_both_measured": same,
                "load": os.getloadavg(),
            }
            walks.append(walk)
            print(json.dumps(walk), flush=True)
        record["calibrations"] = walks

        chosen = sorted({w[r]["multiplier"] for w in walks for r in ("ranked", "searched")})
        heldout = {}
        for m in chosen:
            found = [[int(r.id) for r in rows] for rows in collection.search(unit, K, rescore_multiplier=m)]
            heldout[str(m)] = round(recall_at_k(found, truth, K), 4)
        record["heldout_recall_at_10"] = heldout
        print(json.dumps(heldout), flush=True)

        m = walks[0]["ranked"]["multiplier"]
        times: dict[str, list[float]] = {"ties_by_row": [], "faiss_order": []}
        for i in range(ns.timed):
            for name in ("ties_by_row", "faiss_order") if i % 2 == 0 else ("faiss_order", "ties_by_row"):
                probe_as = contextlib.nullcontext() if name == "ties_by_row" else faiss_tie_order()
                with probe_as:
                    t = time.perf_counter()
                    collection.search(unit[i % ns.queries : i % ns.queries + 1], K, rescore_multiplier=m)
                    times[name].append(time.perf_counter() - t)
        record["search_p50_ms"] = {
            "rescore_multiplier": m,
            **{name: round(float(np.median(spent)) * 1e3, 3) for name, spent in times.items()},
        }
        print(json.dumps(record["search_p50_ms"]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record["load_end"] = os.getloadavg()
    ns.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--quantization", default="binary", choices=["binary", "pq"])
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (recall)")
    parser.add_argument("--timed", type=int, default=400, help="single queries timed per probe order")
    parser.add_argument("--starts", type=int, nargs="*", default=[32, 96, 256], help="where walks start")
    parser.add_argument("--tmp", default=None, help="folder for the temporary store")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "ranked_partitions.json"
    )
    main(parser.parse_args())
