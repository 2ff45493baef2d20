"""A partitioned (inverted-file) first stage: k-means lists, and a fast scan of a few of them.

A full fast-scan pass reads every code: 5-6 ms per query at 1M rows x 384 dims on one thread,
more than the 4.8 ms that 20x ``IndexFlatIP`` allows. Partitioning the rows by their nearest
k-means centroid and scanning only the ``nprobe`` lists whose centroids score best against the
query reads a fraction of them: with 1024 lists at 1M synthetic rows, the 128 best lists held
99.15% of the true top 10 in 16.5% of the rows (``benchmarks/binary_limits.py``).

Three parts, used by :class:`~langchain_vq.quantization.binary.BinaryQuantizer` and
:class:`~langchain_vq.quantization.product.ProductQuantizer` (4-bit codes) with ``partitions > 0``:

* :func:`train_partitions`: seeded k-means (``faiss.Kmeans``, spherical for inner product) on
  the quantizer's training sample; the centroids are part of the quantizer's saved state.
* :func:`assign_partitions`: each row's list, computed once from its float vector when it is
  encoded and stored beside its code, so opening a store never reassigns rows.
* :class:`IVFFastScan`: FAISS's ``IndexIVFPQFastScan`` with ``by_residual=False`` and the
  codebooks of the full fast scan (PQ: the learned ones, as
  :class:`~langchain_vq.quantization._fast_scan.PQFastScan`; binary, :class:`IVFNibbleFastScan`:
  the corners of :class:`~langchain_vq.quantization._fast_scan.NibbleFastScan`), its lists filled
  with the stored codes (packed by ``code_blocks.pack_blocks``, FAISS's block layout, so filling
  a list is one copy). Scores are the ones the full fast scan gives (tested equal with every
  list probed), so candidates of partitioned and full scans pool together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from langchain_vq.code_blocks import BLOCK_ROWS, pack_blocks
from langchain_vq.quantization._fast_scan import nibble_centroids, nibble_queries

if TYPE_CHECKING:
    import numpy.typing as npt

    from langchain_vq.code_blocks import StoredCodes

#: Fewest training rows per list: FAISS's k-means warns below 39 points per centroid.
MIN_ROWS_PER_PARTITION = 39
#: Most partitions: a row's list is stored as ``uint16``.
MAX_PARTITIONS = 1 << 16
#: k-means trains on at most this many sampled rows per list (FAISS's own default is 256; 64
#: held the binary_limits.py numbers and costs a quarter of the time).
_KMEANS_ROWS_PER_PARTITION = 64
_KMEANS_ITERATIONS = 10
_KMEANS_SEED = 1234
#: Rows assigned to their nearest centroid at a time (bounds the distance matrix).
_ASSIGN_BLOCK_ROWS = 16_384


#: Share of the exact top 10 of sampled training rows that the lists of the chosen ``nprobe``
#: must hold: above the store's calibration goal (0.99 + 0.003), so the multiplier can reach it.
NPROBE_COVERAGE = 0.997
#: Training rows used as queries by :func:`choose_nprobe`, and their neighbours counted.
_NPROBE_QUERIES = 200
_NPROBE_K = 10


def default_nprobe(partitions: int) -> int:
    """Lists probed when a saved config names none: an eighth of them (128 of 1024).

    ``binary_limits.py`` at 1M synthetic rows: 64 of 1024 lists held 97.3% of the true top 10,
    128 held 99.15%, 256 99.95%. Quantizers choose theirs at training (:func:`choose_nprobe`).
    """
    return max(1, partitions // 8)


def nprobe_ladder(partitions: int) -> list[int]:
    """Candidate ``nprobe`` values: 1, 2, 3, 4, 6, 8, 12, ... (powers of two and their 1.5x), then all."""
    steps = sorted({v for p in range(17) for v in (1 << p, 3 << p >> 1) if 1 <= v < partitions})
    return [*steps, partitions]


def choose_nprobe(
    x: npt.NDArray[np.float32],
    centroids: npt.NDArray[np.float32],
    metric: str,
    coverage: float = NPROBE_COVERAGE,
) -> int:
    """The smallest ``nprobe`` whose lists hold ``coverage`` of sampled rows' exact top 10.

    Measured on the training rows ``x``: up to 200 of them (seeded) are queries, each hidden from
    its own neighbours; a neighbour counts when its list is among the query's ``nprobe`` best.
    Real sentences need far more lists than synthetic data for the same share (99,000 rows, 256
    lists: 32 held 94.0%, 128 held 99.45%; 100k synthetic rows, 1024 lists: 128 held 98.7%, 256
    99.6%), so a fixed fraction would either waste scans or cap recall below the store's goal.
    """
    n, nlist = x.shape[0], centroids.shape[0]
    picks = np.random.default_rng(0).choice(n, min(n, _NPROBE_QUERIES), replace=False)
    queries = np.ascontiguousarray(x[picks])
    exact = faiss.IndexFlatIP(x.shape[1]) if metric == "ip" else faiss.IndexFlatL2(x.shape[1])
    exact.add(np.ascontiguousarray(x, np.float32))
    found = exact.search(queries, min(n, _NPROBE_K + 1))[1]
    truth = [
        [j for j in row.tolist() if j != own and j >= 0][:_NPROBE_K]
        for row, own in zip(found, picks, strict=True)
    ]
    probe_order = centroid_index(centroids, metric).search(queries, nlist)[1]  # [queries, nlist]
    rank = np.empty_like(probe_order)
    rank[np.arange(len(picks))[:, None], probe_order] = np.arange(nlist)[None, :]
    ranks = np.concatenate(
        [rank[i, assign_partitions(centroids, x[t], metric)] for i, t in enumerate(truth) if t]
    )
    for nprobe in nprobe_ladder(nlist):
        if float(np.mean(ranks < nprobe)) >= coverage:
            return nprobe
    return nlist


def train_partitions(x: npt.NDArray[np.float32], partitions: int, metric: str) -> npt.NDArray[np.float32]:
    """``float32[partitions, dim]`` k-means centroids of ``x`` (seeded, so refits agree).

    For ``"ip"`` the k-means is spherical (unit centroids), so a row's list is the centroid of
    highest inner product, as the store's normalized cosine vectors are compared.
    """
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


def centroid_index(centroids: npt.NDArray[np.float32], metric: str) -> Any:
    """A FAISS flat index over ``centroids`` that finds a vector's list (best score first)."""
    index = faiss.IndexFlatIP(centroids.shape[1]) if metric == "ip" else faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    return index


def assign_partitions(
    centroids: npt.NDArray[np.float32], x: npt.NDArray[np.float32], metric: str
) -> npt.NDArray[np.uint16]:
    """``uint16[n]``: each row's list, the centroid nearest to it (by ``metric``)."""
    index = centroid_index(centroids, metric)
    out = np.empty(x.shape[0], np.uint16)
    for start in range(0, x.shape[0], _ASSIGN_BLOCK_ROWS):
        block = np.ascontiguousarray(x[start : start + _ASSIGN_BLOCK_ROWS], np.float32)
        out[start : start + block.shape[0]] = index.search(block, 1)[1][:, 0]
    return out


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
        self.code_bytes = (n_sub + 1) // 2
        self.metric = metric
        self.nlist = centroids.shape[0]
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
        """Put every row's code in its list, in FAISS's block layout, labelled by its row."""
        rows_by_list = np.argsort(lists, kind="stable")  # rows of each list in row order
        bounds = np.searchsorted(lists[rows_by_list], np.arange(self.nlist + 1))
        row_major = codes.row_major
        invlists = index.invlists
        for list_no in np.flatnonzero(np.diff(bounds)).tolist():
            rows = rows_by_list[bounds[list_no] : bounds[list_no + 1]].astype(np.int64)
            # BlockInvertedLists.add_entries copies whole blocks as given into an empty list.
            blocks = pack_blocks(np.ascontiguousarray(row_major[rows, : self.code_bytes]))
            invlists.add_entries(list_no, rows.size, faiss.swig_ptr(rows), faiss.swig_ptr(blocks))
        index.ntotal = int(lists.size)

    def search(
        self, queries: npt.NDArray[np.float32], k: int, nprobe: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows of the ``nprobe`` best lists per query, best first (row -1: empty place)."""
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe, self.nlist)
        dist, labels = self._index.search(nibble_queries(queries, self._order), k, params=params)
        return (dist if self.metric == "ip" else -dist), labels


class IVFNibbleFastScan(IVFFastScan):
    """:class:`IVFFastScan` over packed bit codes, with the corner codebooks of their nibbles.

    Args:
        codes: Stored ``uint8[n, >= bit_bytes]`` packed bits (padding bytes are ignored).
        lists: ``uint16[n]``, each row's list (from :func:`assign_partitions`).
        centroids: ``float32[nlist, dim]``, the lists' centroids.
        low: ``float32[dim]`` value of a dimension whose bit is 0.
        high: ``float32[dim]`` value of a dimension whose bit is 1.
        metric: ``"ip"`` (scores ``q . x_hat``) or ``"l2"`` (scores ``-||q - x_hat||^2``).
    """

    def __init__(
        self,
        codes: StoredCodes,
        lists: npt.NDArray[np.integer[Any]],
        centroids: npt.NDArray[np.float32],
        low: npt.NDArray[np.float32],
        high: npt.NDArray[np.float32],
        metric: str,
    ) -> None:
        order, fine = nibble_centroids(low, high)
        super().__init__(codes, lists, centroids, fine, metric, order)
