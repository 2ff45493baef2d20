"""Peak private memory of one large ``add_embeddings`` call, relative to the floats it adds.

A user adding a big batch at once needs that batch in memory anyway; what the store adds on top
(normalized copy, codes, training sample, Arrow columns, the file being written) is what this
measures: a thread samples the process's anonymous resident memory (``RssAnon``) every 2 ms
while one ``add_embeddings`` of ``--n`` x 384 vectors runs on a new on-disk binary store (first
add: the quantizer trains on it).

Run: ``python benchmarks/ingest_memory.py [--n 300000]`` -> ``results/ingest_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import MB, anon_mb, hardware  # noqa: E402

DIM = 384
SAMPLE_SECONDS = 0.002


def main(ns: argparse.Namespace) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_vq import VQVectorStore

    rng = np.random.default_rng(0)
    vectors = np.empty((ns.n, DIM), np.float32)
    for start in range(0, ns.n, 65_536):  # filled in blocks: no float64 temporary
        block = vectors[start : start + 65_536]
        block[:] = rng.random(block.shape, dtype=np.float32) - 0.5
    texts = [f"text {i}" for i in range(ns.n)]
    ids = [str(i) for i in range(ns.n)]
    workdir = Path(tempfile.mkdtemp(prefix="ingest_memory-"))
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anon_mb())
            time.sleep(SAMPLE_SECONDS)

    try:
        store = VQVectorStore(
            DeterministicFakeEmbedding(size=DIM), path=workdir / "store", quantization="binary"
        )
        before = anon_mb()
        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        store.add_embeddings(texts, vectors, ids=ids)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    float_mb = vectors.nbytes / MB
    result = {
        "conditions": {"rows": ns.n, "dim": DIM, "quantization": "binary", "calls": 1},
        "hardware": hardware(),
        "float_mb": float_mb,
        "anon_before_add_mb": before,
        "anon_peak_mb": peak[0],
        "extra_peak_over_floats": (peak[0] - before) / float_mb,
        "add_seconds": seconds,
    }
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{ns.n:,} x {DIM} ({float_mb:.0f} MB of floats): private memory rose by "
        f"{peak[0] - before:.0f} MB at peak, {result['extra_peak_over_floats']:.2f}x the floats"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
