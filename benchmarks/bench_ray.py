"""Scale-out on Ray: distributed build rate with 1 and 2 workers, sharded search against one store.

- **Build**: ``langchain_vq.ray.build_store`` on a local 2-CPU Ray cluster embeds chunks of the
  repository's ``examples/data`` (split at ``--chunk-size`` characters, repeated to ``--chunks``
  rows with distinct ids) with the real model (all-MiniLM-L6-v2, default ``onnx-int8`` backend,
  one thread per worker), quantizes them (binary) and commits them, with 1 and then 2 embedding
  actors. The quantizer is trained first on ``--train-sample`` rows on the driver (reported
  apart). Rate = rows / seconds of the distributed phase (actor start, embedding, segment
  writes, the commit); the end-to-end time is recorded too.
- **Search**: ``--rows`` synthetic MiniLM-like vectors (binary, default multiplier), one store
  against a ``ShardedVQVectorStore`` of ``--shards`` shards on the same cluster; ``--queries``
  single queries each, p50 and p90. The difference of the p50s is the fan-out overhead.
- **Estimate for N machines**: from the measured per-worker build rate and 2-worker efficiency,
  and from the fan-out overhead plus a shard's scan time at 1/N of the rows. An estimate, not a
  measurement: this runs on one machine.

The machine is shared with other jobs: the load average is recorded before and after each part.

Run: ``python benchmarks/bench_ray.py`` (about 5 min) -> ``results/bench_ray.json``.
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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._common import run_record  # noqa: E402


def chunks(count: int, chunk_size: int) -> list[dict[str, str]]:
    from langchain_vq.loaders import load_sources

    pieces = [doc.page_content for f in load_sources([REPO / "examples" / "data"], chunk_size=chunk_size,
                                                      chunk_overlap=0) for doc in f.chunks]  # fmt: skip
    return [{"id": f"c{i}", "text": pieces[i % len(pieces)]} for i in range(count)]


def timed_build(rows: list[dict], workers: int, args: argparse.Namespace, cache: Path) -> dict:
    import ray

    from langchain_vq.embeddings import SentenceTransformerEmbeddings
    from langchain_vq.ray import build_store

    model = SentenceTransformerEmbeddings(num_threads=1, cache_dir=cache)
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        load = os.getloadavg()
        started = time.perf_counter()
        result = build_store(
            ray.data.from_items(rows, override_num_blocks=8 * workers),
            folder / "store",
            model,
            workers=workers,
            num_cpus=0.75,
            batch_size=64,
            train_sample=args.train_sample,
            build_id=f"bench-{workers}",
        )
        total = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "workers": workers,
        "rows": result.rows,
        "sample_seconds": round(result.sample_seconds, 2),
        "distributed_seconds": round(result.write_seconds, 2),
        "total_seconds": round(total, 2),
        "rows_per_s": round(result.rows / result.write_seconds, 2),
        "load_before": load,
        "load_after": os.getloadavg(),
    }


def latencies(search, queries: np.ndarray) -> dict:
    for q in queries[:20]:  # warm up: page cache, FAISS, the actors' first calls
        search(q)
    times = []
    for q in queries:
        started = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
    }


def search_part(args: argparse.Namespace) -> dict:
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
        load = os.getloadavg()
        single = latencies(lambda q: one.similarity_search_by_vector(q, k=10), queries)
        fanned = latencies(lambda q: sharded.similarity_search_by_vector(q, k=10), queries)
        batch_started = time.perf_counter()
        sharded.batch_similarity_search_by_vector(queries, k=10)
        batch_ms = (time.perf_counter() - batch_started) * 1000 / len(queries)
        sharded.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "rows": args.rows,
        "dim": dim,
        "shards": args.shards,
        "queries": args.queries,
        "quantization": "binary",
        "one_store": single,
        "sharded": fanned,
        "sharded_batch_ms_per_query": round(batch_ms, 3),
        "fanout_overhead_p50_ms": round(fanned["p50_ms"] - single["p50_ms"], 3),
        "load_before": load,
        "load_after": os.getloadavg(),
    }


def estimate(build: list[dict], search: dict) -> dict:
    one, two = build[0]["rows_per_s"], build[1]["rows_per_s"]
    efficiency = two / (2 * one)
    overhead = search["fanout_overhead_p50_ms"]
    shard_ms = search["one_store"]["p50_ms"] / search["shards"]
    return {
        "scaling_2_workers": round(two / one, 2),
        "efficiency_2_workers": round(efficiency, 2),
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
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_ray.json")
    args = parser.parse_args()

    import ray

    temp = tempfile.mkdtemp(prefix="rvq-b-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, _node_ip_address="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    cache = Path(tempfile.mkdtemp(prefix="bench-ray-cache-"))
    try:
        record = run_record(args.rows, 384, args.queries, 10, chunks=args.chunks, chunk_size=args.chunk_size,
                            train_sample=args.train_sample, ray=ray.__version__)  # fmt: skip
        rows = chunks(args.chunks, args.chunk_size)
        from langchain_vq.embeddings import SentenceTransformerEmbeddings

        SentenceTransformerEmbeddings(cache_dir=cache).embed_query("export the model once, before timing")
        build = [timed_build(rows, workers, args, cache) for workers in (1, 2)]
        print(json.dumps(build, indent=1))
        search = search_part(args)
        print(json.dumps(search, indent=1))
        record.update({"build": build, "search": search, "estimate": estimate(build, search)})
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["estimate"], indent=1))


if __name__ == "__main__":
    main()
