"""The quantizer side of partitioned stores: option checks, stored lists' checks, and the probe.

Shared by the quantizers with a ``partitions`` option (the kernels and k-means are in ``_ivf``),
so their options read and fail alike and their searches fall back alike. Also
:class:`JoinedLists`: one IVF index over several segments' codes (their lists share the
quantizer's centroids), as ``_fast_scan.JoinedFastScan`` joins full scans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.code_blocks import StoredCodes
from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization._fast_scan import _HEAP_MAX_K, padded_rows
from langchain_vq.quantization._ivf import MAX_PARTITIONS, default_nprobe
from langchain_vq.topk import top_k
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

    from langchain_vq.quantization._ivf import IVFFastScan


def check_partition_options(partitions: object, nprobe: object) -> tuple[int, int | None]:
    """``(partitions, nprobe)`` checked; ``nprobe`` None means "choose it at training".

    Raises:
        InvalidInputError: ``partitions`` is not an integer in ``[0, 65536]``, ``nprobe`` is given
            without partitions, or is not in ``[1, partitions]``.
    """
    count = check_int(
        partitions,
        "partitions",
        minimum=0,
        maximum=MAX_PARTITIONS,
        fix="Use 0 to scan every code, or about sqrt(rows), e.g. 1024 for 1M rows.",
    )
    if nprobe is None:
        return count, None
    if not count:
        msg = f"nprobe={nprobe!r} was given without partitions; set partitions > 0 or drop nprobe."
        raise InvalidInputError(msg)
    return count, check_int(nprobe, "nprobe", maximum=count, fix=f"Probe between 1 and all {count} lists.")


def stored_lists(codes: StoredCodes, partitions: int) -> npt.NDArray[np.integer[Any]]:
    """``codes.lists``, checked to hold one list in ``[0, partitions)`` per code row.

    Raises:
        InvalidInputError: The lists have another length or name a list past the last.
    """
    lists = codes.lists
    assert lists is not None  # noqa: S101 - only codes with lists are searched by partition
    if lists.shape != (codes.shape[0],) or (lists.size and int(lists.max()) >= partitions):
        top = int(lists.max()) if lists.size else None
        msg = (
            f"Stored lists are {lists.dtype}{list(lists.shape)} with largest {top}, expected "
            f"one list in [0, {partitions}) per code row ({codes.shape[0]}). Assign rows with "
            "this quantizer's assign()."
        )
        raise InvalidInputError(msg)
    return lists


def probe(
    index: IVFFastScan,
    queries: npt.NDArray[np.float32],
    k: int,
    nprobe: int | None,
    partitions: int,
    exact: Callable[[], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Candidates from the ``nprobe`` best lists: the best ``k`` per query, any order.

    As :func:`~langchain_vq.quantization._fast_scan.fast_scan_candidates`, more than FAISS's heap
    size of rows are fetched and cut by score, then row, so rows tied at the k-th place are chosen
    as the full scan chooses them (with every list probed, the same rows). A query whose lists
    hold fewer than ``k`` rows is scanned again over every list (the full pass, same kernel; the
    other queries of the batch keep their lists); if even that leaves places empty (ties near
    ``k = n``), ``exact()`` scores every row.
    """
    nprobe = nprobe or default_nprobe(partitions)  # None only in a hand-made config
    fetch = max(k, _HEAP_MAX_K + 1)
    scores, rows = index.search(queries, fetch, nprobe)
    short = (rows >= 0).sum(axis=1) < k
    if short.any() and nprobe < partitions:
        scores[short], rows[short] = index.search(queries[short], fetch, partitions)
    if ((rows >= 0).sum(axis=1) < k).any():
        return exact()
    return top_k(scores, k, rows) if fetch > k else (scores, rows)


class JoinedLists:
    """One IVF fast scan over the codes and lists of several arrays, numbered as ``JoinedFastScan``.

    A store built by adds has several segments; scanned one by one, each pays its own coarse
    search, lookup tables and per-list overheads, and a small segment's lists hold a block or
    less each (200k rows in ten adds, four segments: 5.2 against 2.2 ms CPU per query compacted,
    ``nprobe`` 256 of 1024). All segments' lists share the quantizer's centroids, so one index
    with every segment's rows in their lists probes the same lists once. Its labels are mapped
    to :class:`~langchain_vq.quantization._fast_scan.JoinedFastScan`'s numbering (each array
    starts at a whole 32-row block), whose ``candidates`` then serves masks and pooling; the
    gaps are never returned, so they are not padding to drop.

    Args:
        arrays: Stored codes that all carry lists, in the order their candidates are numbered.
        build: Makes the IVF index of one array of codes with lists.
        nprobe: Lists probed per query, read at each search (a setting that may change).
    """

    def __init__(
        self,
        arrays: Sequence[StoredCodes],
        build: Callable[[StoredCodes], IVFFastScan],
        nprobe: Callable[[], int],
    ) -> None:
        sizes = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        padded = np.array([padded_rows(int(n)) for n in sizes], dtype=np.int64)
        self._shift = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64) - self._starts
        #: Rows in JoinedFastScan's numbering: every array's, and the gaps between them.
        self.rows = int(self._starts[-1] + self._shift[-1] + sizes[-1])
        lists = [a.lists for a in arrays]
        assert all(part is not None for part in lists)  # noqa: S101 - callers join arrays with lists
        codes = np.concatenate([a.row_major for a in arrays])
        self._index = build(StoredCodes(codes, lists=np.concatenate(lists)))  # type: ignore[arg-type]
        self._nprobe = nprobe

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows of the ``nprobe`` best lists per query, best first (row -1: empty place)."""
        scores, labels = self._index.search(queries, k, self._nprobe())
        arrays = np.searchsorted(self._starts, labels, side="right") - 1
        return scores, np.where(labels >= 0, labels + self._shift[arrays], -1)
