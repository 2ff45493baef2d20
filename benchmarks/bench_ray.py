"""Scale-out on Ray: distributed build rate with 1 and 2 workers, sharded search against one store.

- **Build**: ``langchain_vq.ray.build_store`` on a local 2-CPU Ray cluster embeds chunks of the
  repository's ``examples/data`` (split at ``--chunk-size`` characters, repeated to ``--chunks``
  rows with distinct ids) with the real model (all-MiniLM-L6-v2, the default backend: ``onnx-int8`` when
  ``results/bench_ray.json`` was measured),
  quantizes them (binary) and commits them. The quantizer is trained first on ``--train-sample``
  rows on the driver (reported apart: a fixed cost per build, the same for any number of workers).
  Rate = rows / seconds of the distributed phase (actor start, embedding, segment writes, the
  commit); the end-to-end time is recorded too.

  *The fair comparison* (the issue's "1 and 2 workers, at least 1.6x on 2 cores") is 1 worker
  against 2 workers with **one model thread each** (``threads_per_worker=1``, the default for
  ``num_cpus < 2``): 1 worker uses one core, 2 workers use two, so the ratio says whether the
  pipeline (driver, reads, writes, commit) keeps up as workers are added, which is what carries
  over to N machines. A worker whose model took every core (intra-op threads) would make the
  1-worker run use both cores already, and 2 such workers would oversubscribe them; so
  1 worker with 2 threads is measured too, as a reference (what one worker gets out of the
  second core), not as the baseline. The configurations run alternately ``--repeats`` times.

  *The rule*: each configuration's rate is the **mean** of its runs, and the scaling is the
  ratio of the means (``scaling_2_workers``); every run's rate is recorded, with the worst
  pairing (the slowest 2-worker run against the fastest 1-worker run,
  ``scaling_2_workers_worst_pair``) and the ratio within each repeat. (Until session 8 the
  lower run of each configuration was counted, which let one slow 1-worker run carry the
  verdict.)

  *Why 2,048 chunks* (the default; the session-7 results used 1,024): every build pays fixed
  costs that do not shrink with more workers, measured at about 6-8 s: the actors' start
  (a new process importing Ray Data and this package, then the model's load, 2-5 s) and a
  cold Ray worker for the final write task (3-4 s: Ray Data does not fuse a task after an
  actor-pool map, and on a 2-CPU node Ray stops an idle worker kept warm once 2 actors run;
  docs/architecture.md, "Distributed build"). The embedding itself takes about 37-41 s per
  1,024 chunks on one core, so at 1,024 chunks the fixed part is about 15% of a 1-worker build
  and caps the scaling near 1.65 even if the embedding scales perfectly; at 2,048 it is about
  8%, which is closer to the issue's "build rate" of a real corpus (where it vanishes). To show
  the fixed costs rather than hide them, ``fixed_seconds`` is the distributed time of a
  one-batch build (``--batch-size`` rows, 1 worker): the fixed costs plus one batch.
- **Search**: ``--rows`` synthetic MiniLM-like vectors (binary, default multiplier), one store
  against a ``ShardedVQVectorStore`` of ``--shards`` shards on the same cluster; ``--queries``
  single queries, each run on both (alternately, so both see the same load), p50 and p90. The
  difference of the p50s is the fan-out overhead. The sharded store searches through a Ray compiled graph
  (``ray/fanout.py``); the same shards served by actors making normal calls (``compiled_graph=False``,
  ``sharded_calls``) are timed in the same rotation. A no-op call to every shard actor is timed
  the same way: the floor of Ray's call overhead that any fan-out pays.
- **Estimate for N machines**: from the measured per-worker build rate and 2-worker efficiency,
  and from the fan-out overhead plus a shard's scan time at 1/N of the rows. An estimate, not a
  measurement: this runs on one machine.

Ray starts its workers at niceness 15, below the driver. On a machine shared with other jobs at
niceness 0 that starves the workers (the build's actors, the shard actors) while the one-store
baseline runs in the driver at full priority; so this benchmark's cluster starts its workers at
niceness 0 (``RAY_worker_niceness=0``, recorded in the result). The machine is shared with other
jobs: the load average is recorded before and after each part, and each build run records the
CPU seconds its workers got (``worker_cpu_s``; ``cores_used`` = those / seconds of the
distributed phase; ``rows_per_worker_cpu_s``), which tells a run starved of CPU from a slow
pipeline: ``cpu_efficiency_2_workers`` near 1 with a low scaling means the second core was busy
with other jobs. Each embedding actor's CPU seconds (``embedder_cpu_s``) give a load-independent
estimate, ``scaling_2_workers_a_core_each``: rows / the busiest actor's CPU seconds, 2 workers
against 1, i.e. the scaling with a free core per worker if the driver and the write tasks keep
up (they use little CPU). It is an estimate; the wall-clock ``scaling_2_workers`` is the
measurement, meaningful on a quiet machine.

Run: ``python benchmarks/bench_ray.py`` (about 10 min on a quiet machine) -> ``results/bench_ray.json``; quick look:
``--chunks 256 --rows 20000 --queries 200 --repeats 1 --out /tmp/bench_ray.json``; ``--parts build``
or ``--parts search`` runs one part only (no estimate).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
NICENESS = "RAY_worker_niceness"  # Ray's own spelling (a raylet setting)
os.environ.setdefault(NICENESS, "0")  # see the module docstring

from benchmarks._common import run_record  # noqa: E402


def chunks(count: int, chunk_size: int) -> list[dict[str, str]]:
    from langchain_vq.loaders import load_sources

    pieces = [doc.page_content for f in load_sources([REPO / "examples" / "data"], chunk_size=chunk_size,
                                                      chunk_overlap=0) for doc in f.chunks]  # fmt: skip
    return [{"id": f"c{i}", "text": pieces[i % len(pieces)]} for i in range(count)]


class WorkerCpu:
    """CPU seconds of the Ray worker processes (the build's actors and tasks) while it runs.

    Samples every worker's CPU time a few times a second (a process that ends keeps its last
    sample), so a run starved of CPU by other jobs shows as few cores used.
    """

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self.embedders: set[int] = set()  # the actor pool's processes (EmbedQuantize)
        self.writers: dict[int, float] = {}  # processes seen running a write task: their start time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _workers(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.Process().children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                if title.startswith("ray::") or "default_worker" in title:
                    found.append(proc)
                if "EmbedQuantize" in title:
                    self.embedders.add(proc.pid)
                if title.startswith("ray::Write"):
                    self.writers[proc.pid] = proc.create_time()
            except psutil.Error:
                continue
        return found

    def _sample(self) -> None:
        while not self._stop.is_set():
            for proc in self._workers():
                try:
                    times = proc.cpu_times()
                    self.seen[proc.pid] = times.user + times.system
                except psutil.Error:
                    continue
            time.sleep(0.25)

    def __enter__(self) -> WorkerCpu:  # noqa: PYI034 - not subclassed
        for proc in self._workers():
            try:
                times = proc.cpu_times()
                self.base[proc.pid] = times.user + times.system
            except psutil.Error:
                continue
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(t - self.base.get(pid, 0.0) for pid, t in self.seen.items())

    @property
    def embedder_seconds(self) -> list[float]:
        """CPU seconds of each embedding actor (start-up, model load, its batches)."""
        return sorted(
            round(self.seen[pid] - self.base.get(pid, 0.0), 1) for pid in self.embedders if pid in self.seen
        )


def timed_build(rows: list[dict], workers: int, threads: int, args: argparse.Namespace, cache: Path) -> dict:
    import ray

    from langchain_vq.embeddings import SentenceTransformerEmbeddings
    from langchain_vq.ray import build_store

    model = SentenceTransformerEmbeddings(cache_dir=cache)  # workers get threads_per_worker threads
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        load = os.getloadavg()
        started, started_epoch = time.perf_counter(), time.time()
        machine, driver = psutil.cpu_times(), psutil.Process().cpu_times()
        with WorkerCpu() as cpu:
            result = build_store(
                ray.data.from_items(rows, override_num_blocks=8 * workers),
                folder / "store",
                model,
                workers=workers,
                num_cpus=0.75 * threads,
                threads_per_worker=threads,
                batch_size=args.batch_size,
                train_sample=args.train_sample,
                build_id=f"bench-{workers}-{threads}",
            )
        total = time.perf_counter() - started
        machine_busy = _busy(psutil.cpu_times()) - _busy(machine)
        driver_now = psutil.Process().cpu_times()
        driver_cpu = (driver_now.user + driver_now.system) - (driver.user + driver.system)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "rows": result.rows,
        "sample_seconds": round(result.sample_seconds, 2),
        "distributed_seconds": round(result.write_seconds, 2),
        "total_seconds": round(total, 2),
        "rows_per_s": round(result.rows / result.write_seconds, 2),
        "worker_cpu_s": round(cpu.seconds, 1),
        "cores_used": round(cpu.seconds / result.write_seconds, 2),  # the workers idle in the sample phase
        "rows_per_worker_cpu_s": round(result.rows / max(cpu.seconds, 1e-9), 2),
        "embedder_cpu_s": cpu.embedder_seconds,
        # Estimate: the rate if every embedding actor had a core of its own (the busiest bounds it).
        "rows_per_s_a_core_each": round(result.rows / max([*cpu.embedder_seconds, 1e-9]), 2),
        # When each write task's worker process started, in seconds from the build's start: a
        # positive value is a cold worker started for it, a negative one a warm worker reused.
        "write_worker_started_s": sorted(round(t - started_epoch, 1) for t in cpu.writers.values()),
        "driver_cpu_s": round(driver_cpu, 1),
        # Cores busy with other jobs during the whole build (machine CPU less this benchmark's):
        # a run with a large value was starved, whatever the pipeline did.
        "other_jobs_cores": round(max(0.0, machine_busy - cpu.seconds - driver_cpu) / total, 2),
        "load_before": load,
        "load_after": os.getloadavg(),
    }


def _busy(times: Any) -> float:
    """CPU seconds the whole machine spent not idle (all processes, every core)."""
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def start_ray(temp: str) -> None:
    """A local 2-CPU cluster (dashboard off, logs kept from the terminal)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False


def build_part(
    rows: list[dict], args: argparse.Namespace, cache: Path, temp: str
) -> tuple[list[dict], list[dict]]:
    """Each configuration ``--repeats`` times, alternately; per configuration, the mean of its runs.

    Each build gets a new cluster, as a build run from a script does, so no build inherits
    warm worker processes from the one before (a 1-worker build after the 1-worker, 2-thread
    reference found its write worker warm and skipped the cold start the others paid).
    """
    import ray

    configs = [(1, 1), (2, 1), (1, 2)]  # (workers, threads per worker); the last is the reference
    runs = []
    for repeat in range(args.repeats):
        for workers, threads in configs:
            ray.shutdown()
            start_ray(temp)
            run = {"repeat": repeat, **timed_build(rows, workers, threads, args, cache)}
            print(json.dumps(run))
            runs.append(run)
    summary = []
    for workers, threads in configs:
        mine = [r for r in runs if (r["workers"], r["threads_per_worker"]) == (workers, threads)]
        summary.append(
            {
                "workers": workers,
                "threads_per_worker": threads,
                "rows": mine[0]["rows"],
                "runs": len(mine),
                "rows_per_s": round(statistics.mean(r["rows_per_s"] for r in mine), 2),
                "rows_per_s_all": [r["rows_per_s"] for r in mine],
                **{
                    key: round(statistics.mean(r[key] for r in mine), 2)
                    for key in ("distributed_seconds", "sample_seconds", "cores_used", "other_jobs_cores")
                },
                "rows_per_worker_cpu_s": round(
                    sum(r["rows"] for r in mine) / sum(r["worker_cpu_s"] for r in mine), 2
                ),
                "rows_per_s_a_core_each": round(
                    statistics.mean(r["rows_per_s_a_core_each"] for r in mine), 2
                ),
            }
        )
    return summary, runs


def scaling(build: list[dict], runs: list[dict]) -> dict:
    """2 workers against 1: the ratio of the mean rates (the verdict), the worst pairing, each repeat's."""
    one, two = build[0], build[1]
    per_repeat = []
    for repeat in sorted({r["repeat"] for r in runs}):
        rate = {
            (r["workers"], r["threads_per_worker"]): r["rows_per_s"] for r in runs if r["repeat"] == repeat
        }
        per_repeat.append(round(rate[2, 1] / rate[1, 1], 2))
    return {
        "scaling_2_workers": round(two["rows_per_s"] / one["rows_per_s"], 2),
        "scaling_2_workers_worst_pair": round(min(two["rows_per_s_all"]) / max(one["rows_per_s_all"]), 2),
        "scaling_2_workers_per_repeat": per_repeat,
        "target": 1.6,
    }


def fixed_cost(rows: list[dict], args: argparse.Namespace, cache: Path, temp: str) -> dict:
    """A one-batch build (1 worker, new cluster): its distributed time is the fixed cost plus one batch."""
    import ray

    ray.shutdown()
    start_ray(temp)
    run = timed_build(rows[: args.batch_size], 1, 1, args, cache)
    return {
        "rows": run["rows"],
        "fixed_seconds": run["distributed_seconds"],
        "write_worker_started_s": run["write_worker_started_s"],
        "load_before": run["load_before"],
    }


def latencies(searches: dict[str, Any], queries: np.ndarray) -> dict[str, dict[str, float]]:
    """p50 and p90 of each search, run in turn on every query so that all see the same load."""
    for q in queries[:20]:  # warm up: page cache, FAISS, the actors' first calls
        for search in searches.values():
            search(q)
    times: dict[str, list[float]] = {name: [] for name in searches}
    for q in queries:
        for name, search in searches.items():
            started = time.perf_counter()
            search(q)
            times[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {
            "p50_ms": round(statistics.median(values), 3),
            "p90_ms": round(float(np.percentile(values, 90)), 3),
        }
        for name, values in times.items()
    }


def search_part(args: argparse.Namespace) -> dict:
    import ray
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore
    from langchain_vq.ray import ShardedVQVectorStore, shard_paths
    from langchain_vq.synthetic import synthetic_embeddings

    dim = 384
    vectors = synthetic_embeddings(args.rows, dim, seed=0)
    queries = synthetic_embeddings(args.queries, dim, seed=1)
    ids = [f"r{i}" for i in range(args.rows)]
    texts = [f"row {i}" for i in range(args.rows)]
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-search-"))
    embedding = DeterministicFakeEmbedding(size=dim)
    try:
        one = VQVectorStore(embedding, path=folder / "one")
        one.add_embeddings(texts, vectors, ids=ids)
        sharded = ShardedVQVectorStore(embedding, shard_paths(folder / "sharded", args.shards))
        sharded.add_embeddings(texts, vectors, ids=ids)
        # The same shards served by other actors that make normal calls only (no compiled graph).
        calls = ShardedVQVectorStore(
            embedding, shard_paths(folder / "sharded", args.shards), compiled_graph=False
        )
        actors = calls.sharded.actors
        # The first search starts compiling the graph in the background (normal calls meanwhile):
        # wait for it, so the timed searches go through the graph.
        compile_started = time.perf_counter()
        sharded.similarity_search_by_vector(queries[0], k=10)
        sharded.sharded.wait_compiled()
        compile_s = time.perf_counter() - compile_started
        load = os.getloadavg()
        measured = latencies(
            {
                "one_store": lambda q: one.similarity_search_by_vector(q, k=10),
                "sharded": lambda q: sharded.similarity_search_by_vector(q, k=10),
                "sharded_calls": lambda q: calls.similarity_search_by_vector(q, k=10),
                "noop_call_all_shards": lambda q: ray.get([a.pid.remote() for a in actors]),  # noqa: ARG005
            },
            queries,
        )
        batch_started = time.perf_counter()
        sharded.batch_similarity_search_by_vector(queries, k=10)
        batch_ms = (time.perf_counter() - batch_started) * 1000 / len(queries)
        compiled = sharded.sharded.compiled
        sharded.close()
        calls.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    single, fanned = measured["one_store"], measured["sharded"]
    return {
        "rows": args.rows,
        "dim": dim,
        "shards": args.shards,
        "queries": args.queries,
        "quantization": "binary",
        "one_store": single,
        "sharded": fanned,
        "sharded_compiled_graph": compiled,
        "graph_compile_s": round(compile_s, 3),
        "sharded_calls": measured["sharded_calls"],
        "noop_call_all_shards": measured["noop_call_all_shards"],
        "sharded_batch_ms_per_query": round(batch_ms, 3),
        "fanout_overhead_p50_ms": round(fanned["p50_ms"] - single["p50_ms"], 3),
        "fanout_overhead_calls_p50_ms": round(measured["sharded_calls"]["p50_ms"] - single["p50_ms"], 3),
        "load_before": load,
        "load_after": os.getloadavg(),
    }


def estimate(build: list[dict], search: dict) -> dict:
    one, two = build[0]["rows_per_s"], build[1]["rows_per_s"]  # the means of their runs
    efficiency = two / (2 * one)
    overhead = search["fanout_overhead_p50_ms"]
    shard_ms = search["one_store"]["p50_ms"] / search["shards"]
    cpu_one, cpu_two = build[0]["rows_per_worker_cpu_s"], build[1]["rows_per_worker_cpu_s"]
    return {
        "scaling_2_workers": round(two / one, 2),
        "efficiency_2_workers": round(efficiency, 2),
        # Rows per CPU second the workers got, 2 workers against 1: below 1 means the pipeline
        # spends more per row with more workers; near 1 with little scaling means the workers
        # were short of CPU (other jobs), not the pipeline slow.
        "cpu_efficiency_2_workers": round(cpu_two / cpu_one, 2),
        # rows / the busiest embedding actor's CPU seconds, 2 workers against 1: the scaling the
        # actor pool would show with a free core per worker (an estimate from CPU time).
        "scaling_2_workers_a_core_each": round(
            build[1]["rows_per_s_a_core_each"] / build[0]["rows_per_s_a_core_each"], 2
        ),
        "cores_used": {"1_worker": build[0]["cores_used"], "2_workers": build[1]["cores_used"]},
        "build_rows_per_s_per_core": one,
        "note": (
            "Estimate, not measured: N machines of c cores embed about N * c * per-core rate * "
            "efficiency rows/s (the commit is one manifest write per shard, negligible); a sharded "
            "query takes about the scan of rows/N on one shard (search time is linear in rows) plus "
            "the fan-out overhead measured here, which on a real network adds a round trip."
        ),
        "build_rows_per_s_for_machines": {str(n): round(n * 2 * one * efficiency, 1) for n in (1, 4, 16, 64)},
        # N machines each holding rows/shards rows (one shard each): one shard's scan plus the fan-out.
        "query_ms_any_n_at_rows_per_machine": {
            "rows_per_machine": search["rows"] // search["shards"],
            "ms": round(shard_ms + overhead, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2048)
    parser.add_argument("--chunk-size", type=int, default=400)
    parser.add_argument("--train-sample", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--parts", choices=["all", "build", "search"], default="all",
        help="run only the build or the search part (a quick look; the estimate needs both)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_ray.json")
    args = parser.parse_args()

    import ray

    temp = tempfile.mkdtemp(prefix="rvq-b-", dir="/tmp")
    start_ray(temp)
    cache = Path(tempfile.mkdtemp(prefix="bench-ray-cache-"))
    try:
        record = run_record(args.rows, 384, args.queries, 10, chunks=args.chunks, chunk_size=args.chunk_size,
                            train_sample=args.train_sample, batch_size=args.batch_size, repeats=args.repeats,
                            ray=ray.__version__, ray_worker_niceness=os.environ[NICENESS])  # fmt: skip
        if args.parts in ("all", "build"):
            rows = chunks(args.chunks, args.chunk_size)
            from langchain_vq.embeddings import SentenceTransformerEmbeddings

            SentenceTransformerEmbeddings(cache_dir=cache).embed_query("export the model once, before timing")
            build, runs = build_part(rows, args, cache, temp)
            record.update({"build": build, "build_scaling": scaling(build, runs), "build_runs": runs})
            record["build_fixed_cost"] = fixed_cost(rows, args, cache, temp)
            print(json.dumps({"build_scaling": record["build_scaling"], "fixed": record["build_fixed_cost"]}))
        if args.parts in ("all", "search"):
            search = search_part(args)
            print(json.dumps(search, indent=1))
            record["search"] = search
        if args.parts == "all":
            record["estimate"] = estimate(record["build"], record["search"])
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record.get("estimate", {}), indent=1))


if __name__ == "__main__":
    main()
