"""The search engine: row masks, code scans, float rescoring, merging and MMR."""

from langchain_vq.search.engine import Hits, SegmentView, exact_search, search_segments, similarity
from langchain_vq.search.mmr import maximal_marginal_relevance

__all__ = [
    "Hits",
    "SegmentView",
    "exact_search",
    "maximal_marginal_relevance",
    "search_segments",
    "similarity",
]
