"""A partitioned (inverted-file) first stage: k-means lists, and a fast scan of a few of them.

A full fast-scan pass reads every code: 5-6 ms per query at 1M rows x 384 dims on one thread,
more than the 4.8 ms that 20x ``IndexFlatIP`` allows. Partitioning the rows by their nearest
k-means centroid and scanning only the ``nprobe`` lists whose centroids score best against the
query reads a fraction of them: with 1024 lists at 1M synthetic rows, the 128 best lists held
99.15% of the true top 10 in 16.5% of the rows (``benchmarks/binary_limits.py``).

Used by :class:`~langchain_vq.quantization.binary.BinaryQuantizer` and
:class:`~langchain_vq.quantization.product.ProductQuantizer` (4-bit codes) with ``partitions > 0``:

* :func:`train_partitions`: seeded k-means (``faiss.Kmeans``) on the quantizer's training
  sample, from 256 lists on over its 64 principal components; the centroids are part of the
  quantizer's saved state.
* :func:`assign_partitions`: each row's list, computed once from its float vector when it is
  encoded and stored beside its code, so opening a store never reassigns rows; from 256 lists
  on, the best centroid on the centroids' 64 principal axes (:class:`ListProjection`, saved too).
* :class:`IVFFastScan`: FAISS's ``IndexIVFPQFastScan`` with ``by_residual=False`` and the
  codebooks of the full fast scan (PQ: the learned ones, as
  :class:`~langchain_vq.quantization._fast_scan.PQFastScan`; binary, the corners of
  :class:`~langchain_vq.quantization._fast_scan.NibbleFastScan`; each quantizer names its own,
  ``_partitions.PartitionedQuantizer._fine_codebooks``), its lists
  filled with the stored codes (all lists packed at once by :func:`list_blocks`, FAISS's block
  layout, so filling a list is one copy). Scores are the ones the full fast scan gives (tested
  equal with every list probed), so candidates of partitioned and full scans pool together.
  :func:`probe` keeps the lowest rows among those tied at the ``k``-th score, as the full scan
  does, so a search's best ``n`` are the first ``n`` of any larger count (calibration ranks).
* :func:`joined_ivf_scan`: one such index over a store's segments (their rows share the lists),
  searched through ``_fast_scan.JoinedFastScan`` as the full scan's joined index is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import faiss
import numpy as np

from langchain_vq.code_blocks import BLOCK_ROWS, StoredCodes, pack_blocks
from langchain_vq.quantization._fast_scan import nibble_queries

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

#: Fewest training rows per list: FAISS's k-means warns below 39 points per centroid.
MIN_ROWS_PER_PARTITION = 39
#: Most partitions: a row's list is stored as ``uint16``.
MAX_PARTITIONS = 1 << 16
#: k-means trains on at most this many sampled rows per list (FAISS's own default is 256; 64
#: held the binary_limits.py numbers and costs a quarter of the time).
_KMEANS_ROWS_PER_PARTITION = 64
#: Half FAISS's default of 10, and half the time: the lists held the neighbours as well
#: (``measure_ivf.py --lists``, 1024 lists: rows scanned for 0.99 of the neighbours 23.2%
#: against 23.0% on 200k synthetic rows, 23.0% against 24.8% on 200k real ones).
_KMEANS_ITERATIONS = 5
#: The projected k-means's iterations (:func:`_projected_kmeans`): its rows are assigned once
#: more after the k-means to lift the centroids, so 4 assign them 5 times, and cost a sixth
#: less than 5. Against 5 (and the rest of the training as before), over k-means seeds 1234 / 1
#: / 2 on 200k rows with 1,000 held-out queries (``results/ingest_costs_seeds.json``): at the
#: nprobe chosen the lists held 0.9981 / 0.9978 of the queries' top 10 (synthetic / real; 5:
#: 0.9978 / 0.9979) in 0.300 / 0.429 of the rows (5: 0.290 / 0.435; seed to seed 0.28-0.31 /
#: 0.41-0.46), and 0.997 of it took 0.253 / 0.389 of the rows (5: 0.251 / 0.395).
_PROJECTED_KMEANS_ITERATIONS = 4
_KMEANS_SEED = 1234
#: Rows assigned to their nearest centroid at a time (bounds the distance matrix).
_ASSIGN_BLOCK_ROWS = 16_384


#: Share of the exact top 10 of sampled training rows that the lists of the chosen ``nprobe``
#: must hold: above the store's calibration goal (0.99 + 0.003), so the multiplier can reach it.
NPROBE_COVERAGE = 0.997
#: Training rows used as queries by :func:`choose_nprobe`, and their neighbours counted: 5,000
#: neighbours, so the 0.3% a choice may miss are 15 of them, not 6.
_NPROBE_QUERIES = 500
_NPROBE_K = 10
#: Scores compared at a time when ranking the neighbours' lists (4M: 16 MB of float32).
_RANK_BLOCK = 1 << 22


def default_nprobe(partitions: int) -> int:
    """Lists probed when a saved config names none: an eighth of them (128 of 1024).

    ``binary_limits.py`` at 1M synthetic rows: 64 of 1024 lists held 97.3% of the true top 10,
    128 held 99.15%, 256 99.95%. Quantizers choose theirs at training (:func:`choose_nprobe`).
    """
    return max(1, partitions // 8)


def choose_nprobe(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    metric: str,
    coverage: float = NPROBE_COVERAGE,
    projection: ListProjection | Literal["derive", "flat"] = "derive",
) -> int:
    """The smallest ``nprobe`` whose lists hold ``coverage`` of sampled rows' exact top 10.

    Any number of lists, not a ladder of steps: at 1M synthetic rows the ladder's step above
    128 lists was 256 (``results/ivf.json``: chosen 256, while 128 already gave recall@10
    0.996), and rows scanned grow with it. Real sentences need far more lists than synthetic
    data for the same share (200k real rows, 1024 lists: 0.995 of the neighbours in 32% of the
    rows; 200k synthetic rows: in 23%, ``benchmarks/measure_ivf.py --lists``), so a fixed
    fraction would either waste scans or cap recall below the store's goal. ``projection``: how
    rows are assigned (:func:`assign_partitions`; a caller that has the axes passes them).
    """
    ranks = neighbour_list_ranks(x, centroids, metric, projection)
    if coverage > 1.0 or not ranks.size:
        return int(centroids.shape[0])
    needed = max(1, math.ceil(coverage * ranks.size - 1e-9))  # neighbours the lists must hold
    return int(np.partition(ranks, needed - 1)[needed - 1]) + 1


def neighbour_list_ranks(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    metric: str,
    projection: ListProjection | Literal["derive", "flat"] = "derive",
) -> npt.NDArray[np.int64]:
    """Sampled rows of ``x`` as queries: the rank of each exact top-10 neighbour's list among their lists.

    Up to :data:`_NPROBE_QUERIES` rows (seeded) are queries, each hidden from its own
    neighbours; rank 0 is the query's best list, so ``nprobe`` lists hold the neighbours of
    rank below ``nprobe``. A list's rank is the number of lists scoring above it for the query
    (ties: those of lower number), counted from the queries' scores against every centroid:
    sorting all lists per query (a FAISS search for all 1024) cost 0.1 s, and copying ``x``
    into a flat index for the exact search 0.17-0.27 s of 100k rows (``faiss.knn`` reads it
    in place). ``projection`` as :func:`assign_partitions`'s.
    """
    n, nlist = x.shape[0], centroids.shape[0]
    picks = np.random.default_rng(0).choice(n, min(n, _NPROBE_QUERIES), replace=False)
    queries = np.ascontiguousarray(x[picks], np.float32)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    found = faiss.knn(queries, np.ascontiguousarray(x, np.float32), min(n, _NPROBE_K + 1), faiss_metric)[1]
    truth = [
        [j for j in row.tolist() if j != own and j >= 0][:_NPROBE_K]
        for row, own in zip(found, picks, strict=True)
    ]
    queries_of = np.repeat(np.arange(len(picks)), [len(t) for t in truth])
    neighbours = np.array([j for t in truth for j in t], dtype=np.int64)
    if not neighbours.size:
        return np.empty(0, np.int64)
    unique, at = np.unique(neighbours, return_inverse=True)  # each neighbour assigned once, in one call
    lists = assign_partitions(centroids, x[unique], metric, projection)[at].astype(np.int64)
    scores = _centroid_scores(queries, centroids, metric)  # [queries, nlist], higher is better
    ranks = np.empty(neighbours.size, np.int64)
    step = max(1, _RANK_BLOCK // nlist)  # neighbours compared at a time: bounded temporaries
    for start in range(0, neighbours.size, step):
        own_lists = lists[start : start + step, None]
        theirs = scores[queries_of[start : start + step]]  # [neighbours, nlist]
        own = np.take_along_axis(theirs, own_lists, axis=1)  # each neighbour's own list's score
        ahead = (theirs > own) | ((theirs == own) & (np.arange(nlist)[None, :] < own_lists))
        ranks[start : start + step] = ahead.sum(axis=1)
    return ranks


def _centroid_scores(
    queries: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32], metric: str
) -> npt.NDArray[np.float32]:
    """``[queries, lists]`` scores, higher better: ``q . c`` (``"ip"``), ``-||q - c||^2`` (``"l2"``)."""
    dots = queries @ centroids.T
    if metric == "ip":
        return dots
    return 2 * dots - (centroids * centroids).sum(axis=1)[None, :]  # ``|q|^2`` ranks no list


def train_partitions(x: npt.NDArray[np.float32], partitions: int, metric: str) -> npt.NDArray[np.float32]:
    """``float32[partitions, dim]`` k-means centroids of ``x`` (seeded, so refits agree).

    From :data:`MIN_PROJECTED_LISTS` lists on (and above :data:`PROJECTED_DIMS` dimensions) the
    k-means runs on the rows' :data:`PROJECTED_DIMS` principal components and each centroid is
    then the mean of its rows' full vectors (:func:`_projected_kmeans`). Fewer lists: a k-means
    of the full vectors, spherical for ``"ip"`` (unit centroids), so a row's list is the
    centroid of highest inner product, as the store's normalized cosine vectors are compared.
    """
    if partitions >= MIN_PROJECTED_LISTS and x.shape[1] > PROJECTED_DIMS:
        return _projected_kmeans(x, partitions, metric)
    kmeans = faiss.Kmeans(
        x.shape[1],
        partitions,
        niter=_KMEANS_ITERATIONS,
        seed=_KMEANS_SEED,
        spherical=metric == "ip",
        max_points_per_centroid=_KMEANS_ROWS_PER_PARTITION,
        min_points_per_centroid=1,  # callers guarantee MIN_ROWS_PER_PARTITION; no warnings
    )
    kmeans.train(np.ascontiguousarray(x, np.float32))
    return np.ascontiguousarray(kmeans.centroids, np.float32)


def _projected_kmeans(x: npt.NDArray[np.float32], partitions: int, metric: str) -> npt.NDArray[np.float32]:
    """k-means on the sample's top principal components, centroids lifted to the rows' means.

    ``measure_ivf.py --old-lists --lists 1024`` (200k rows, 500 held-out queries): with the
    projected assignment, rows scanned for 0.99 / 0.995 / 0.997 of the neighbours were 8% / 9% /
    6% fewer than a full-vector k-means's on synthetic rows, 11% more / the same / 16% fewer on
    real sentences; training took 1.7-2.8x less time (a 64-dim k-means).
    """
    rng = np.random.default_rng(_KMEANS_SEED)
    rows = np.arange(x.shape[0])  # the rows the k-means runs on, read from ``x`` where needed
    if x.shape[0] > partitions * _KMEANS_ROWS_PER_PARTITION:
        rows = np.sort(rng.choice(x.shape[0], partitions * _KMEANS_ROWS_PER_PARTITION, replace=False))
    axes = _principal_axes(
        np.asarray(x[rows[rng.choice(rows.size, min(rows.size, _PCA_ROWS), replace=False)]], np.float32),
        PROJECTED_DIMS,
    )
    projected = np.empty((rows.size, PROJECTED_DIMS), np.float32)
    block = np.empty((min(rows.size, _READ_BLOCK_ROWS), x.shape[1]), np.float32)  # reused: no fresh pages
    for start in range(0, rows.size, _READ_BLOCK_ROWS):
        picked = rows[start : start + _READ_BLOCK_ROWS]
        np.take(x, picked, axis=0, out=block[: picked.size])
        np.matmul(block[: picked.size], axes, out=projected[start : start + picked.size])
    kmeans = faiss.Kmeans(
        PROJECTED_DIMS,
        partitions,
        niter=_PROJECTED_KMEANS_ITERATIONS,
        seed=_KMEANS_SEED,
        max_points_per_centroid=_KMEANS_ROWS_PER_PARTITION,
        min_points_per_centroid=1,
    )
    kmeans.train(projected)
    lists = kmeans.index.search(projected, 1)[1][:, 0]
    sums, counts = _list_sums(x, rows, lists, partitions)
    mean = (sums.sum(axis=0) / rows.size).astype(np.float32)  # of all the rows
    centroids = ((kmeans.centroids - mean @ axes) @ axes.T + mean).astype(np.float32)  # lists with no rows
    held = counts > 0
    centroids[held] = sums[held] / counts[held, None]
    if metric == "ip":
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(centroids, np.float32)


def _list_sums(
    x: npt.NDArray[np.float32], rows: npt.NDArray[np.intp], lists: npt.NDArray[np.integer[Any]], count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``(float64[count, dim], int64[count])``: each list's sum of vectors and its rows.

    Row ``rows[i]`` of ``x`` is in list ``lists[i]``.

    Each list's rows are gathered and summed on their own, so no copy of all the rows is made:
    ``np.add.reduceat`` over a sorted copy of 65,536 x 384 rows took 0.27-0.40 s in 1024 lists,
    and the copy itself (100 MB of fresh pages) 0.03-0.6 s depending on the load.
    """
    counts = np.bincount(lists, minlength=count).astype(np.int64)
    order = rows[np.argsort(lists, kind="stable")]  # rows of ``x``, list after list
    firsts = np.cumsum(counts) - counts
    sums = np.zeros((count, x.shape[1]), np.float64)
    for list_no in np.flatnonzero(counts).tolist():
        start = int(firsts[list_no])
        members = np.asarray(x[order[start : start + int(counts[list_no])]], np.float32)
        sums[list_no] = members.sum(axis=0, dtype=np.float64)
    return sums, counts


def _principal_axes(x: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.float32]:
    """``float32[dim, count]``: the ``count`` directions of largest variance of ``x`` (orthonormal).

    The scatter matrix is one float32 product of the centred rows (float64 took 2x the time:
    0.18-0.24 s of 16,384 x 384 rows), decomposed in float64.
    """
    centred = (x - x.mean(axis=0, dtype=np.float64)).astype(np.float32)
    _, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    return np.ascontiguousarray(vectors[:, ::-1][:, :count], np.float32)


def centroid_index(centroids: npt.NDArray[np.float32], metric: str) -> Any:
    """A FAISS flat index over ``centroids`` that finds a vector's list (best score first)."""
    index = faiss.IndexFlatIP(centroids.shape[1]) if metric == "ip" else faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    return index


@dataclass(frozen=True)
class ListProjection:
    """The directions along which the lists' centroids differ most, to assign rows cheaply.

    A row's list is the best centroid by its score on the :data:`PROJECTED_DIMS` principal axes
    of the centroids: every centroid shares ``x . mean(centroids)``, and what sets them apart
    lies mostly on those axes. 384 dims, 1024 lists: 64 x 384 + 64 x 1024 multiply-adds a row
    instead of 384 x 1024. Queries still rank every list by its own full centroid. Saved with
    the quantizer (``_partitions``), so rows added later are assigned on the same axes.

    Attributes:
        axes: ``float32[dim, k]``, orthonormal.
    """

    axes: npt.NDArray[np.float32]


#: Fewest lists trained and assigned on principal axes: below, a full k-means and scoring every
#: centroid are cheap (and assignment exact).
MIN_PROJECTED_LISTS = 256
#: Principal axes the k-means runs on and rows are assigned on. 1024 lists, 100k rows, 2,000
#: queries: on 64 (or 48) axes the lists held the neighbours in about as many rows as the exact
#: assignment to the same centroids (74% / 92% of real / synthetic rows in the nearest
#: centroid's list at 200k); on 32 axes real sentences needed 9-20% more rows.
PROJECTED_DIMS = 64
#: Rows the principal axes of a training sample are computed from.
_PCA_ROWS = 16_384
#: Sample rows read (by index) and projected at a time by the projected k-means.
_READ_BLOCK_ROWS = 4096


def project_lists(centroids: npt.NDArray[np.float32], metric: str) -> ListProjection | None:  # noqa: ARG001
    """The centroids' principal axes, or None (every centroid scored) for few lists or dimensions."""
    if centroids.shape[0] < MIN_PROJECTED_LISTS or centroids.shape[1] <= PROJECTED_DIMS:
        return None
    return ListProjection(_principal_axes(centroids, PROJECTED_DIMS))


def _nearest(
    centroids: npt.NDArray[np.float32], x: npt.NDArray[np.float32], metric: str
) -> npt.NDArray[np.int64]:
    """Each row of ``x``'s nearest centroid, scoring every one (FAISS's flat search)."""
    index = centroid_index(centroids, metric)
    out = np.empty(x.shape[0], np.int64)
    for start in range(0, x.shape[0], _ASSIGN_BLOCK_ROWS):
        block = np.ascontiguousarray(x[start : start + _ASSIGN_BLOCK_ROWS], np.float32)
        out[start : start + block.shape[0]] = index.search(block, 1)[1][:, 0]
    return out


def _projected_nearest(
    centroids: npt.NDArray[np.float32], projection: ListProjection, x: npt.NDArray[np.float32], metric: str
) -> npt.NDArray[np.int64]:
    """Each row's best centroid by ``(x A) . ((c - mean) A)`` (``- |c|^2 / 2`` for L2), ``A`` the axes.

    One inner-product search over the projected centroids, with the L2 term as one more column.
    """
    axes = projection.axes
    spread = (centroids - centroids.mean(axis=0)) @ axes
    bias = (
        np.zeros(centroids.shape[0], np.float32)
        if metric == "ip"
        else -0.5 * (centroids * centroids).sum(axis=1)
    )
    index = faiss.IndexFlatIP(axes.shape[1] + 1)
    index.add(np.ascontiguousarray(np.column_stack([spread, bias]), np.float32))
    out = np.empty(x.shape[0], np.int64)
    block = np.ones((min(x.shape[0], _ASSIGN_BLOCK_ROWS), axes.shape[1] + 1), np.float32)
    for start in range(0, x.shape[0], _ASSIGN_BLOCK_ROWS):
        rows = x[start : start + _ASSIGN_BLOCK_ROWS]
        np.matmul(rows, axes, out=block[: rows.shape[0], :-1])
        out[start : start + rows.shape[0]] = index.search(block[: rows.shape[0]], 1)[1][:, 0]
    return out


def assign_partitions(
    centroids: npt.NDArray[np.float32],
    x: npt.NDArray[np.float32],
    metric: str,
    projection: ListProjection | Literal["derive", "flat"] = "derive",
) -> npt.NDArray[np.uint16]:
    """``uint16[n]``: each row's list, its best centroid by ``metric`` (on principal axes when projected).

    ``projection``: the quantizer's saved :class:`ListProjection`; ``"derive"`` computes it from
    the centroids as training does (:func:`project_lists`: the same axes), so rows are assigned
    as the store will assign them; ``"flat"`` scores every centroid in full (lists trained
    before projections existed, and fewer than :data:`MIN_PROJECTED_LISTS` lists).
    """
    chosen = project_lists(centroids, metric) if projection == "derive" else projection
    if isinstance(chosen, ListProjection):
        return _projected_nearest(centroids, chosen, x, metric).astype(np.uint16)
    return _nearest(centroids, x, metric).astype(np.uint16)


def padded_counts(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Rows per list rounded up to whole 32-row blocks (FAISS keeps each list in its own blocks)."""
    return -(-counts // BLOCK_ROWS) * BLOCK_ROWS


def list_blocks(
    codes: npt.NDArray[np.uint8], lists: npt.NDArray[np.integer[Any]], nlist: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Row-major ``codes`` grouped by list, in the fast-scan block layout, in one pass.

    Returns ``(rows, counts, blocks)``: ``int64[n]`` the rows in list order (row order within a
    list), ``int64[nlist]`` rows per list, and the block bytes of list after list, each list
    padded with zero rows to whole blocks (:func:`padded_counts`). Rows already grouped by list
    (a format-3 segment) keep their order: the gather below then reads the codes front to back.
    """
    in_order = lists.size < 2 or not np.any(lists[1:] < lists[:-1])
    rows = (
        np.arange(lists.size, dtype=np.int64)
        if in_order
        else np.argsort(lists, kind="stable").astype(np.int64)
    )
    counts = np.bincount(lists, minlength=nlist).astype(np.int64)
    padded = padded_counts(counts)
    shift = np.cumsum(padded) - padded - (np.cumsum(counts) - counts)  # padding before each list
    places = np.arange(rows.size) + np.repeat(shift, counts)  # each row's place in list order
    source = np.zeros(int(padded.sum()), np.int64)
    source[places] = rows
    # One gather of whole codes (a row as one opaque item): 2.5x faster than a scatter of uint8 rows.
    width = codes.shape[1]
    items = np.ascontiguousarray(codes).view(np.dtype((np.void, width))).reshape(-1)
    grouped = items[source].view(np.uint8).reshape(-1, width)
    padding = np.ones(source.size, bool)
    padding[places] = False
    grouped[padding] = 0
    return rows, counts, pack_blocks(grouped)


def code_bytes(fine: npt.NDArray[np.float32]) -> int:
    """Bytes of a 4-bit code over the ``fine`` codebooks: two sub-codes a byte."""
    return (fine.shape[0] + 1) // 2


#: FAISS's IVF fast-scan variant for one query: ``implem`` 11 (lists scanned one query at a
#: time, reservoir results) cost 8-10% less CPU than the automatic choice (``implem`` 0: 13, its
#: batched form) at k = 10 to 1,710 over 1M rows, 263 of 1024 lists (e.g. 1.74 against 1.92 ms
#: at k = 1,710), with the same rows and scores; batches keep the automatic choice, which was
#: 1.5-1.7x faster for them (``benchmarks/measure_query_stages.py --implem``).
_SINGLE_QUERY_IMPLEM = 11


class IVFFastScan:
    """FAISS's IVF fast scan over stored 4-bit PQ codes, each row in the list stored for it.

    Codebook-agnostic: ``fine`` are the 4-bit codebooks the codes index, in the kernel's
    sub-quantizer order (sub-code ``2j`` in the low nibble of code byte ``j``, FAISS's 4-bit PQ
    layout), and ``order`` lays queries and centroids out in that order.

    Args:
        codes: Stored ``uint8[n, >= ceil(n_sub / 2)]`` codes (padding bytes are ignored).
        lists: ``uint16[n]``, each row's list (from :func:`assign_partitions`).
        centroids: ``float32[nlist, dim]``, the lists' centroids.
        fine: ``float32[n_sub, 16, dsub]`` codebooks of the codes' sub-codes.
        metric: ``"ip"`` (scores ``q . x_hat``) or ``"l2"`` (scores ``-||q - x_hat||^2``).
        order: Dimension order of the kernel's ``n_sub * dsub`` inputs (queries are zero-padded
            to that width first); None: the dimensions in their own order.
    """

    def __init__(
        self,
        codes: StoredCodes,
        lists: npt.NDArray[np.integer[Any]],
        centroids: npt.NDArray[np.float32],
        fine: npt.NDArray[np.float32],
        metric: str,
        order: npt.NDArray[np.intp] | None = None,
    ) -> None:
        n_sub, _, dsub = fine.shape
        width = n_sub * dsub
        self.code_bytes = code_bytes(fine)
        self.metric = metric
        self.nlist = centroids.shape[0]
        self.rows = int(np.asarray(lists).size)
        self._order = np.arange(width) if order is None else order
        # The coarse centroids laid out as the queries will be.
        self._coarse = centroid_index(nibble_queries(centroids, self._order), metric)
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        index = faiss.IndexIVFPQFastScan(self._coarse, width, self.nlist, n_sub, 4, faiss_metric, BLOCK_ROWS)
        index.by_residual = False  # rows are coded as they are, not relative to their centroid
        faiss.copy_array_to_vector(np.ascontiguousarray(fine, np.float32).ravel(), index.pq.centroids)
        index.is_trained = True
        self._fill(index, codes, np.asarray(lists))
        self._index: Any = index

    def _fill(self, index: Any, codes: StoredCodes, lists: npt.NDArray[np.integer[Any]]) -> None:
        """Put every row's code in its list, in FAISS's block layout, labelled by its row.

        One gather of all rows into list order (each list padded to whole 32-row blocks) and one
        vectorised packing, then one copy per list: packing list by list (an argsort slice,
        a fancy index and a ``pack_blocks`` call each) took 0.61 s for 1M rows in 1024 lists.
        """
        rows, counts, blocks = list_blocks(codes.unpacked()[:, : self.code_bytes], lists, self.nlist)
        firsts = np.cumsum(counts) - counts  # each list's first place in ``rows``
        offsets = (np.cumsum(padded_counts(counts)) - padded_counts(counts)) * self.code_bytes
        invlists = index.invlists
        for list_no in np.flatnonzero(counts).tolist():
            # BlockInvertedLists.add_entries copies whole blocks as given into an empty list.
            invlists.add_entries(
                list_no,
                int(counts[list_no]),
                faiss.swig_ptr(rows[firsts[list_no] :]),
                faiss.swig_ptr(blocks[offsets[list_no] :]),
            )
        index.ntotal = int(lists.size)

    def search(
        self, queries: npt.NDArray[np.float32], k: int, nprobe: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows of the ``nprobe`` best lists per query, best first (row -1: empty place)."""
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe, self.nlist)
        # The kernel's variant: any gives the same scores (and ``probe`` the same rows).
        self._index.implem = _SINGLE_QUERY_IMPLEM if queries.shape[0] == 1 else 0
        dist, labels = self._index.search(nibble_queries(queries, self._order), k, params=params)
        return (dist if self.metric == "ip" else -dist), labels


#: Rows a partitioned scan fetches past the ``k`` it returns, plus ``k //``
#: :data:`_TIE_FRACTION`, so that the rows tied with the ``k``-th best score are all in hand:
#: at 200k synthetic rows, 1024 lists, 249 probed (binary), the rows tied with the ``n``-th
#: best past it were at most 2 / 4 / 10 / 15 / 37 for n = 100 / 320 / 1,000 / 3,200 /
#: 12,800 (200 queries). A query whose tied rows reach past the fetch is searched again
#: with twice as many.
_TIE_ROWS = 32
_TIE_FRACTION = 64


def probe(
    scan: IVFFastScan, queries: npt.NDArray[np.float32], k: int, nprobe: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top ``k`` of the ``nprobe`` best lists, best first, ties at the ``k``-th by row; short lists: all.

    Of the rows tied with the ``k``-th best score, the lowest are kept, as the full scan keeps
    them, so the best ``n`` rows are the first ``n`` of the best ``n' > n`` by score, then row
    (calibration ranks every multiplier from one scan). FAISS keeps tied rows in the order it
    scans them, list after list, and drops the rest at the ``k``-th place: the best ``n`` of two
    searches at different ``k`` differed in tied rows. Order within the ties is the kernel's
    (callers rank by score, then row).

    A query whose lists hold fewer than ``k`` rows gets every list (so the best ``n`` are a
    prefix only up to the rows a query's lists hold); the other queries of the batch keep
    theirs. Places can still be empty (row -1) when ``k`` is near the rows indexed and scores
    tie: callers then score exactly.
    """
    scores, rows = _by_score_then_row(scan, queries, k, nprobe)
    if nprobe >= scan.nlist or not rows.size:
        return scores, rows
    if rows.shape[0] == 1 and int(rows[0, -1]) >= 0:  # one query, not short: no numpy call
        return scores, rows
    short = rows[:, -1] < 0  # best first: an empty place is last
    if short.any():
        scores[short], rows[short] = _by_score_then_row(scan, queries[short], k, scan.nlist)
    return scores, rows


def _by_score_then_row(
    scan: IVFFastScan, queries: npt.NDArray[np.float32], k: int, nprobe: int, fetch: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The top ``k`` rows of the ``nprobe`` best lists, best first; of those tied at the ``k``-th, the lowest.

    Fetches ``fetch`` rows (default ``k`` and :data:`_TIE_ROWS` more): a query whose last row
    fetched still scores as its ``k``-th may have more tied rows, and is searched again with
    twice as many; the others have every row tied with the ``k``-th in hand. Empty places
    (row -1) score ``-inf`` and come last.
    """
    fetch = min(fetch or k + _TIE_ROWS + k // _TIE_FRACTION, max(scan.rows, k))
    scores, rows = scan.search(queries, fetch, nprobe)
    if k == 0:
        return scores[:, :0], rows[:, :0]
    # One query (a user's search): Python scalars, not numpy calls, each slow on the caches
    # the scan has just flushed (10-20 us apiece at load 6).
    single = queries.shape[0] == 1
    if (int(rows[0, -1]) if single else int(rows[:, -1].min())) < 0:
        scores = np.where(rows >= 0, scores, np.float32(-np.inf))
    if fetch >= scan.rows:
        more = None
    elif single:
        more = np.array([int(rows[0, -1]) >= 0 and float(scores[0, -1]) == float(scores[0, k - 1])])
    else:
        more = (scores[:, -1] == scores[:, k - 1]) & (rows[:, -1] >= 0)
    _lowest_rows_first_in_ties(scores, rows, k)
    scores, rows = scores[:, :k], rows[:, :k]
    if more is not None and more.any():
        scores[more], rows[more] = _by_score_then_row(scan, queries[more], k, nprobe, 2 * fetch)
    return scores, rows


def _lowest_rows_first_in_ties(scores: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], k: int) -> None:
    """Order by row, in place, each query's run of rows tied with its ``k``-th that reaches past ``k``.

    The kernel sorts its results by score, so tied rows are adjacent: the run is found by
    walking from the ``k``-th place. Only that run decides which rows a cut at ``k`` keeps
    (callers rank by score, then row). Every step after the kernel's scan runs on caches it
    has flushed: ordering all 800 results by score, then row (``top_k``) cost 0.16-0.22 ms,
    a fifth of the probe, at 761 of 200k rows.
    """
    if scores.shape[1] <= k:
        return
    if scores.shape[0] == 1:
        crossing = [0] if float(scores[0, k]) == float(scores[0, k - 1]) else []
    else:
        crossing = np.flatnonzero(scores[:, k] == scores[:, k - 1]).tolist()
    for q in crossing:
        tied, value = scores[q], scores[q, k - 1]
        start, stop = k - 1, k + 1
        while start and tied[start - 1] == value:
            start -= 1
        while stop < tied.size and tied[stop] == value:
            stop += 1
        rows[q, start:stop] = np.sort(rows[q, start:stop])


class ProbedScan:
    """A partitioned scan searched at a number of lists its owner sets (``_fast_scan.FastScanIndex``).

    So the full scan's helpers (``fast_scan_candidates``, ``JoinedFastScan``) serve it too. The
    owner (the quantizer) sets ``nprobe`` before each use: it may change after the scan is built.
    """

    def __init__(self, scan: IVFFastScan, nprobe: int = 1) -> None:
        self.scan = scan
        self.rows = scan.rows
        self.nprobe = nprobe

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows of the ``nprobe`` best lists (see :func:`probe`)."""
        return probe(self.scan, queries, k, self.nprobe)


def joined_ivf_scan(
    arrays: Sequence[StoredCodes],
    centroids: npt.NDArray[np.float32],
    fine: npt.NDArray[np.float32],
    metric: str,
    order: npt.NDArray[np.intp] | None = None,
) -> ProbedScan:
    """One partitioned index over several code arrays with lists (a store's segments), for ``JoinedFastScan``.

    A store built by ten adds keeps about four segments; searched one by one, each paid its own
    coarse search, lookup tables and kernel call. Here their rows share the lists: row ``r`` of
    array ``i`` is index row ``sum(sizes[:i]) + r`` (no padding between arrays: each list's
    blocks are padded, not the arrays), probed as one array of all the rows would be.
    ``fine`` and ``order`` as :class:`IVFFastScan`'s (binary: ``_fast_scan.nibble_centroids``).
    """
    width = code_bytes(fine)
    lists = np.concatenate([np.asarray(a.lists) for a in arrays])
    codes = np.concatenate([a.unpacked()[:, :width] for a in arrays])
    return ProbedScan(IVFFastScan(StoredCodes(codes), lists, centroids, fine, metric, order))
