"""FAISS's SIMD fast-scan kernel (4-bit PQ, ``IndexPQFastScan``) over codes the store keeps.

Two users. **4-bit product quantization** (``ProductQuantizer(nbits=4)``): the codes are FAISS's
own 4-bit PQ codes (sub-code ``2j`` in the low nibble of byte ``j``), so the quantizer's
codebooks are the index's centroids. **Binary codes**: a binary code is read as a
product-quantization code of 4-bit sub-codes: every nibble of a code
byte holds the bits of 4 dimensions, and its 16 possible values reconstruct to the 16 corners
``low_ + bits * (high_ - low_)`` of those dimensions. Setting those corners as the centroids of a
FAISS ``IndexPQFastScan`` (4-bit PQ, lookup tables held in SIMD registers) makes FAISS compute
``q . x_hat`` (or ``||q - x_hat||^2``) for every row: the binary quantizer's asymmetric score, over
all rows, in one pass. Measured at 1M rows x 384 dims, one thread: 5-6 ms for the top 1,280,
against 8.5 ms for the FAISS Hamming scan that only selects 10,240 candidates for the re-rank.

The fast-scan layout interleaves 32 codes per block (``langchain_vq.code_blocks``). FAISS keeps
it in RAM (the code bytes per row), copied once per stored code array and kept while that array
lives (see :class:`FastScanCache`); segments of fast-scan stores keep their codes on disk in that
layout, so the copy needs no repacking. FAISS quantizes each query's lookup tables to 8 bits, so the
scores are estimates within about 1e-3 of the exact asymmetric score for unit vectors: good for
choosing candidates, which the engine then rescores with the float vectors. When the kernel
leaves places empty (it can when ``k`` is near the number of rows and scores tie), callers fall
back to an exact scoring of the codes.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import faiss
import numpy as np

from langchain_vq.code_blocks import BLOCK_ROWS, StoredCodes
from langchain_vq.topk import top_k

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt

#: ``float32[16, 4]``: bit ``i`` of a nibble value (most significant first, as ``np.packbits``).
_NIBBLE_BITS = ((np.arange(16)[:, None] >> (3 - np.arange(4))[None, :]) & 1).astype(np.float32)


class FastScanIndex(Protocol):
    """What :class:`FastScanCache` keeps: an index searched by float queries."""

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows per query by estimated similarity, best first (row -1: empty place)."""
        ...


def pq4_fast_scan_index(
    centroids: npt.NDArray[np.float32], codes: StoredCodes, code_bytes: int, metric: str
) -> Any:
    """A FAISS ``IndexPQFastScan`` holding ``codes`` in its 32-row blocks.

    The block layout is copied in as it is (blocked stored codes) or packed by numpy
    (``code_blocks.pack_blocks``, FAISS's own layout byte for byte, with less CPU than FAISS's
    ``IndexPQ`` copy and repacking: 94 against 128 ms per 1M rows, ``measure_code_blocks.py``).

    Args:
        centroids: ``float32[n_sub, 16, dsub]`` codebooks of the 4-bit sub-codes.
        codes: Stored codes whose first ``code_bytes`` bytes of a row are FAISS 4-bit PQ codes;
            further bytes (padding) are ignored.
        code_bytes: ``ceil(n_sub / 2)``, the bytes that hold sub-codes.
        metric: ``"ip"`` or ``"l2"``.
    """
    n_sub, _, dsub = centroids.shape
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    index = faiss.IndexPQFastScan(n_sub * dsub, n_sub, 4, faiss_metric, BLOCK_ROWS)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    size = -(-codes.shape[0] // BLOCK_ROWS) * BLOCK_ROWS * code_bytes
    index.codes.resize(size)
    if size:  # straight into FAISS's buffer: blocked codes are copied once, with no temporary
        codes.blocks(code_bytes, out=faiss.rev_swig_ptr(index.codes.get(), size))
    rows = codes.shape[0]
    index.ntotal = rows
    index.ntotal2 = -(-rows // BLOCK_ROWS) * BLOCK_ROWS  # type: ignore[attr-defined]  # not in the stubs
    return index


class PQFastScan:
    """A fast-scan index over 4-bit PQ codes (``ProductQuantizer(nbits=4)``'s stored codes).

    Args:
        centroids: ``float32[m, 16, dsub]`` codebooks; queries are zero-padded to ``m * dsub``.
        codes: ``uint8[n, ceil(m / 2)]`` stored codes.
        metric: ``"ip"`` (scores ``q . x_hat``) or ``"l2"`` (scores ``-||q - x_hat||^2``).
    """

    def __init__(self, centroids: npt.NDArray[np.float32], codes: StoredCodes, metric: str) -> None:
        self.width = centroids.shape[0] * centroids.shape[2]
        self.metric = metric
        self._index: Any = pq4_fast_scan_index(centroids, codes, (centroids.shape[0] + 1) // 2, metric)

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows (``k`` at most the rows indexed) per query by estimated score, best first."""
        if queries.shape[1] != self.width:
            padded = np.zeros((queries.shape[0], self.width), np.float32)
            padded[:, : queries.shape[1]] = queries
            queries = padded
        dist, labels = self._index.search(np.ascontiguousarray(queries, np.float32), k)
        return (dist if self.metric == "ip" else -dist), labels


def nibble_order(bit_bytes: int) -> npt.NDArray[np.intp]:
    """Dimension order that makes FAISS's sub-vectors match the nibbles of packed code bytes.

    FAISS reads sub-code ``2j`` from the low nibble of byte ``j`` and ``2j + 1`` from the high
    nibble; ``np.packbits`` puts dimensions ``8j..8j+3`` in the high nibble and ``8j+4..8j+7`` in
    the low one. Queries and centroids are laid out in this order.
    """
    starts = 8 * np.arange(bit_bytes)[:, None]  # [bit_bytes, 1]
    return (starts + np.array([4, 5, 6, 7, 0, 1, 2, 3])).ravel()  # [8 * bit_bytes]


def nibble_centroids(
    low: npt.NDArray[np.float32], high: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """The dimension order of :func:`nibble_order` and the 4-bit codebooks of packed bit codes.

    Returns ``(order, centroids)``: queries are zero-padded to ``8 * bit_bytes`` dimensions and
    read in ``order``; ``centroids`` is ``float32[2 * bit_bytes, 16, 4]``, the 16 corners
    ``low + bits * (high - low)`` of each nibble's 4 dimensions (padding bits weigh nothing).
    """
    bit_bytes = (low.shape[0] + 7) // 8
    order = nibble_order(bit_bytes)
    width = 8 * bit_bytes  # dimensions covered by the packed bits, padding included
    low_padded = np.zeros(width, np.float32)  # padding bits are always 0 and weigh nothing
    high_padded = np.zeros(width, np.float32)
    low_padded[: low.shape[0]], high_padded[: high.shape[0]] = low, high
    low_n = low_padded[order].reshape(-1, 1, 4)  # [2 * bit_bytes, 1, 4]
    step_n = (high_padded - low_padded)[order].reshape(-1, 1, 4)
    return order, low_n + _NIBBLE_BITS[None] * step_n  # [2 * bit_bytes, 16, 4]


def nibble_queries(queries: npt.NDArray[np.float32], order: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
    """Queries zero-padded to ``len(order)`` dimensions and laid out in ``order`` (C-contiguous)."""
    padded = np.zeros((queries.shape[0], order.size), np.float32)
    padded[:, : queries.shape[1]] = queries
    return np.ascontiguousarray(padded[:, order])


class NibbleFastScan:
    """A FAISS fast-scan index over packed bit codes whose bits reconstruct to ``low``/``high``.

    Args:
        codes: Stored ``uint8[n, >= bit_bytes]`` packed bits; bytes past ``bit_bytes`` (padding)
            are ignored.
        low: ``float32[dim]`` value of a dimension whose bit is 0.
        high: ``float32[dim]`` value of a dimension whose bit is 1.
        metric: ``"ip"`` (scores ``q . x_hat``) or ``"l2"`` (scores ``-||q - x_hat||^2``).
    """

    def __init__(
        self,
        codes: StoredCodes,
        low: npt.NDArray[np.float32],
        high: npt.NDArray[np.float32],
        metric: str,
    ) -> None:
        self.dim = low.shape[0]
        self.bit_bytes = (self.dim + 7) // 8
        self.metric = metric
        self._order, centroids = nibble_centroids(low, high)
        self._index: Any = pq4_fast_scan_index(centroids, codes, self.bit_bytes, metric)

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows (``k`` at most the rows indexed) per query by estimated score, best first."""
        dist, labels = self._index.search(nibble_queries(queries, self._order), k)
        return (dist if self.metric == "ip" else -dist), labels


def fast_scan_top_k(
    index: FastScanIndex,
    queries: npt.NDArray[np.float32],
    k: int,
    exact: Callable[[], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top ``k`` by the fast-scan kernel, ties ordered by row; ``exact()`` when it leaves gaps.

    FAISS's fast scan can leave result places empty when ``k`` is near the number of rows and
    scores tie (binary: k = n = 40; PQ with 2 sub-codes: k = n = 100); the caller's exact path
    then scores every row.
    """
    scores, rows = fast_scan_candidates(index, queries, k, exact)
    return top_k(scores, k, rows)


def fast_scan_candidates(
    index: FastScanIndex,
    queries: npt.NDArray[np.float32],
    k: int,
    exact: Callable[[], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The same ``k`` rows as :func:`fast_scan_top_k`, in the kernel's order (for callers that re-rank).

    Pooling several arrays' candidates re-ranks them anyway, so their own ordering is skipped.
    """
    scores, rows = index.search(queries, k)
    if (rows < 0).any():
        return exact()
    return scores, rows


#: The kind of index a :class:`FastScanCache` keeps.
IndexT = TypeVar("IndexT")


class FastScanCache(Generic[IndexT]):
    """Fast-scan indexes of code arrays that are searched again and again, by array identity.

    A store's segments keep one code array each for their whole life, so the index is built on
    the first search of a segment and reused until the array is garbage collected (then the
    entry goes too). Entries are keyed by the identity of the stored array
    (``StoredCodes.stored``) and hold a weak reference to it, so a new array can never be served
    an old array's index.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], IndexT]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, codes: StoredCodes, build: Callable[[StoredCodes], IndexT]) -> IndexT:
        """The index of ``codes``, built with ``build(codes)`` on first use."""
        array = codes.stored
        key = id(array)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is array:
                return entry[1]
        index = build(codes)  # outside the lock: a copy (blocked codes) or a packing of 1M rows
        entries = self._entries

        def forget(ref: weakref.ref[Any]) -> None:
            # No lock: a collection may run this while the same thread holds it. Dict reads and
            # pops are atomic; the identity check leaves a newer entry for a reused id alone.
            entry = entries.get(key)
            if entry is not None and entry[0] is ref:
                entries.pop(key, None)

        with self._lock:
            self._entries[key] = (weakref.ref(array, forget), index)
        return index

    def clear(self) -> None:
        """Drop every index (the quantizer's state changed, so their centroids are stale)."""
        with self._lock:
            self._entries.clear()
