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
from langchain_vq.storage.advice import huge_pages
from langchain_vq.topk import top_k

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

#: ``float32[16, 4]``: bit ``i`` of a nibble value (most significant first, as ``np.packbits``).
_NIBBLE_BITS = ((np.arange(16)[:, None] >> (3 - np.arange(4))[None, :]) & 1).astype(np.float32)


#: Up to this ``k`` FAISS's fast scan keeps its best rows in a heap, which among rows tied at the
#: k-th place may keep any (measured: 15-37 of 200 queries at k = 5-20 kept a higher row); above
#: it, a reservoir keeps the lowest rows, as the quantizers promise ("ties are ordered by row").
_HEAP_MAX_K = 20


class FastScanIndex(Protocol):
    """What :class:`FastScanCache` keeps: an index searched by float queries."""

    #: Rows the kernel scans.
    rows: int

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows per query by estimated similarity, best first (row -1: empty place)."""
        ...


def padded_rows(rows: int) -> int:
    """``rows`` rounded up to whole 32-row blocks: the rows a code array takes in the kernel's layout."""
    return -(-rows // BLOCK_ROWS) * BLOCK_ROWS


def pq4_fast_scan_index(
    centroids: npt.NDArray[np.float32],
    codes: StoredCodes | Sequence[StoredCodes],
    code_bytes: int,
    metric: str,
) -> Any:
    """A FAISS ``IndexPQFastScan`` holding ``codes`` in its 32-row blocks.

    The block layout is copied in as it is (blocked stored codes) or packed by numpy
    (``code_blocks.pack_blocks``, FAISS's own layout byte for byte, with less CPU than FAISS's
    ``IndexPQ`` copy and repacking: 94 against 128 ms per 1M rows, ``measure_code_blocks.py``).
    Several arrays (:class:`JoinedFastScan`) are laid end to end, each padded to whole blocks:
    index row ``starts[i] + r`` is row ``r`` of array ``i``, and the zero rows that pad an
    array's last block are index rows too (their callers drop them).

    Args:
        centroids: ``float32[n_sub, 16, dsub]`` codebooks of the 4-bit sub-codes.
        codes: Stored codes (or several arrays of them) whose first ``code_bytes`` bytes of a
            row are FAISS 4-bit PQ codes; further bytes (padding) are ignored.
        code_bytes: ``ceil(n_sub / 2)``, the bytes that hold sub-codes.
        metric: ``"ip"`` or ``"l2"``.
    """
    parts = [codes] if isinstance(codes, StoredCodes) else list(codes)
    n_sub, _, dsub = centroids.shape
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    index = faiss.IndexPQFastScan(n_sub * dsub, n_sub, 4, faiss_metric, BLOCK_ROWS)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    padded = sum(padded_rows(part.shape[0]) for part in parts)
    size = padded * code_bytes
    index.codes.resize(size)
    if size:  # straight into FAISS's buffer: blocked codes are copied once, with no temporary
        buffer = faiss.rev_swig_ptr(index.codes.get(), size)
        huge_pages(buffer)  # before the first write: most of the copy's time is page faults
        start = 0
        for part in parts:
            stop = start + padded_rows(part.shape[0]) * code_bytes
            if stop > start:
                part.blocks(code_bytes, out=buffer[start:stop])
            start = stop
    # FAISS skips the rows past ntotal in the last block; padding between arrays is scanned.
    index.ntotal = padded - padded_rows(parts[-1].shape[0]) + parts[-1].shape[0] if parts else 0
    index.ntotal2 = padded  # type: ignore[attr-defined]  # not in the stubs
    return index


class PQFastScan:
    """A fast-scan index over 4-bit PQ codes (``ProductQuantizer(nbits=4)``'s stored codes).

    Args:
        centroids: ``float32[m, 16, dsub]`` codebooks; queries are zero-padded to ``m * dsub``.
        codes: ``uint8[n, ceil(m / 2)]`` stored codes.
        metric: ``"ip"`` (scores ``q . x_hat``) or ``"l2"`` (scores ``-||q - x_hat||^2``).
    """

    def __init__(
        self, centroids: npt.NDArray[np.float32], codes: StoredCodes | Sequence[StoredCodes], metric: str
    ) -> None:
        self.width = centroids.shape[0] * centroids.shape[2]
        self.metric = metric
        self._index: Any = pq4_fast_scan_index(centroids, codes, (centroids.shape[0] + 1) // 2, metric)
        self.rows = int(self._index.ntotal)

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
        codes: StoredCodes | Sequence[StoredCodes],
        low: npt.NDArray[np.float32],
        high: npt.NDArray[np.float32],
        metric: str,
    ) -> None:
        self.dim = low.shape[0]
        self.bit_bytes = (self.dim + 7) // 8
        self.metric = metric
        self._order, centroids = nibble_centroids(low, high)
        self._index: Any = pq4_fast_scan_index(centroids, codes, self.bit_bytes, metric)
        self.rows = int(self._index.ntotal)

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
    A ``k`` the kernel would keep in its heap is searched for more rows and cut by score, then
    row, so tied rows at the k-th place are chosen as a larger ``k`` (or a joined index) would.
    """
    fetch = min(max(k, _HEAP_MAX_K + 1), index.rows)
    scores, rows = index.search(queries, fetch)
    if (rows < 0).any():
        return exact()
    return top_k(scores, k, rows) if fetch > k else (scores, rows)


class JoinedFastScan:
    """One fast-scan index over several stored code arrays (a store's segments), with a row map.

    A store built by several adds kept one index per segment, so each query paid one kernel
    call per segment, each with its own lookup tables, result heap and Python work, over
    mostly cold caches. Laid end to end in one index they take one call, as one segment of all
    their rows would. Each array's last block is padded to 32 rows with zero codes; the kernel
    scores those padding rows like any other, so a search fetches that many more candidates
    and drops them: padding is never returned and never takes a real row's place.

    Args:
        arrays: The stored codes, in the order their candidates are numbered (array index).
        build: Makes the kernel's index over ``arrays`` (see :func:`pq4_fast_scan_index`).
        padded: Whether ``build`` lays each array out in whole blocks (a partitioned index pads
            its lists instead, so its arrays follow each other row after row).
    """

    def __init__(
        self,
        arrays: Sequence[StoredCodes],
        build: Callable[[Sequence[StoredCodes]], FastScanIndex],
        *,
        padded: bool = True,
    ) -> None:
        sizes = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        laid_out = -(-sizes // BLOCK_ROWS) * BLOCK_ROWS if padded else sizes
        #: Index row of each array's first row.
        self.starts = np.concatenate([[0], np.cumsum(laid_out)[:-1]]).astype(np.int64)
        self.sizes = sizes
        #: Rows the index scans: every array's, and the padding between arrays.
        self.rows = int(self.starts[-1] + sizes[-1])
        self.padding = self.rows - int(sizes.sum())
        self.index = build(arrays)

    def candidates(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        masks: Sequence[npt.NDArray[np.bool_] | None],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """Candidates holding the best ``k`` kept rows: ``(scores, array indices, rows)``, any order.

        Rows a mask hides and padding rows have score ``-inf``. Masks that hide few rows (up to
        ``k``, deletions) are covered by fetching that many more; masks that hide more (a dense
        filter) by fetching the expected need with a 1.5x margin, as a segment's own scan does
        (``search.engine._code_candidates``). ``None`` when a query is left short of ``k`` kept
        rows, or the kernel left places empty (see :func:`fast_scan_top_k`): the caller then
        searches the arrays one by one.
        """
        hidden = sum(m.size - int(np.count_nonzero(m)) for m in masks if m is not None)
        real = self.rows - self.padding
        extra = hidden if hidden <= k else min(hidden, int(1.5 * k * real / max(real - hidden, 1)))
        fetch = min(max(k + extra + self.padding, _HEAP_MAX_K + 1), self.rows)
        scores, ids = self.index.search(queries, fetch)
        if (ids < 0).any():
            return None
        arrays = np.searchsorted(self.starts, ids, side="right") - 1
        rows = ids - self.starts[arrays]
        keep = rows < self.sizes[arrays]  # False: a padding row
        for index, mask in enumerate(masks):
            if mask is not None:
                flat_keep, flat_arrays, flat_rows = keep.reshape(-1), arrays.reshape(-1), rows.reshape(-1)
                at = np.flatnonzero(flat_arrays == index)
                at = at[flat_keep[at]]
                flat_keep[at] = mask[flat_rows[at]]
        if hidden > k and bool((keep.sum(axis=1) < min(k, real - hidden)).any()):
            return None  # the expected over-fetch fell short for some query
        scores = np.where(keep, scores, np.float32(-np.inf)).astype(np.float32, copy=False)
        return scores, arrays, rows


#: The kind of index a :class:`FastScanCache` keeps.
IndexT = TypeVar("IndexT")


class FastScanCache(Generic[IndexT]):
    """Fast-scan indexes of code arrays that are searched again and again, by array identity.

    A store's segments keep one code array each for their whole life, so the index is built on
    the first search of a segment and reused until the array is garbage collected (then the
    entry goes too). Entries are keyed by the identity of the stored arrays
    (``StoredCodes.stored``) and hold weak references to them, so a new array can never be
    served an old array's index.

    Joined indexes (:class:`JoinedFastScan`, one over several arrays) are kept the same way,
    keyed by the tuple of arrays, but at most ``joined_capacity`` of them, the most recently
    used: each holds a copy of all its arrays' codes, and after an add the previous set of
    segments stays alive (the unchanged segments are shared), so without a bound every add
    would leave one more copy of the store's codes in RAM.
    """

    def __init__(self, joined_capacity: int = 1) -> None:
        self._entries: dict[tuple[int, ...], tuple[tuple[weakref.ref[Any], ...], Any]] = {}
        self._joined: list[tuple[int, ...]] = []  # keys of joined entries, least recently used first
        self._joined_capacity = joined_capacity
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, codes: StoredCodes, build: Callable[[StoredCodes], IndexT]) -> IndexT:
        """The index of ``codes``, built with ``build(codes)`` on first use."""
        index: IndexT = self._get((codes,), lambda: build(codes), joined=False)
        return index

    def get_joined(
        self,
        arrays: Sequence[StoredCodes],
        build: Callable[[Sequence[StoredCodes]], FastScanIndex],
        *,
        padded: bool = True,
    ) -> JoinedFastScan:
        """The joined index of ``arrays`` (in this order), built on first use (``padded``: as there)."""
        joined: JoinedFastScan = self._get(
            tuple(arrays), lambda: JoinedFastScan(arrays, build, padded=padded), joined=True
        )
        return joined

    def _get(self, parts: tuple[StoredCodes, ...], build: Callable[[], Any], *, joined: bool) -> Any:
        stored = [part.stored for part in parts]
        key = tuple(id(array) for array in stored)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and all(ref() is array for ref, array in zip(entry[0], stored, strict=True)):
                if joined and key in self._joined:  # most recently used last
                    self._joined.remove(key)
                    self._joined.append(key)
                return entry[1]
        index = build()  # outside the lock: a copy (blocked codes) or a packing of 1M rows
        entries = self._entries

        def forget(ref: weakref.ref[Any]) -> None:
            # No lock: a collection may run this while the same thread holds it. Dict reads and
            # pops are atomic; the identity check leaves a newer entry for a reused id alone.
            entry = entries.get(key)
            if entry is not None and any(r is ref for r in entry[0]):
                entries.pop(key, None)

        refs = tuple(weakref.ref(array, forget) for array in stored)
        with self._lock:
            if joined:
                if key in self._joined:
                    self._joined.remove(key)
                self._joined = [k for k in self._joined if k in self._entries]  # drop forgotten keys
                while len(self._joined) >= self._joined_capacity:
                    self._entries.pop(self._joined.pop(0), None)
                self._joined.append(key)
            self._entries[key] = (refs, index)
        return index

    def clear(self) -> None:
        """Drop every index (the quantizer's state changed, so their centroids are stale)."""
        with self._lock:
            self._entries.clear()
            self._joined.clear()
