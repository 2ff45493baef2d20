"""Retrieval quality measures: recall against exact search, and nDCG against relevance labels.

Shared by the store's calibration, ``langchain-vq eval``, the tests and the benchmarks, so every
number is computed one way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from langchain_vq.search import exact_search

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy.typing as npt


def exact_top_k(
    queries: npt.NDArray[np.float32], corpus: npt.NDArray[np.float32], k: int
) -> npt.NDArray[np.int64]:
    """Row indices ``[n_queries, min(k, rows)]`` of the best inner products, best first.

    The search engine's exact scan (:func:`langchain_vq.search.exact_search`), so ground truth
    and the store's exact search are one computation.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    return exact_search(corpus, queries, k, "ip").rows


def recall_at_k(found: Sequence[Sequence[object]], expected: Sequence[Sequence[object]], k: int) -> float:
    """Mean fraction of the exact top ``k`` that each result list contains in its first ``k``."""
    if not expected:
        return float("nan")
    total = 0.0
    for got, truth in zip(found, expected, strict=True):
        truth_k = list(truth)[:k]
        total += len(set(list(got)[:k]) & set(truth_k)) / max(len(truth_k), 1)
    return total / len(expected)


def ndcg_at_k(
    ranked: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10
) -> float:
    """Mean nDCG@k over the queries of ``qrels`` (BEIR/trec_eval definition, graded gains)."""
    scores = []
    for query_id, relevant in qrels.items():
        gains = [relevant.get(doc, 0) for doc in list(ranked.get(query_id, []))[:k]]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sorted(relevant.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(scores)) if scores else float("nan")
