"""Where a default binary query's time goes, stage by stage, beside FAISS ``IndexFlatIP``.

One process, one thread. A default store (binary fast scan, float16 rescoring, ``partitions=
"auto"``: lists from 200k rows) is built by ``--adds`` equal adds of synthetic rows (seed 0), or
opened from ``--store``; queries are seed 1. Then, in the same run:

- **store**: ``similarity_search_with_score_by_vector(k=10)`` at the calibrated multiplier, every
  query once untimed (every page the queries read is mapped), then timed; p50 wall and thread
  CPU time, recall@10 against exact float search;
- **stages**: the same queries again with each stage wrapped in a timer (thread CPU time,
  inclusive and exclusive of the stages inside it): the IVF kernel (``IVFFastScan.search``), the
  tie handling (``_by_score_then_row``), the candidate pooling (``pooled_top_k``), the gathers
  (``_stored_rows``, with the ``mincore`` probes of ``_prefetch``), the float16 widening
  (``half_bits_to_float``), the float scores (``_pairwise_similarity``), and the store's Python
  around them (``Collection.search``, ``_rows_of_hits``, ``Document`` building);
- **IndexFlatIP**: FAISS's exact search over the float32 rows, the same queries; its p50 over
  the store's p50 is the speedup issue 12 asks to reach 20x at 1M;
- **kernel variants** (``--implem``): the probe of one query (and of a batch of 32) under FAISS's
  ``implem`` 0 (automatic), 11 and 13, same rows and scores checked;
- **float16 widening**: ``half_to_float`` against FAISS's ``ScalarQuantizer`` decode and numpy's
  cast, for one query's candidates and for an exact scan's 16k-row block.

Run: ``python benchmarks/measure_query_stages.py [--rows 200000] [--adds 10] [--queries 300]``;
writes ``benchmarks/results/query_stages.json`` (``--out`` elsewhere). At 1M (the lead's rerun):
``python benchmarks/measure_query_stages.py --rows 1000000 --adds 10 --queries 1000 --implem
--out benchmarks/results/query_stages_1m.json``.
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

import faiss  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import percentiles, run_record  # noqa: E402
from langchain_vq.evaluation import recall_at_k  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
K = 10
DIM = 384


class StageTimers:
    """Wraps functions and methods in thread-CPU timers, inclusive and exclusive of nested ones."""

    def __init__(self) -> None:
        self.inclusive: dict[str, float] = {}
        self.exclusive: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[float] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            timers._stack.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                inner = timers._stack.pop()
                timers.inclusive[label] = timers.inclusive.get(label, 0.0) + spent
                timers.exclusive[label] = timers.exclusive.get(label, 0.0) + spent - inner
                timers.calls[label] = timers.calls.get(label, 0) + 1
                if timers._stack:
                    timers._stack[-1] += spent

        self._undo.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def report(self, queries: int) -> dict[str, dict[str, float]]:
        return {
            label: {
                "calls_per_query": self.calls[label] / queries,
                "inclusive_ms": 1e3 * self.inclusive[label] / queries,
                "exclusive_ms": 1e3 * self.exclusive[label] / queries,
            }
            for label in sorted(self.inclusive, key=lambda label: -self.inclusive[label])
        }


def build(path: Path, x: np.ndarray, adds: int) -> float:
    """The default store at ``path`` from ``adds`` equal adds; returns the seconds."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    store = VQVectorStore(DeterministicFakeEmbedding(size=x.shape[1]), path=path)
    start = time.perf_counter()
    for part in np.array_split(np.arange(x.shape[0]), adds):
        ids = [str(i) for i in part]
        store.add_embeddings([f"doc {i}" for i in part], x[part], [{"i": int(i)} for i in part], ids)
    return time.perf_counter() - start


def timed_queries(store: Any, queries: np.ndarray) -> tuple[list[float], list[float], list[list[int]]]:
    """Wall and thread-CPU seconds per query, and the ids found."""
    walls, cpus, found = [], [], []
    for query in queries:
        wall, cpu = time.perf_counter(), time.thread_time()
        pairs = store.similarity_search_with_score_by_vector(query, k=K)
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
        found.append([int(doc.id) for doc, _ in pairs])
    return walls, cpus, found


def stage_breakdown(store: Any, queries: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-stage thread CPU time per query (ms) over ``queries``, timers on."""
    from langchain_vq import collection, vectorstore
    from langchain_vq.quantization import _fast_scan, _ivf, base
    from langchain_vq.search import engine

    timers = StageTimers()
    for owner, name, label in [
        (vectorstore.VQVectorStore, "similarity_search_with_score_by_vector", "query (total)"),
        (vectorstore.VQVectorStore, "_scored", "Documents and scores"),
        (collection.Collection, "search", "Collection.search"),
        (collection.Collection, "check_vectors", "query checks"),
        (collection.Collection, "_rows_of_hits", "rows of hits"),
        (engine, "_code_scan", "code scan"),
        (base.Quantizer, "search_many", "search_many"),
        (_fast_scan.JoinedFastScan, "candidates", "joined candidates"),
        (_ivf, "_by_score_then_row", "probe, ties by row"),
        (_ivf.IVFFastScan, "search", "IVF fast-scan kernel"),
        (base, "pooled_top_k", "candidate order (pooled_top_k)"),
        (engine, "_rescore", "rescoring"),
        (engine, "_stored_rows", "gather (with mincore probes)"),
        (engine, "_prefetch", "mincore probes"),
        (engine, "half_bits_to_float", "float16 widening"),
        (engine, "_pairwise_similarity", "float scores"),
        (engine, "top_k", "rescored top k"),
    ]:
        if hasattr(owner, name):
            timers.wrap(owner, name, label)
    try:
        for query in queries:
            store.similarity_search_with_score_by_vector(query, k=K)
    finally:
        timers.restore()
    return timers.report(len(queries))


def kernel_variants(store: Any, queries: np.ndarray) -> dict[str, Any]:
    """FAISS's IVF kernel under implem 0 (automatic) / 11 / 13: CPU ms per query, one query and 32.

    The kernel is called as ``IVFFastScan.search`` calls it (same rows fetched); whether a
    single query's probe keeps the same rows and scores under each is checked through ``probe``.
    """
    from langchain_vq.quantization import _ivf
    from langchain_vq.quantization._fast_scan import nibble_queries

    quantizer = store.collection.snapshot.quantizer
    scans = [entry[1] for entry in quantizer._ivf_scans._entries.values()]  # noqa: SLF001 - its built scan
    if not scans:
        return {"skipped": "the store has no lists (fewer rows than partitions='auto' needs)"}
    probed = scans[0].index
    scan, nprobe = probed.scan, probed.nprobe
    k = K * store.rescore_multiplier
    fetch = k + _ivf._TIE_ROWS + k // _ivf._TIE_FRACTION  # noqa: SLF001 - what probe fetches
    index = scan._index  # noqa: SLF001 - the FAISS index measured
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    laid_out = nibble_queries(queries, scan._order)  # noqa: SLF001
    out: dict[str, Any] = {"k": k, "fetch": fetch, "nprobe": nprobe}
    for batch in (1, 32):
        best: dict[int, float] = {}
        for _ in range(3):  # interleaved rounds; the best round of each
            for implem in (0, 11, 13):
                index.implem = implem
                cpu = time.thread_time()
                for at in range(0, len(queries), batch):
                    index.search(laid_out[at : at + batch], fetch, params=params)
                spent = 1e3 * (time.thread_time() - cpu) / len(queries)
                best[implem] = min(best.get(implem, spent), spent)
        out[f"batch_{batch}_cpu_ms_per_query"] = {str(i): v for i, v in best.items()}
    original = _ivf._SINGLE_QUERY_IMPLEM  # noqa: SLF001 - the setting compared
    found = {}
    for implem in (0, 11, 13):
        _ivf._SINGLE_QUERY_IMPLEM = implem  # noqa: SLF001
        found[implem] = [_ivf.probe(scan, q[None], k, nprobe) for q in queries]
    _ivf._SINGLE_QUERY_IMPLEM = original  # noqa: SLF001
    out["single_query_same_rows_and_scores"] = all(
        np.array_equal(a[0], b[0]) and np.array_equal(np.sort(a[1]), np.sort(b[1]))
        for implem in (11, 13)
        for a, b in zip(found[implem], found[0], strict=True)
    )
    return out


def widening(rows: int) -> dict[str, float]:
    """ms to read ``rows`` x 384 float16 values as float32, three ways (best of 5 rounds)."""
    from langchain_vq.quantization.precision import half_to_float

    x = (np.random.default_rng(0).standard_normal((rows, DIM)) * 0.05).astype(np.float16)
    decoder = faiss.ScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16)
    ways = {
        "half_to_float": lambda: half_to_float(x),
        "faiss_scalar_quantizer": lambda: decoder.decode(x.view(np.uint8)),
        "numpy_cast": lambda: x.astype(np.float32),
    }
    assert all(f().tobytes() == x.astype(np.float32).tobytes() for f in ways.values())
    reps = max(3, 300_000 // rows)
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(5):
        for name, f in ways.items():
            start = time.thread_time()
            for _ in range(reps):
                f()
            best[name] = min(best[name], 1e3 * (time.thread_time() - start) / reps)
    return best


def main(ns: argparse.Namespace) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    faiss.omp_set_num_threads(1)
    result = run_record(ns.rows, DIM, ns.queries, K, adds=ns.adds, store=ns.store)
    queries = synthetic_embeddings(ns.queries, DIM, seed=1)
    workdir = Path(tempfile.mkdtemp(prefix="query_stages_"))
    try:
        path = Path(ns.store) if ns.store else workdir / "store"
        x = synthetic_embeddings(ns.rows, DIM, seed=0)
        if not ns.store:
            result["ingest_s"] = build(path, x, ns.adds)
        store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path)
        snapshot = store.collection.snapshot
        result["store"] = {
            "segments": [v.segment.rows for v in snapshot.views],
            "rescore_multiplier": store.rescore_multiplier,
            "partitions": getattr(snapshot.quantizer, "partitions", None),
            "nprobe": getattr(snapshot.quantizer, "nprobe", None),
        }
        flat = faiss.IndexFlatIP(DIM)
        flat.add(x)
        flat_times, truth = [], []
        for query in queries:  # the store normalizes cosine queries; these are unit vectors already
            start = time.perf_counter()
            truth.append(flat.search(query[None], K)[1][0].tolist())
            flat_times.append(time.perf_counter() - start)
        timed_queries(store, queries)  # untimed pass: every page these queries read is mapped
        walls, cpus, found = timed_queries(store, queries)
        store_p50 = float(np.median(walls))
        flat_p50 = float(np.median(flat_times))
        result["store"].update(
            {
                "wall": percentiles(walls),
                "cpu_p50_ms": 1e3 * float(np.median(cpus)),
                "cpu_mean_ms": 1e3 * float(np.mean(cpus)),
                "recall_at_10": recall_at_k(found, truth, K),
            }
        )
        result["index_flat_ip"] = percentiles(flat_times)
        result["speedup_vs_index_flat_ip_p50"] = flat_p50 / store_p50
        result["stages_cpu_ms_per_query"] = stage_breakdown(store, queries)
        if ns.implem:
            result["kernel_variants"] = kernel_variants(store, queries)
        result["float16_widening_ms"] = {
            f"{rows}_rows": widening(rows) for rows in (K * store.rescore_multiplier, 16_384)
        }
        result["load_end"] = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    stages = result["stages_cpu_ms_per_query"]
    print(json.dumps({"store": result["store"], "speedup": result["speedup_vs_index_flat_ip_p50"]}, indent=1))
    for label, row in stages.items():
        print(f"{label:34s} {row['inclusive_ms']:7.3f} ms incl {row['exclusive_ms']:7.3f} ms excl")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--adds", type=int, default=10, help="equal adds that build the store")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--store", default="", help="open this store (built from --rows rows) instead")
    parser.add_argument("--implem", action="store_true", help="also time FAISS's IVF kernel variants")
    parser.add_argument("--out", default=str(RESULTS / "query_stages.json"))
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
