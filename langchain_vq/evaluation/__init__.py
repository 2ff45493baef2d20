"""Measuring retrieval quality: metrics, a BEIR loader, settings sweeps and their report.

``metrics`` (recall@k, nDCG@k, exact top-k) and ``beir`` are re-exported here. The settings
sweep of ``langchain-vq eval`` (:mod:`langchain_vq.evaluation.settings`) and its table and plot
(:mod:`langchain_vq.evaluation.report`) are imported from their modules: they sit above the
store's runtime calibration (``langchain_vq.calibration``), which itself uses ``metrics``.
"""

from langchain_vq.evaluation.beir import load_embedded_beir
from langchain_vq.evaluation.metrics import exact_top_k, ndcg_at_k, recall_at_k

__all__ = ["exact_top_k", "load_embedded_beir", "ndcg_at_k", "recall_at_k"]
