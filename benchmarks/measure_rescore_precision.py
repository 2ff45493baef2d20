"""Recall@10 and SciFact nDCG@10 when the rescoring vectors are kept at lower precision.

The store's binary pipeline, one segment: the binary quantizer (default options, trained on up to
100,000 rows as the store trains it) returns ``10 * m`` candidates per query (Hamming scan, then
the asymmetric re-rank); their vectors, stored at each precision and decoded to float32, are
scored against the float query; the top 10 are compared with exact float search over the
float32 vectors (recall@10). Precisions: float32, float16, int8 with min/max ranges (the
rescoring codec), and int8 with the code scan's 0.1% quantile ranges (for comparison).

Data: real all-MiniLM-L6-v2 sentence embeddings (``$LANGCHAIN_VQ_DATA/sentences/emb``, chunks
00-03 cast to float32): the last 1,000 rows are the queries, the first 50k, 100k and 199k rows
the corpora; SciFact (5,183 abstracts, 300 judged queries) for nDCG@10; and, with ``--synthetic
N``, ``N`` synthetic vectors from ``langchain_vq.synthetic`` with 1,000 synthetic queries.

Run: ``python benchmarks/measure_rescore_precision.py [--synthetic 1000000]``; writes
``benchmarks/results/rescore_precision.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import hardware  # noqa: E402
from langchain_vq.evaluation import exact_top_k, load_embedded_beir, ndcg_at_k, recall_at_k  # noqa: E402
from langchain_vq.quantization import ScalarQuantizer, make_quantizer  # noqa: E402
from langchain_vq.quantization.precision import VectorCodec  # noqa: E402
from langchain_vq.synthetic import synthetic_embeddings  # noqa: E402

K = 10
MULTIPLIERS = (16, 32, 64, 128)
TRAIN_SAMPLE = 100_000
N_QUERIES = 1_000
DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "benchmarks" / "results" / "rescore_precision.json"


class _Int8Quantiles:
    """int8 with the code scan's 0.1% quantile ranges, decoded the same way (for comparison)."""

    def __init__(self, dim: int) -> None:
        self.sq = ScalarQuantizer(dim)

    def fit(self, x: np.ndarray) -> _Int8Quantiles:
        self.sq.fit(x)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.sq.encode(x)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return self.sq.decode(stored)


def codecs(dim: int) -> dict[str, Any]:
    return {
        "float32": VectorCodec("float32", dim),
        "float16": VectorCodec("float16", dim),
        "int8": VectorCodec("int8", dim),
        "int8-quantile-0.001": _Int8Quantiles(dim),
    }


def _sample(x: np.ndarray) -> np.ndarray:
    if x.shape[0] <= TRAIN_SAMPLE:
        return x
    rows = np.sort(np.random.default_rng(0).choice(x.shape[0], TRAIN_SAMPLE, replace=False))
    return x[rows]


def rescored_top(
    queries: np.ndarray, candidates: np.ndarray, stored: np.ndarray, codec: Any
) -> list[list[int]]:
    """The top ``K`` of each query's candidates by float query x decoded stored row."""
    out = []
    for query, row in zip(queries, candidates, strict=True):
        cand = row[row >= 0]  # [c]
        scores = codec.decode(stored[cand]) @ query  # [c]
        out.append(cand[np.argsort(-scores, kind="stable")[:K]].tolist())
    return out


def measure(name: str, corpus: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Recall@10 per precision and multiplier on one corpus."""
    start = time.perf_counter()
    truth = exact_top_k(queries, corpus, K).tolist()
    sample = _sample(corpus)
    quantizer = make_quantizer("binary", corpus.shape[1], metric="ip")
    assert quantizer is not None
    quantizer.fit(sample)
    codes = quantizer.encode(corpus)
    candidates = {m: quantizer.search(queries, codes, K * m, reuse=True)[1] for m in MULTIPLIERS}
    recall: dict[str, dict[str, float]] = {}
    for label, codec in codecs(corpus.shape[1]).items():
        stored = codec.fit(sample).encode(corpus)
        recall[label] = {
            str(m): round(recall_at_k(rescored_top(queries, candidates[m], stored, codec), truth, K), 4)
            for m in MULTIPLIERS
        }
        print(name, label, recall[label], flush=True)
    return {
        "rows": corpus.shape[0],
        "queries": queries.shape[0],
        "recall@10": recall,
        "seconds": round(time.perf_counter() - start, 1),
    }


def scifact() -> dict[str, Any]:
    """nDCG@10 per precision at each multiplier, against exact float search."""
    data = load_embedded_beir(DATA / "scifact")
    corpus = np.ascontiguousarray(data["corpus"], dtype=np.float32)
    queries = np.ascontiguousarray(data["queries"], dtype=np.float32)
    ids = data["corpus_ids"]

    def ndcg(rows: list[list[int]]) -> float:
        ranked = {q: [ids[r] for r in found] for q, found in zip(data["query_ids"], rows, strict=True)}
        return round(ndcg_at_k(ranked, data["qrels"], K), 4)

    quantizer = make_quantizer("binary", corpus.shape[1], metric="ip")
    assert quantizer is not None
    quantizer.fit(corpus)
    codes = quantizer.encode(corpus)
    out: dict[str, Any] = {"exact": ndcg(exact_top_k(queries, corpus, K).tolist())}
    for label, codec in codecs(corpus.shape[1]).items():
        stored = codec.fit(corpus).encode(corpus)
        out[label] = {
            str(m): ndcg(rescored_top(queries, quantizer.search(queries, codes, K * m)[1], stored, codec))
            for m in MULTIPLIERS
        }
        print("scifact", label, out[label], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", type=int, default=0, help="also N synthetic vectors (e.g. 1000000)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    emb = DATA / "sentences" / "emb"
    real = np.concatenate([np.load(emb / f"chunk_0{i}.npy").astype(np.float32) for i in range(4)])
    queries, real = real[-N_QUERIES:], real[:-N_QUERIES]
    results: dict[str, Any] = {
        "hardware": hardware(),
        "bytes_per_vector_384": {"float32": 1536, "float16": 768, "int8": 384, "binary codes": 64},
        "multipliers": list(MULTIPLIERS),
        "real": {
            f"{n // 1000}k": measure(f"real {n}", real[:n], queries) for n in (50_000, 100_000, 199_000)
        },
        "scifact_ndcg@10": scifact(),
    }
    if args.synthetic:
        corpus = synthetic_embeddings(args.synthetic, 384, seed=0)
        synthetic_queries = synthetic_embeddings(N_QUERIES, 384, seed=1)
        results["synthetic"] = measure(f"synthetic {args.synthetic}", corpus, synthetic_queries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
