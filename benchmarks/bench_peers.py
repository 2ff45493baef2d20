"""langchain_vq against the vector stores users would pick instead, on the same data in one run.

Methods (each built in its own process, then measured in fresh processes):

* ``vq-binary`` / ``vq-binary-two-stage`` / ``vq-int8`` / ``vq-pq``: ``VQVectorStore`` through its
  public API (``binary-two-stage``: ``quantizer_options={"fast_scan": False}``; results of runs
  before fast scan became the default have ``vq-binary-fast-scan`` instead)
  (``add_embeddings``; ``similarity_search_with_score_by_vector`` and
  ``batch_similarity_search_by_vector``), rescoring at several ``rescore_multiplier`` values with
  the default float16 vectors; ``vq-binary-float32`` / ``vq-binary-int8``: the other rescoring
  precisions; ``vq-binary-codes-only``: a codes-only store (``rescore=False``);
* FAISS: ``IndexFlatIP`` (exact), ``IndexBinaryFlat`` over sign bits (Hamming only, and with a
  hand-written numpy float rescoring from the memory-mapped ``.npy`` of floats),
  ``IndexScalarQuantizer`` (8 bit), ``IndexPQ`` (96 x 8 bit, the code size of our pq) and
  ``IndexRefineFlat`` over that PQ (FAISS's two-stage, floats in RAM) at several ``k_factor``;
* LangChain's ``InMemoryVectorStore`` (on the first 100k rows only: numbers at larger ``--n`` are
  extrapolated linearly, and say so);
* LanceDB ``IVF_PQ`` (48 sub-vectors, sqrt(n) partitions) with ``nprobes`` x ``refine_factor``.

Data: ``--n`` x 384 synthetic vectors from ``langchain_vq.synthetic.synthetic_embeddings`` (corpus
seed 0, queries seed 1: structure of all-MiniLM-L6-v2 embeddings) and, when the shared data folder
exists (``$LANGCHAIN_VQ_DATA``, default ``../shared/data``), SciFact (nDCG@10 and recall@10) and the
sentence set (recall@10).

Measures per method and setting: recall@10 against exact search; p50/p95 of single queries and
per-query time in batches of 32, on 1 thread (process pinned to one CPU) and on 2 threads; resident
memory after a cold open and after all queries (more than 1,000 queries per process at full
size); open time in a new process with the method's files evicted from the page cache; disk
bytes; ingest rate (build, training included). Hardware, versions and load averages are recorded.

Outputs ``benchmarks/results/peers.json``, ``peers.md`` and ``peers.png`` (recall@10 vs p50,
bubble area = resident memory). ``--quick`` is a smoke test on small data. ``--update`` measures
only ``--methods`` again (after a change to langchain_vq's defaults; name ``faiss-flat`` too, the
reference of the speed ratios) and replaces their entries in the existing ``peers.json``; the
report says which rows are from which run.

Run: ``python benchmarks/bench_peers.py [--n 1000000] [--quick]``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1].startswith("_"):
    # Child process: thread counts must be set before numpy / faiss / lance start their pools.
    _threads = os.environ.get("BENCH_THREADS", "1")
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LANCE_CPU_THREADS"):
        os.environ[_var] = _threads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("RUST_LOG", "error")
    os.environ.setdefault("LANCE_LOG", "error")

import argparse
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import MB, dir_bytes, evict, percentiles, run_record  # noqa: E402
from benchmarks.write_results import shown_setting, write_if_results  # noqa: E402

K = 10
DIM = 384
BATCH = 32
INMEMORY_ROWS = 100_000
TRAIN_ROWS = 100_000
TARGET_RECALL = 0.99
TARGET_VS_FLAT = 30.0
TARGET_VS_INMEMORY = 100.0
TARGET_RSS_FRACTION = 0.1
#: Largest store on disk, as a ratio to the raw float32 vectors, per rescoring precision.
TARGET_DISK_RATIO = {"vq-binary": 0.55, "vq-binary-int8": 0.32, "vq-binary-codes-only": 0.06}

#: Binary goes to 256: at 1M synthetic rows recall@10 is 0.985 at m=64 (neighbours are denser
#: than in the 49k real set, where m=16 gives 0.996).
VQ_MULTIPLIERS = {"binary": (4, 16, 32, 64, 128, 256), "int8": (2, 4), "pq": (2, 4, 8, 16)}
REFINE_K_FACTORS = (2, 4, 16, 32)
BINARY_RESCORE = (16, 64, 256)
LANCE_GRID = ((20, None), (20, 10), (50, 10), (50, 50), (100, 50), (200, 100))
#: langchain_vq modes that are not just a quantization name: the store's settings.
VQ_MODES: dict[str, dict[str, Any]] = {
    "binary-two-stage": {"quantization": "binary", "quantizer_options": {"fast_scan": False}},
    "binary-float32": {"quantization": "binary", "rescore_precision": "float32"},
    "binary-int8": {"quantization": "binary", "rescore_precision": "int8"},
    "binary-codes-only": {"quantization": "binary", "rescore": False},
}
METHODS = (
    "vq-binary",
    "vq-binary-float32",
    "vq-binary-int8",
    "vq-binary-codes-only",
    "vq-binary-two-stage",
    "vq-int8",
    "vq-pq",
    "faiss-flat",
    "faiss-binary",
    "faiss-sq8",
    "faiss-pq",
    "faiss-refine-pq",
    "lancedb",
    "inmemory",
)
LABELS = {
    "vq-binary": "langchain_vq binary",
    "vq-binary-fast-scan": "langchain_vq binary fast_scan",
    "vq-binary-two-stage": "langchain_vq binary, two stages (fast_scan=False)",
    "vq-binary-float32": "langchain_vq binary, float32 vectors",
    "vq-binary-int8": "langchain_vq binary, int8 vectors",
    "vq-binary-codes-only": "langchain_vq binary, codes only",
    "vq-int8": "langchain_vq int8",
    "vq-pq": "langchain_vq pq",
    "faiss-flat": "FAISS IndexFlatIP",
    "faiss-binary": "FAISS IndexBinaryFlat",
    "faiss-sq8": "FAISS IndexScalarQuantizer 8bit",
    "faiss-pq": "FAISS IndexPQ 96x8",
    "faiss-refine-pq": "FAISS IndexRefineFlat(PQ96)",
    "lancedb": "LanceDB IVF_PQ",
    "inmemory": "LangChain InMemoryVectorStore",
}


# -- small helpers -----------------------------------------------------------------------------
def compact_enabled() -> bool:
    """Whether langchain_vq stores are compacted after the batched adds (not with --no-compact)."""
    return os.environ.get("BENCH_NO_COMPACT") != "1"


def rss() -> dict[str, float]:
    """Resident memory of this process in MB: total, and anonymous (not file-backed)."""
    info = psutil.Process().memory_info()
    return {"rss_mb": info.rss / MB, "rss_anon_mb": (info.rss - info.shared) / MB}


def lancedb_status() -> dict[str, Any]:
    try:
        import lancedb
    except ImportError as exc:
        return {"installed": False, "reason": f"import lancedb failed: {exc}; pip install lancedb"}
    return {"installed": True, "version": lancedb.__version__}


# -- methods -----------------------------------------------------------------------------------
class Method:
    """Build once; in a fresh process: open, then search single queries and batches."""

    name = ""

    def __init__(self, index_path: Path, data: Path) -> None:
        self.path = index_path
        self.data = data

    def build(self, corpus: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def open(self) -> None:
        raise NotImplementedError

    def settings(self) -> list[tuple[str, Any]]:
        return [("default", None)]

    def search(self, q: np.ndarray, param: Any) -> list[int]:
        raise NotImplementedError

    def search_batch(self, qs: np.ndarray, param: Any) -> list[list[int]] | None:
        return [self.search(q, param) for q in qs]

    def files(self) -> Path:
        return self.path

    def bytes_per_vector(self) -> float | None:
        return None

    def multiplier(self, param: Any) -> int | None:  # noqa: ARG002 - langchain_vq methods only
        """The ``rescore_multiplier`` a setting searches with, when the method has one."""
        return None


class VQMethod(Method):
    def __init__(self, index_path: Path, data: Path, mode: str) -> None:
        super().__init__(index_path, data)
        self.mode = mode
        self.name = f"vq-{mode}"
        self.store_settings = VQ_MODES.get(mode, {"quantization": mode})
        self.quantization = self.store_settings["quantization"]

    def _embedding(self) -> Any:
        from langchain_core.embeddings import DeterministicFakeEmbedding

        return DeterministicFakeEmbedding(size=DIM)

    def build(self, corpus: np.ndarray) -> dict[str, Any]:
        from langchain_vq import VQVectorStore

        store = VQVectorStore(self._embedding(), path=self.path, **self.store_settings)
        step = 100_000
        for lo in range(0, corpus.shape[0], step):
            hi = min(lo + step, corpus.shape[0])
            store.add_embeddings([""] * (hi - lo), corpus[lo:hi], ids=[str(i) for i in range(lo, hi)])
        out: dict[str, Any] = {"segments_after_adds": len(store.collection.snapshot.views)}
        if compact_enabled():
            # Bulk load = batched adds + one compact(): one segment, quantizer trained on all rows.
            # Each segment is scanned with the full k * rescore_multiplier candidate count, so
            # 10 segments of 100k made a 1M binary query at m=128 2.3x slower (74 vs 32 ms).
            start = time.perf_counter()
            store.compact()
            out["compact_s"] = time.perf_counter() - start
        out["segments"] = len(store.collection.snapshot.views)
        # Files the current version references. The directory also holds the pre-compact segments
        # until the next cleanup (kept for readers of older versions), counted in disk_bytes.
        from langchain_vq.storage import store_info

        out["disk_live_bytes"] = store_info(str(self.path))["bytes"]["total"]
        out["disk_ratio_vs_raw_float32"] = out["disk_live_bytes"] / (corpus.shape[0] * corpus.shape[1] * 4)
        return out

    def open(self) -> None:
        from langchain_vq import VQVectorStore

        self.store = VQVectorStore(self._embedding(), path=self.path)
        # What a user gets: the multiplier calibrated at build for recall@10 0.99 (plus margin).
        self.default = self.store.rescore_multiplier

    def settings(self) -> list[tuple[str, Any]]:
        """The default (no ``rescore_multiplier`` passed), then a sweep of fixed multipliers."""
        if self.store_settings.get("rescore") is False:
            return [("codes only", 0)]
        sweep = [(f"m={m}", m) for m in VQ_MULTIPLIERS[self.quantization] if m != self.default]
        return [("default", None), *sweep]

    def multiplier(self, param: Any) -> int | None:
        if self.store_settings.get("rescore") is False:
            return None
        return self.default if param is None else int(param)

    def _kw(self, m: int | None) -> dict[str, Any]:
        return {"rescore_multiplier": m} if m else {}

    def search(self, q: np.ndarray, param: Any) -> list[int]:
        pairs = self.store.similarity_search_with_score_by_vector(q, k=K, **self._kw(param))
        return [int(d.id) for d, _ in pairs]

    def search_batch(self, qs: np.ndarray, param: Any) -> list[list[int]]:
        res = self.store.batch_similarity_search_by_vector(qs, k=K, **self._kw(param))
        return [[int(d.id) for d, _ in r] for r in res]

    def bytes_per_vector(self) -> float | None:
        quantizer = self.store.collection.snapshot.quantizer
        return float(quantizer.code_size) if quantizer is not None else None


class FaissMethod(Method):
    def __init__(self, index_path: Path, data: Path, kind: str) -> None:
        super().__init__(index_path, data)
        self.kind = kind
        self.name = f"faiss-{kind}"

    def build(self, corpus: np.ndarray) -> dict[str, Any]:
        import faiss

        d = corpus.shape[1]
        rng = np.random.default_rng(0)
        train = corpus[np.sort(rng.choice(corpus.shape[0], min(TRAIN_ROWS, corpus.shape[0]), replace=False))]
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "sq8":
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        elif self.kind in {"pq", "refine-pq"}:
            pq = faiss.IndexPQ(d, 96, 8, faiss.METRIC_INNER_PRODUCT)
            index = pq if self.kind == "pq" else faiss.IndexRefineFlat(pq)
        elif self.kind == "binary":
            index = faiss.IndexBinaryFlat(d)
            for lo in range(0, corpus.shape[0], 65_536):
                index.add(np.packbits(corpus[lo : lo + 65_536] > 0, axis=-1))
            faiss.write_index_binary(index, str(self.path))
            return {}
        else:
            raise ValueError(self.kind)
        if not index.is_trained:
            index.train(train)
        for lo in range(0, corpus.shape[0], 65_536):
            index.add(np.ascontiguousarray(corpus[lo : lo + 65_536]))
        faiss.write_index(index, str(self.path))
        return {}

    def open(self) -> None:
        import faiss

        self.faiss = faiss
        if self.kind == "binary":
            self.index = faiss.read_index_binary(str(self.path))
            self.floats = np.load(self.data / "corpus.npy", mmap_mode="r")
        else:
            self.index = faiss.read_index(str(self.path))
        self.threads = int(os.environ.get("BENCH_THREADS", "1"))
        faiss.omp_set_num_threads(self.threads)

    def settings(self) -> list[tuple[str, Any]]:
        if self.kind == "refine-pq":
            return [(f"k_factor={f}", f) for f in REFINE_K_FACTORS]
        if self.kind == "binary":
            return [("hamming only (sign bits)", 0)] + [
                (f"+ numpy float rescoring m={m} (floats mmapped)", m) for m in BINARY_RESCORE
            ]
        return [("default", None)]

    def _search(self, qs: np.ndarray, param: Any) -> np.ndarray:
        from langchain_vq.topk import top_k

        if self.kind == "refine-pq":
            self.index.k_factor = float(param)
        if self.kind == "binary":
            codes = np.packbits(qs > 0, axis=-1)
            n = K * param if param else K
            _, cand = self.index.search(codes, n)
            if not param:
                return cand
            out = np.empty((qs.shape[0], K), dtype=np.int64)
            for i in range(qs.shape[0]):
                rows = np.sort(cand[i])
                scores = self.floats[rows] @ qs[i]
                out[i] = rows[top_k(scores[None, :], K)[1][0]]
            return out
        return self.index.search(qs, K)[1]

    def search(self, q: np.ndarray, param: Any) -> list[int]:
        return self._search(q[None, :], param)[0].tolist()

    def search_batch(self, qs: np.ndarray, param: Any) -> list[list[int]]:
        return self._search(qs, param).tolist()

    def bytes_per_vector(self) -> float | None:
        return {"flat": 4 * DIM, "sq8": DIM, "pq": 96, "refine-pq": 96 + 4 * DIM, "binary": DIM / 8}[
            self.kind
        ]


class LanceMethod(Method):
    name = "lancedb"

    def build(self, corpus: np.ndarray) -> dict[str, Any]:
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        db = lancedb.connect(str(self.path))
        table = None
        step = 100_000
        for lo in range(0, corpus.shape[0], step):
            chunk = np.ascontiguousarray(corpus[lo : lo + step])
            batch = pa.table(
                {
                    "id": pa.array(np.arange(lo, lo + chunk.shape[0], dtype=np.int64)),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(chunk.ravel()), DIM),
                }
            )
            table = db.create_table("vectors", batch) if table is None else table
            if lo > 0:
                table.add(batch)
        partitions = max(1, round(math.sqrt(corpus.shape[0])))
        table.create_index(
            "vector", config=IvfPq(distance_type="dot", num_partitions=partitions, num_sub_vectors=48)
        )
        return {"num_partitions": partitions, "num_sub_vectors": 48}

    def open(self) -> None:
        import lancedb

        self.table = lancedb.connect(str(self.path)).open_table("vectors")

    def settings(self) -> list[tuple[str, Any]]:
        return [
            (f"nprobes={n}" + (f" refine_factor={r}" if r else " (no refine)"), (n, r)) for n, r in LANCE_GRID
        ]

    def _query(self, q: Any, param: Any) -> Any:
        nprobes, refine = param
        query = self.table.search(q).distance_type("dot").nprobes(nprobes).limit(K).select(["id"])
        if refine:
            query = query.refine_factor(refine)
        return query.to_arrow()

    def search(self, q: np.ndarray, param: Any) -> list[int]:
        return self._query(q, param)["id"].to_pylist()

    def search_batch(self, qs: np.ndarray, param: Any) -> list[list[int]]:
        table = self._query(list(qs), param)
        out: list[list[int]] = [[] for _ in range(qs.shape[0])]
        for qi, row_id in zip(table["query_index"].to_pylist(), table["id"].to_pylist(), strict=True):
            out[qi].append(row_id)
        return out

    def bytes_per_vector(self) -> float | None:
        return 48.0


class InMemoryMethod(Method):
    """LangChain's InMemoryVectorStore; "open" = load the vectors and add them (it has no file)."""

    name = "inmemory"

    def build(self, corpus: np.ndarray) -> dict[str, Any]:  # noqa: ARG002
        # No file: ingest = the same work as open (load the vectors, add_texts), timed here.
        self.open()
        return {"note": "in-memory only: rebuilt at every open (open_ms)"}

    def open(self) -> None:
        from langchain_core.embeddings import Embeddings
        from langchain_core.vectorstores import InMemoryVectorStore

        class Lookup(Embeddings):
            """Returns the stored vector of row ``int(text)``: no model involved."""

            def __init__(self, vectors: np.ndarray) -> None:
                self.vectors: np.ndarray | None = vectors

            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                return self.vectors[[int(t) for t in texts]].tolist()

            def embed_query(self, text: str) -> list[float]:
                return self.vectors[int(text)].tolist()

        lookup = Lookup(np.load(self.data / "corpus.npy"))
        corpus = lookup.vectors
        self.store = InMemoryVectorStore(lookup)
        step = 10_000
        for lo in range(0, corpus.shape[0], step):
            ids = [str(i) for i in range(lo, min(lo + step, corpus.shape[0]))]
            self.store.add_texts(ids, ids=ids)
        lookup.vectors = None  # only the store's own copy stays resident

    def search(self, q: np.ndarray, param: Any) -> list[int]:  # noqa: ARG002
        return [int(d.id) for d in self.store.similarity_search_by_vector(q.tolist(), k=K)]

    def search_batch(self, qs: np.ndarray, param: Any) -> list[list[int]] | None:  # noqa: ARG002
        return None  # no batch API

    def files(self) -> Path:
        return self.data / "corpus.npy"

    def bytes_per_vector(self) -> float | None:
        return None


def make_method(name: str, index_path: Path, data: Path) -> Method:
    if name.startswith("vq-"):
        return VQMethod(index_path, data, name[3:])
    if name.startswith("faiss-"):
        return FaissMethod(index_path, data, name[6:])
    if name == "lancedb":
        return LanceMethod(index_path, data)
    if name == "inmemory":
        return InMemoryMethod(index_path, data)
    raise ValueError(name)


# -- child processes ---------------------------------------------------------------------------
def pin(threads: int) -> list[int]:
    """Pin this process to ``threads`` CPUs (the first ones it may use)."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[:threads]
    os.sched_setaffinity(0, chosen)
    return chosen


def child_build(ns: argparse.Namespace) -> dict[str, Any]:
    data = Path(ns.data)
    corpus = np.load(data / "corpus.npy", mmap_mode="r")
    method = make_method(ns.method, Path(ns.index), data)
    cpus = pin(ns.threads)
    start = time.perf_counter()
    extra = method.build(corpus)
    seconds = time.perf_counter() - start
    files = method.files()
    return {
        "cpus": cpus,
        "ingest_s": seconds,
        "ingest_rows_per_s": corpus.shape[0] / seconds,
        "disk_bytes": dir_bytes(files) if method.name != "inmemory" else 0,
        **extra,
    }


def child_query(ns: argparse.Namespace) -> dict[str, Any]:
    from langchain_vq.evaluation import recall_at_k

    data = Path(ns.data)
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy").tolist()
    method = make_method(ns.method, Path(ns.index), data)
    out: dict[str, Any] = {"threads": ns.threads, "cpus": pin(ns.threads), "load_start": os.getloadavg()}
    out["rss_after_imports"] = rss()
    if ns.cold:
        out["evicted_bytes"] = evict(method.files())
    start = time.perf_counter()
    method.open()
    out["open_ms"] = (time.perf_counter() - start) * 1e3
    out["rss_after_open"] = rss()
    out["bytes_per_vector"] = method.bytes_per_vector()
    settings = method.settings()
    start = time.perf_counter()
    method.search(queries[0], settings[0][1])
    out["first_query_ms"] = (time.perf_counter() - start) * 1e3
    total_queries = 1
    runs = []
    for label, param in settings:
        for q in queries[1:4]:
            method.search(q, param)
        run: dict[str, Any] = {"setting": label}
        if method.multiplier(param) is not None:
            run["rescore_multiplier"] = method.multiplier(param)
        found: list[list[int]] = []
        # Batches of 32: per-query time, and the results recall is computed on.
        batch_times: list[float] = []
        t_end = time.perf_counter() + ns.batch_budget
        for lo in range(0, queries.shape[0], BATCH):
            chunk = queries[lo : lo + BATCH]
            t = time.perf_counter()
            res = method.search_batch(chunk, param)
            if res is None:
                break
            batch_times.append((time.perf_counter() - t) / chunk.shape[0])
            found += res
            total_queries += chunk.shape[0]
            if time.perf_counter() > t_end and len(found) >= ns.min_queries:
                break
        if batch_times:
            run["batch32_per_query"] = percentiles(batch_times)
        # Single queries.
        times: list[float] = []
        single_found: list[list[int]] = []
        t_end = time.perf_counter() + ns.single_budget
        # Without batch results, recall comes from the single queries: run min_queries of them.
        need = min(ns.min_queries, ns.min_single) if found else ns.min_queries
        for q in queries:
            t = time.perf_counter()
            single_found.append(method.search(q, param))
            times.append(time.perf_counter() - t)
            total_queries += 1
            if time.perf_counter() > t_end and len(times) >= need:
                break
        run["single"] = percentiles(times)
        if not found:
            found = single_found
        run["recall_queries"] = len(found)
        run["recall_at_10"] = recall_at_k(found, truth[: len(found)], K)
        if ns.return_found:
            run["found"] = found
        runs.append(run)
        print(f"  {ns.method} t={ns.threads} {label}: {_brief(run)}", file=sys.stderr, flush=True)
    out["runs"] = runs
    out["queries_run"] = total_queries
    out["rss_after_queries"] = rss()
    out["load_end"] = os.getloadavg()
    return out


def _brief(run: dict[str, Any]) -> str:
    batch = run.get("batch32_per_query", {}).get("p50_ms", float("nan"))
    m = (
        f"m={run['rescore_multiplier']}: "
        if run["setting"] == "default" and "rescore_multiplier" in run
        else ""
    )
    return (
        f"{m}recall {run['recall_at_10']:.4f} p50 {run['single']['p50_ms']:.2f} ms "
        f"(n={run['single']['n']}) batch {batch:.2f} ms/q"
    )


def run_child(args: list[str], threads: int, log: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args, "--threads", str(threads)]
    env = {**os.environ, "BENCH_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    noise = "WARN  lance::dataset::scanner] Deprecation warning"
    stderr = "".join(line for line in proc.stderr.splitlines(keepends=True) if noise not in line)
    if stderr:
        log.write(stderr)
        log.flush()
    if proc.returncode != 0:
        msg = f"child {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- datasets ----------------------------------------------------------------------------------
def shared_root() -> Path:
    return Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))


def save_dataset(folder: Path, corpus: np.ndarray, queries: np.ndarray) -> None:
    from langchain_vq.evaluation import exact_top_k

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "corpus.npy", np.ascontiguousarray(corpus, dtype=np.float32))
    np.save(folder / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
    np.save(folder / "truth.npy", exact_top_k(queries, corpus, K))


def scifact() -> dict[str, Any] | str:
    from langchain_vq.evaluation import load_embedded_beir

    folder = shared_root() / "scifact"
    if not (folder / "emb").exists():
        return f"{folder / 'emb'} not found (set LANGCHAIN_VQ_DATA to the shared data folder)"
    return load_embedded_beir(folder)


def sentences() -> tuple[np.ndarray, np.ndarray] | str:
    path = shared_root() / "sentences" / "emb" / "chunk_00.npy"
    if not path.exists():
        return f"{path} not found (set LANGCHAIN_VQ_DATA to the shared data folder)"
    data = np.load(path, mmap_mode="r")
    return np.asarray(data[:49_000]), np.asarray(data[49_000:49_500])


# -- orchestration -----------------------------------------------------------------------------
def measure_dataset(
    name: str,
    folder: Path,
    methods: list[str],
    ns: argparse.Namespace,
    log: Any,
    *,
    two_threads: bool,
    return_found: bool = False,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for method in methods:
        index = folder / f"index-{method}"
        entry: dict[str, Any] = {"label": LABELS[method]}
        # InMemoryVectorStore takes ~1 s per query at 100k rows: 32 queries, except on SciFact (nDCG).
        min_queries = ns.min_queries if method != "inmemory" or name == "scifact" else min(ns.min_queries, 32)
        try:
            print(f"[{name}] {method}: build", flush=True)
            entry["build"] = run_child(
                ["_build", "--method", method, "--data", str(folder), "--index", str(index)], 1, log
            )
            common = ["_query", "--method", method, "--data", str(folder), "--index", str(index)]
            budgets = [
                "--single-budget", str(ns.single_budget), "--batch-budget", str(ns.batch_budget),
                "--min-queries", str(min_queries),
            ]  # fmt: skip
            extra = ["--return-found"] if return_found else []
            print(f"[{name}] {method}: 1 thread (cold open)", flush=True)
            entry["t1"] = run_child([*common, *budgets, "--cold", *extra], 1, log)
            if two_threads:
                print(f"[{name}] {method}: 2 threads", flush=True)
                budgets2 = [
                    "--single-budget", str(ns.single_budget / 3), "--batch-budget", str(ns.batch_budget / 3),
                    "--min-queries", str(min(min_queries, 64)),
                ]  # fmt: skip
                entry["t2"] = run_child([*common, *budgets2], 2, log)
        except RuntimeError as exc:
            entry["error"] = str(exc)[-2000:]
            print(f"[{name}] {method} FAILED: {str(exc)[-500:]}", flush=True)
        finally:
            if index.exists():
                if index.is_dir():
                    shutil.rmtree(index, ignore_errors=True)
                else:
                    index.unlink()
        results[method] = entry
    return results


def main(ns: argparse.Namespace) -> None:
    from langchain_vq.synthetic import synthetic_embeddings

    out_dir = Path(ns.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if ns.update:
        setup = {"n": ns.n, "queries": ns.queries, "k": K, "quick": ns.quick}
        check_same_setup(json.loads((out_dir / "peers.json").read_text()), setup)
    work = Path(tempfile.mkdtemp(prefix="bench_peers-", dir=ns.tmp))
    log = (out_dir / "peers.log").open("w")
    print(f"work dir {work}; child logs in {out_dir / 'peers.log'}", flush=True)
    lance = lancedb_status()
    methods = [m for m in ns.methods.split(",") if m]
    if not lance["installed"] and "lancedb" in methods:
        methods.remove("lancedb")
        print(f"LanceDB skipped: {lance['reason']}", flush=True)
    result: dict[str, Any] = {
        **run_record(
            ns.n,
            DIM,
            ns.queries,
            K,
            batch=BATCH,
            single_budget_s=ns.single_budget,
            batch_budget_s=ns.batch_budget,
            min_queries=ns.min_queries,
            inmemory_rows=min(INMEMORY_ROWS, ns.n),
            vq_compacted=compact_enabled(),
            quick=ns.quick,
            env={
                "OMP_WAIT_POLICY": "PASSIVE",
                "threads": "OMP/OPENBLAS/LANCE_CPU_THREADS = 1 or 2, process pinned to that many CPUs",
            },
        ),
        "lancedb": lance,
        "datasets": {},
    }
    try:
        t = time.perf_counter()
        corpus = synthetic_embeddings(ns.n, DIM, seed=0)
        queries = synthetic_embeddings(ns.queries, DIM, seed=1)
        save_dataset(work / "synthetic", corpus, queries)
        print(f"synthetic data and exact top-{K}: {time.perf_counter() - t:.1f} s", flush=True)
        main_methods = [m for m in methods if m != "inmemory"]
        result["datasets"]["synthetic"] = {
            "rows": ns.n,
            "queries": ns.queries,
            "methods": measure_dataset(
                "synthetic", work / "synthetic", main_methods, ns, log, two_threads=True
            ),
        }
        if "inmemory" in methods:
            rows = min(INMEMORY_ROWS, ns.n)
            save_dataset(work / "synthetic_small", corpus[:rows], queries)
            result["datasets"]["synthetic_small"] = {
                "rows": rows,
                "queries": ns.queries,
                "methods": measure_dataset(
                    "synthetic_small", work / "synthetic_small", ["inmemory"], ns, log, two_threads=True
                ),
            }
        shutil.rmtree(work / "synthetic", ignore_errors=True)
        del corpus
        if not ns.skip_real:
            # Small sets: every query of every setting (nDCG needs all SciFact queries).
            real_ns = argparse.Namespace(**{**vars(ns), "min_queries": 1_000_000})
            sf = scifact()
            if isinstance(sf, str):
                print(f"SciFact skipped: {sf}", flush=True)
                result["datasets"]["scifact"] = {"skipped": sf}
            else:
                save_dataset(work / "scifact", sf["corpus"], sf["queries"])
                entry = measure_dataset(
                    "scifact", work / "scifact", methods, real_ns, log, two_threads=False, return_found=True
                )
                add_ndcg(entry, sf)
                result["datasets"]["scifact"] = {
                    "rows": len(sf["corpus_ids"]), "queries": len(sf["query_ids"]), "methods": entry
                }  # fmt: skip
            st = sentences()
            if isinstance(st, str):
                print(f"sentences skipped: {st}", flush=True)
                result["datasets"]["sentences"] = {"skipped": st}
            else:
                save_dataset(work / "sentences", *st)
                result["datasets"]["sentences"] = {
                    "rows": st[0].shape[0],
                    "queries": st[1].shape[0],
                    "methods": measure_dataset(
                        "sentences", work / "sentences", methods, real_ns, log, two_threads=False
                    ),
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        log.close()
    result["load_end"] = os.getloadavg()
    if ns.update:
        result = merged_update(json.loads((out_dir / "peers.json").read_text()), result, methods)
    (out_dir / "peers.json").write_text(json.dumps(result, indent=1) + "\n")
    report(out_dir / "peers.json")
    write_if_results(out_dir)  # one command: results, tables, plot, RESULTS.md and the README summary


def check_same_setup(earlier: dict[str, Any], config: dict[str, Any]) -> None:
    """Stop before measuring when ``--update`` would mix runs of other sizes or budgets."""
    for key in ("n", "queries", "k", "quick"):
        if earlier["config"].get(key) != config.get(key):
            msg = (
                f"--update: this run has {key}={config.get(key)!r}, the peers.json it would update "
                f"has {earlier['config'].get(key)!r}. Rerun with the same --n/--queries/--quick."
            )
            raise SystemExit(msg)


def merged_update(earlier: dict[str, Any], run: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """``earlier`` with the entries of ``methods`` replaced by this ``run``'s, the run listed in ``updates``.

    For a change to langchain_vq's defaults: only its methods (and ``faiss-flat``, the reference
    of every speed ratio, when named) are measured again; the peers keep their earlier run,
    which the report says.
    """
    check_same_setup(earlier, run["config"])
    for name, dataset in run["datasets"].items():
        if "methods" not in dataset:
            continue
        target = earlier["datasets"].setdefault(name, {**dataset, "methods": {}})
        for method, entry in dataset["methods"].items():
            target.setdefault("methods", {})[method] = {**entry, "measured": run["date"]}
    earlier.setdefault("updates", []).append(
        {key: run[key] for key in ("date", "command", "load_start", "load_end")} | {"methods": methods}
    )
    return earlier


def report(path: Path) -> None:
    """(Re)write ``peers.md`` and ``peers.png`` next to ``peers.json``, with the targets."""
    result = json.loads(path.read_text())
    result["targets"] = targets(result)
    path.write_text(json.dumps(result, indent=1) + "\n")
    (path.parent / "peers.md").write_text(markdown(result))
    plot(result, path.parent / "peers.png")
    print(markdown(result))


def add_ndcg(entry: dict[str, Any], sf: dict[str, Any]) -> None:
    from langchain_vq.evaluation import ndcg_at_k

    for method in entry.values():
        for run in method.get("t1", {}).get("runs", []):
            found = run.pop("found", None)
            if found is None or len(found) < len(sf["query_ids"]):
                continue
            ranked = {
                qid: [sf["corpus_ids"][i] for i in rows if i >= 0]
                for qid, rows in zip(sf["query_ids"], found, strict=True)
            }
            run["ndcg_at_10"] = ndcg_at_k(ranked, sf["qrels"], K)


# -- report ------------------------------------------------------------------------------------
def rows_of(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per method x setting with the numbers of the tables."""
    out = []
    for method, entry in dataset.get("methods", {}).items():
        t1 = entry.get("t1")
        if t1 is None:
            continue
        t2 = {r["setting"]: r for r in entry.get("t2", {}).get("runs", [])}
        for run in t1["runs"]:
            two = t2.get(run["setting"], {})
            out.append(
                {
                    "method": method,
                    "label": entry["label"],
                    "setting": run["setting"],
                    "multiplier": run.get("rescore_multiplier"),
                    "recall": run["recall_at_10"],
                    "recall_queries": run["recall_queries"],
                    "ndcg": run.get("ndcg_at_10"),
                    "p50": run["single"]["p50_ms"],
                    "p95": run["single"]["p95_ms"],
                    "n_single": run["single"]["n"],
                    "batch": run.get("batch32_per_query", {}).get("p50_ms"),
                    "p50_2t": two.get("single", {}).get("p50_ms"),
                    "batch_2t": two.get("batch32_per_query", {}).get("p50_ms"),
                    "rss_open": t1["rss_after_open"]["rss_mb"],
                    "rss_after": t1["rss_after_queries"]["rss_mb"],
                    "rss_anon_after": t1["rss_after_queries"]["rss_anon_mb"],
                    "rss_base": t1["rss_after_imports"]["rss_mb"],
                    "queries_run": t1["queries_run"],
                    "disk": entry["build"].get("disk_live_bytes", entry["build"].get("disk_bytes")),
                    "disk_ratio": (
                        entry["build"].get("disk_live_bytes", entry["build"].get("disk_bytes")) or 0
                    )
                    / max(dataset.get("rows", 0) * DIM * 4, 1),
                    "open_ms": t1["open_ms"],
                    "first_query_ms": t1["first_query_ms"],
                    "ingest": entry["build"].get("ingest_rows_per_s"),
                    "bytes_per_vector": t1.get("bytes_per_vector"),
                }
            )
    return out


def best_at(rows: list[dict[str, Any]], method: str, recall: float = TARGET_RECALL) -> dict[str, Any] | None:
    """Fastest setting of ``method`` reaching ``recall`` (None if none does)."""
    good = [r for r in rows if r["method"] == method and r["recall"] >= recall]
    return min(good, key=lambda r: r["p50"]) if good else None


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue-6 targets, on the synthetic set, single queries on one thread."""
    syn = result["datasets"].get("synthetic", {})
    rows = rows_of(syn)
    n = syn.get("rows", 0)
    ours = best_at(rows, "vq-binary")
    flat = next((r for r in rows if r["method"] == "faiss-flat"), None)
    small = rows_of(result["datasets"].get("synthetic_small", {}))
    inmem = next((r for r in small if r["method"] == "inmemory"), None)
    lance = best_at(rows, "lancedb")
    lance_max = max((r for r in rows if r["method"] == "lancedb"), key=lambda r: r["recall"], default=None)
    out: dict[str, Any] = {"rows": n, "binary_setting": ours and ours["setting"]}
    if ours is None:
        out["note"] = f"no binary setting reached recall@10 >= {TARGET_RECALL}"
        return out
    disk = {m: next((r["disk_ratio"] for r in rows if r["method"] == m), None) for m in TARGET_DISK_RATIO}
    out["disk_ratio"] = {
        m: {"ratio": v, "met": v <= TARGET_DISK_RATIO[m]} for m, v in disk.items() if v is not None
    }
    out["binary_recall"] = ours["recall"]
    out["binary_p50_ms"] = ours["p50"]
    codes = next((r for r in rows if r["method"] == "vq-binary-codes-only"), None)
    bare = next((r for r in rows if r["method"] == "faiss-binary" and "hamming only" in r["setting"]), None)
    out["binary_codes_only_p50_ms"] = codes and codes["p50"]
    out["faiss_binary_hamming_p50_ms"] = bare and bare["p50"]
    out["binary_rss_open_mb"] = ours["rss_open"]
    out["binary_rss_anon_after_mb"] = ours["rss_anon_after"]
    out["imports_rss_anon_mb"] = syn["methods"]["vq-binary"]["t1"]["rss_after_imports"]["rss_anon_mb"]
    if flat:
        out["speedup_vs_flat"] = flat["p50"] / ours["p50"]
        out["speedup_vs_flat_met"] = out["speedup_vs_flat"] >= TARGET_VS_FLAT
        out["rss_fraction_of_flat"] = ours["rss_after"] / flat["rss_after"]
        out["rss_fraction_met"] = out["rss_fraction_of_flat"] <= TARGET_RSS_FRACTION
        out["rss_anon_fraction_of_flat"] = ours["rss_anon_after"] / flat["rss_anon_after"]
        out["rss_anon_fraction_met"] = out["rss_anon_fraction_of_flat"] <= TARGET_RSS_FRACTION
    fast = best_at(rows, "vq-binary-fast-scan")
    if fast is not None and flat:
        out["fast_scan"] = {
            "setting": fast["setting"],
            "recall": fast["recall"],
            "p50_ms": fast["p50"],
            "speedup_vs_flat": flat["p50"] / fast["p50"],
            "rss_anon_after_mb": fast["rss_anon_after"],
            "rss_anon_fraction_of_flat": fast["rss_anon_after"] / flat["rss_anon_after"],
        }
    if inmem:
        scale = n / max(result["datasets"]["synthetic_small"]["rows"], 1)
        out["inmemory_p50_ms_measured"] = inmem["p50"]
        out["inmemory_rows_measured"] = result["datasets"]["synthetic_small"]["rows"]
        out["inmemory_p50_ms_extrapolated"] = inmem["p50"] * scale
        out["inmemory_extrapolated"] = scale != 1
        out["speedup_vs_inmemory"] = inmem["p50"] * scale / ours["p50"]
        out["speedup_vs_inmemory_met"] = out["speedup_vs_inmemory"] >= TARGET_VS_INMEMORY
    if lance_max is not None:
        out["lancedb_setting"] = (lance or lance_max)["setting"]
        out["lancedb_recall"] = (lance or lance_max)["recall"]
        out["lancedb_p50_ms"] = (lance or lance_max)["p50"]
        out["lancedb_reached_target"] = lance is not None
        if lance is None:
            # Equal recall: our fastest binary setting at LanceDB's best recall.
            ours_eq = min(
                (r for r in rows if r["method"] == "vq-binary" and r["recall"] >= lance_max["recall"]),
                key=lambda r: r["p50"],
                default=ours,
            )
            out["binary_at_lancedb_recall"] = {"setting": ours_eq["setting"], "p50_ms": ours_eq["p50"]}
            out["faster_than_lancedb_met"] = ours_eq["p50"] < lance_max["p50"]
        else:
            out["faster_than_lancedb_met"] = ours["p50"] < lance["p50"]
    return out


def _f(value: float | None, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _update_lines(result: dict[str, Any]) -> list[str]:
    """Which methods a later ``--update`` run measured again, when, and at what load."""
    return [
        f"Measured again on {u['date'][:10]} (`--update`, load {u['load_start'][0]:.2f} at start, "
        f"{u['load_end'][0]:.2f} at end): {', '.join(u['methods'])}. The other rows are from the run "
        f"of {result['date'][:10]}.\n"
        for u in result.get("updates", [])
    ]


def markdown(result: dict[str, Any]) -> str:
    hw = result["hardware"]
    cfg = result["config"]
    syn = result["datasets"].get("synthetic", {})
    lines = [
        f"# Peers benchmark ({result['date']})",
        "",
        (
            f"Machine: {hw['cpu_model']}, {hw['cores']} cores, {hw['ram_gb']} GB RAM, {hw['platform']}; "
            f"Python {hw['python']}, numpy {hw['numpy']}, faiss {hw['faiss']}, pyarrow {hw['pyarrow']}, "
            f"langchain-core {hw['langchain_core']}, lancedb {hw['lancedb']}. Load average at start "
            f"{', '.join(f'{x:.2f}' for x in result['load_start'])}, at end "
            f"{', '.join(f'{x:.2f}' for x in result['load_end'])} (machine shared with other work)."
        ),
        "",
        (
            f"Synthetic data: {syn.get('rows', 0):,} x {cfg['dim']} vectors from "
            "`langchain_vq.synthetic.synthetic_embeddings` (structure of all-MiniLM-L6-v2: nonzero mean, "
            f"clusters, anisotropy), {cfg['queries']} queries from another seed. Recall@10 against exact "
            "inner-product search. Single-query p50/p95 on one thread (process pinned to one CPU); "
            "batch = per-query time in batches of 32; 2t = the same on two threads. RSS (MB) after a "
            "cold open and after all queries of the process; it includes the file pages the process "
            "touched (memory-mapped floats of langchain_vq and LanceDB); RSS anon excludes file-backed pages. Open = new process, the "
            "method's files evicted from the page cache first. Disk = files of the current version (for "
            "langchain_vq, without the pre-compact segments still on disk until the next cleanup). Ingest = build rate including training "
            "(and, for langchain_vq, the compact() after the batched adds)."
        ),
        "",
        *_update_lines(result),
        (
            "| method | setting | bytes/vec in RAM | recall@10 | p50 ms | p95 ms | batch ms/q | p50 2t | "
            "batch 2t | RSS open | RSS after | RSS anon after | disk MB (/ raw float32) | open ms | 1st query ms | "
            "ingest rows/s |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def table(rows: list[dict[str, Any]], note: str = "") -> None:
        last = None
        for r in rows:
            first = r["method"] != last
            last = r["method"]
            lines.append(
                f"| {r['label'] + note if first else ''} | {shown_setting(r)} | "
                f"{_f(r['bytes_per_vector'], '.0f') if first else ''} | {r['recall']:.4f} | "
                f"{r['p50']:.2f} | {r['p95']:.2f} | {_f(r['batch'])} | {_f(r['p50_2t'])} | "
                f"{_f(r['batch_2t'])} | "
                + (
                    f"{_mb(r['rss_open'])} | {_mb(r['rss_after'])} | {_mb(r['rss_anon_after'])} | "
                    f"{_f((r['disk'] or 0) / MB, '.0f')} ({r['disk_ratio']:.2f}) | {r['open_ms']:.0f} | {r['first_query_ms']:.1f} | "
                    f"{_f(r['ingest'], ',.0f')} |"
                    if first
                    else " | | | | | | |"
                )
            )

    table(rows_of(syn))
    small = result["datasets"].get("synthetic_small")
    if small:
        table(rows_of(small), f" (first {small['rows']:,} rows)")
    errors = [
        f"{m}: {e['error'].splitlines()[-1]}"
        for d in result["datasets"].values()
        for m, e in d.get("methods", {}).items()
        if "error" in e
    ]
    if errors:
        lines += ["", "Failed: " + "; ".join(errors)]
    if not result["lancedb"]["installed"]:
        lines += ["", f"LanceDB not measured: {result['lancedb']['reason']}"]
    lines += ["", "## Real embeddings (all-MiniLM-L6-v2, shared data)", ""]
    sf = result["datasets"].get("scifact", {})
    st = result["datasets"].get("sentences", {})
    for name, d in (("SciFact", sf), ("sentences", st)):
        if "skipped" in d:
            lines.append(f"{name} skipped: {d['skipped']}")
    if "methods" in sf or "methods" in st:
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for tag, d in (("sf", sf), ("st", st)):
            for r in rows_of(d):
                by_key.setdefault((r["method"], r["setting"]), {"label": r["label"]})[tag] = r
        lines += [
            (
                f"SciFact: {sf.get('rows', 0):,} abstracts, {sf.get('queries', 0)} test queries (exact "
                f"search nDCG@10 = 0.6451). Sentences: {st.get('rows', 0):,} rows, {st.get('queries', 0)} "
                "held-out sentences as queries. p50 single query, one thread."
            ),
            "",
            (
                "| method | setting | SciFact nDCG@10 | SciFact recall@10 | sentences recall@10 "
                "| sentences p50 ms |"
            ),
            "|---|---|---:|---:|---:|---:|",
        ]
        for (_, setting), v in by_key.items():
            s, t = v.get("sf"), v.get("st")
            ms = [
                f"m={r['multiplier']}" for r in (s, t) if r and r.get("multiplier") and setting == "default"
            ]
            lines.append(
                f"| {v['label']} | {setting}{' (' + ' / '.join(ms) + ')' if ms else ''} | {_f(s and s['ndcg'], '.4f')} | "
                f"{_f(s and s['recall'], '.4f')} | "
                f"{_f(t and t['recall'], '.4f')} | {_f(t and t['p50'])} |"
            )
    lines += ["", "## Targets (synthetic set, one thread)", "", *target_lines(result["targets"]), ""]
    return "\n".join(lines)


def target_lines(t: dict[str, Any]) -> list[str]:
    def yes(flag: bool | None) -> str:
        return "**met**" if flag else "**NOT met**"

    if "note" in t:
        return [t["note"]]
    out = [
        (
            f"- binary two-stage at recall@10 >= {TARGET_RECALL}: fastest such setting "
            f"{t['binary_setting']} (recall {t['binary_recall']:.4f}, p50 {t['binary_p50_ms']:.2f} ms) "
            f"at {t['rows']:,} rows."
        )
    ]
    if t.get("disk_ratio"):
        out.append(
            "- disk as a ratio to the raw float32 vectors: "
            + "; ".join(
                f"{LABELS[m]} <= {TARGET_DISK_RATIO[m]}: {d['ratio']:.3f}, {yes(d['met'])}"
                for m, d in t["disk_ratio"].items()
            )
            + "."
        )
    if "speedup_vs_flat" in t:
        out.append(
            f"- >= {TARGET_VS_FLAT:.0f}x faster than IndexFlatIP: {t['speedup_vs_flat']:.1f}x, "
            f"{yes(t['speedup_vs_flat_met'])}."
        )
        if not t["speedup_vs_flat_met"] and t.get("binary_codes_only_p50_ms") is not None:
            budget = t["binary_p50_ms"] * t["speedup_vs_flat"] / TARGET_VS_FLAT
            from langchain_vq.quantization._partitions import AUTO_PARTITION_ROWS

            listed = t["rows"] >= AUTO_PARTITION_ROWS
            out.append(
                f"  Why: {TARGET_VS_FLAT:.0f}x means <= {budget:.1f} ms per query. Recall 0.99 needs "
                f"{t['binary_setting']} on these {t['rows']:,} synthetic vectors (on the 49k real sentence "
                "set m=16 suffices): 10 x m float rows rescored after a first stage that "
                + (
                    "scans the codes of the lists nearest the query (the default lists stores from "
                    f"{AUTO_PARTITION_ROWS:,} rows; about a quarter of the rows at 1M)"
                    if listed
                    else "scans every code"
                )
                + f". A codes-only store (every code scanned, no rescoring) takes "
                f"{t['binary_codes_only_p50_ms']:.1f} ms here; FAISS IndexBinaryFlat alone "
                f"{_f(t.get('faiss_binary_hamming_p50_ms'), '.1f')} ms."
            )
        out.append(
            f"- resident memory <= 1/10 of IndexFlatIP's, counting private (anonymous) memory: "
            f"{t['rss_anon_fraction_of_flat']:.3f} of it, {yes(t['rss_anon_fraction_met'])}; counting "
            f"all RSS: {t['rss_fraction_of_flat']:.3f}, {yes(t['rss_fraction_met'])}."
        )
        if not t["rss_fraction_met"] and "binary_rss_open_mb" in t:
            out.append(
                f"  Why the two differ: RSS also counts the memory-mapped float pages that rescoring "
                f"touched over all the queries of the run: page cache, shared and dropped by the kernel "
                f"under memory pressure (RSS right after open was {t['binary_rss_open_mb']:.0f} MB). "
                f"Private memory was {t['binary_rss_anon_after_mb']:.0f} MB, of which "
                f"{t['imports_rss_anon_mb']:.0f} MB is the interpreter and imports every method pays; "
                "IndexFlatIP's is all private: its floats live in the process."
            )
    if "fast_scan" in t:
        fast = t["fast_scan"]
        out.append(
            f'- the same with `quantizer_options={{"fast_scan": True}}` (not the default: it keeps a RAM '
            f"copy of the codes): fastest setting at recall@10 >= {TARGET_RECALL} {fast['setting']} "
            f"(recall {fast['recall']:.4f}, p50 {fast['p50_ms']:.2f} ms), {fast['speedup_vs_flat']:.1f}x "
            f"faster than IndexFlatIP; private memory {fast['rss_anon_after_mb']:.0f} MB, "
            f"{fast['rss_anon_fraction_of_flat']:.3f} of IndexFlatIP's."
        )
    if "speedup_vs_inmemory" in t:
        how = (
            f"extrapolated linearly from {t['inmemory_p50_ms_measured']:.1f} ms measured at "
            f"{t['inmemory_rows_measured']:,} rows to {t['inmemory_p50_ms_extrapolated']:.0f} ms"
            if t["inmemory_extrapolated"]
            else f"measured {t['inmemory_p50_ms_measured']:.1f} ms"
        )
        out.append(
            f"- >= {TARGET_VS_INMEMORY:.0f}x faster than InMemoryVectorStore ({how}): "
            f"{t['speedup_vs_inmemory']:.0f}x, {yes(t['speedup_vs_inmemory_met'])}."
        )
    if "faster_than_lancedb_met" in t:
        if t["lancedb_reached_target"]:
            out.append(
                f"- faster than LanceDB at equal recall: LanceDB {t['lancedb_setting']} reaches "
                f"{t['lancedb_recall']:.4f} at p50 {t['lancedb_p50_ms']:.2f} ms, "
                f"{yes(t['faster_than_lancedb_met'])}."
            )
        else:
            eq = t["binary_at_lancedb_recall"]
            out.append(
                f"- faster than LanceDB at equal recall: no LanceDB setting reached {TARGET_RECALL}; "
                f"its best, {t['lancedb_setting']}, reaches {t['lancedb_recall']:.4f} at p50 "
                f"{t['lancedb_p50_ms']:.2f} ms; "
                f"binary {eq['setting']} reaches at least that recall at {eq['p50_ms']:.2f} ms, "
                f"{yes(t['faster_than_lancedb_met'])}."
            )
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install 'langchain-vq[plot]')", flush=True)
        return
    syn = result["datasets"].get("synthetic", {})
    rows = rows_of(syn)
    small = result["datasets"].get("synthetic_small")
    if small:
        rows += [{**r, "label": r["label"] + f" ({small['rows'] // 1000}k rows)"} for r in rows_of(small)]
    biggest = max((r["rss_anon_after"] for r in rows), default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    colors = plt.get_cmap("tab20")  # 20 colours: more methods than tab10 has, none shared
    for i, label in enumerate(dict.fromkeys(r["label"] for r in rows)):
        group = [r for r in rows if r["label"] == label]
        ax.scatter(
            [r["p50"] for r in group],
            [r["recall"] for r in group],
            s=[20 + 1000 * r["rss_anon_after"] / biggest for r in group],
            alpha=0.5,
            color=colors(i % 20),
            label=label,
            edgecolors="black",
            linewidths=0.5,
        )
        if len(group) > 1:
            ax.plot([r["p50"] for r in group], [r["recall"] for r in group], color=colors(i % 20), lw=0.8)
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: r["p50"]):
        if r["recall"] > best:
            front.append(r)
            best = r["recall"]
    ax.step(
        [r["p50"] for r in front], [r["recall"] for r in front], where="post", color="black", lw=0.6, ls=":"
    )
    ax.axhline(TARGET_RECALL, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per single query, one thread (ms, log)")
    ax.set_ylabel("recall@10 vs exact search")
    ax.set_title(
        f"{syn.get('rows', 0):,} x {DIM} synthetic vectors; bubble area ~ anonymous resident memory "
        f"(RSS minus file-backed pages; largest {biggest:,.0f} MB)",
        fontsize=10,
    )
    ax.grid(visible=True, which="both", alpha=0.3)
    legend = ax.legend(fontsize=7, loc="lower right", markerscale=0.3)
    for handle in legend.legend_handles:
        handle.set_sizes([30])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic corpus rows")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic queries")
    parser.add_argument(
        "--single-budget", type=float, default=15.0, help="seconds of single queries per setting"
    )
    parser.add_argument("--batch-budget", type=float, default=15.0, help="seconds of batches per setting")
    parser.add_argument("--min-queries", type=int, default=256, help="queries per setting despite the budget")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--skip-real", action="store_true", help="skip the shared real data sets")
    parser.add_argument("--quick", action="store_true", help="smoke test: small data, short budgets")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tmp", default=None, help="folder for the temporary data and indexes")
    parser.add_argument(
        "--no-compact", action="store_true", help="keep langchain_vq's 100k-row segments (no compact())"
    )
    parser.add_argument(
        "--report", default=None, metavar="JSON", help="only rewrite md/png from a peers.json"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="measure only --methods and replace their entries in the existing peers.json of --out",
    )
    for name in ("_build", "_query"):
        child = sub.add_parser(name, help=argparse.SUPPRESS)
        child.add_argument("--method", required=True)
        child.add_argument("--data", required=True)
        child.add_argument("--index", required=True)
        child.add_argument("--threads", type=int, default=1)
        child.add_argument("--cold", action="store_true")
        child.add_argument("--return-found", action="store_true")
        child.add_argument("--single-budget", type=float, default=20.0)
        child.add_argument("--batch-budget", type=float, default=20.0)
        child.add_argument("--min-queries", type=int, default=256)
        child.add_argument("--min-single", type=int, default=64)
    ns = parser.parse_args()
    if getattr(ns, "no_compact", False):
        os.environ["BENCH_NO_COMPACT"] = "1"  # inherited by the child processes
    if ns.quick and ns.command is None:
        ns.n, ns.queries = min(ns.n, 20_000), min(ns.queries, 200)
        ns.single_budget, ns.batch_budget, ns.min_queries = 2.0, 2.0, 32
        if ns.out == str(REPO / "benchmarks" / "results"):
            ns.out = str(Path(tempfile.gettempdir()) / "bench_peers_quick")
    return ns


if __name__ == "__main__":
    args = parse()
    if args.command == "_build":
        print(json.dumps(child_build(args)))
    elif args.command == "_query":
        print(json.dumps(child_query(args)))
    elif args.report:
        report(Path(args.report))
    else:
        main(args)
