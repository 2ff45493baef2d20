"""The one exact top-k selection, shared by the quantizers, the search engine and evaluation.

It sits below every other numeric module (it needs only numpy), so each layer can call it
without calling up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt


def top_k(
    scores: npt.NDArray[np.floating], k: int, indices: npt.NDArray[np.integer] | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The ``k`` best (highest) scores of each row, best first, with their indices.

    Ties are ordered by index, also at the k-th place, so results never depend on
    ``argpartition``'s order.

    Args:
        scores: ``[n_queries, c]`` similarities (higher is better); ``-inf`` marks a skipped one.
        k: Results to keep per row; more than ``c`` keeps all ``c``.
        indices: ``[n_queries, c]`` ids of the columns (e.g. row numbers); default the column
            positions, so the result can index other arrays with ``np.take_along_axis``.

    Returns:
        ``(scores, indices)``, each ``[n_queries, min(k, c)]``.
    """
    n = scores.shape[1]
    k = max(0, min(k, n))
    if k == 0:
        return np.empty((scores.shape[0], 0), np.float32), np.empty((scores.shape[0], 0), np.int64)
    if scores.shape[0] == 1:
        return _top_k_row(scores[0], k, None if indices is None else indices[0])
    if indices is None:
        indices = np.broadcast_to(np.arange(n, dtype=np.int64), scores.shape)
    if k < n:
        # Keep every score tied with the k-th best, so the index order decides among them and
        # not argpartition: m is the largest count of scores >= the k-th best over the rows.
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # [n_queries, 1]
        m = int((scores >= kth).sum(axis=1).max())
        if m < n:
            part = np.argpartition(-scores, m - 1, axis=1)[:, :m]  # [n_queries, m], unordered
            scores = np.take_along_axis(scores, part, axis=1)
            indices = np.take_along_axis(indices, part, axis=1)
    order = np.lexsort((indices, -scores), axis=1)[:, :k]  # by score, then by index
    return (
        np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False),
        np.take_along_axis(indices, order, axis=1).astype(np.int64, copy=False),
    )


#: Most scores :func:`_top_k_row` orders all of, without selecting the best first.
_SORT_ALL_MAX = 512


def _top_k_row(
    scores: npt.NDArray[np.floating], k: int, indices: npt.NDArray[np.integer] | None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """:func:`top_k` of a single query (the common case), ``1 <= k <= len(scores)``, as ``[1, k]``.

    The same selection with one partition and plain indexing: every score tied with the k-th
    best is kept before the ordering by score, then index. Up to :data:`_SORT_ALL_MAX` scores
    are ordered without the partition, which costs more than it saves there (10 of 160: 25
    against 40 us right after a code scan has flushed the caches; 10 of 1,100: 99 against 74).
    """
    if scores.size > _SORT_ALL_MAX and indices is not None:
        presorted = _ranked_best_first(scores, k, indices)
        if presorted is not None:
            return presorted
    if scores.size > _SORT_ALL_MAX and k < scores.size:
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        keep = np.flatnonzero(scores >= kth)  # the k best and every score tied with the k-th
        if keep.size < scores.size:
            scores = scores[keep]
            indices = keep if indices is None else indices[keep]
    if indices is None:
        indices = np.arange(scores.size, dtype=np.int64)
    order = np.lexsort((indices, -scores))[:k]
    return (
        scores[order][None, :].astype(np.float32, copy=False),
        indices[order][None, :].astype(np.int64, copy=False),
    )


def _ranked_best_first(
    scores: npt.NDArray[np.floating], k: int, indices: npt.NDArray[np.integer]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None:
    """:func:`_top_k_row` of scores already best first (a kernel's output): only ties to order.

    Each run of equal scores is ordered by index with one sort of ``run << bits | index``
    (``bits`` holds the largest index), a sort of integers, not the two-key ``lexsort``: 0.24 ms
    for 1,710 candidates of a 1M store's query. None (the caller sorts) unless the scores are
    best first, free of NaN and zeros (0.0 and -0.0 tie but differ in bits) and the indices are
    non-negative integers that fit beside the run numbers in 63 bits.
    """
    if indices.dtype.kind not in "iu" or not bool((scores[1:] <= scores[:-1]).all()):
        return None  # not best first, or NaN (every comparison with NaN is False)
    if not bool(scores.all()) or int(indices.min()) < 0:
        return None
    bits = int(indices.max()).bit_length()
    runs = np.zeros(scores.size, np.int64)
    np.cumsum(scores[1:] != scores[:-1], out=runs[1:])
    if int(runs[-1]).bit_length() + bits > 63:
        return None
    ranked = (runs << bits) | indices.astype(np.int64, copy=False)
    ranked.sort()  # the runs keep their places (and scores), their indices come out in order
    return (
        scores[:k][None, :].astype(np.float32, copy=False),
        (ranked[:k] & ((1 << bits) - 1))[None, :],
    )
