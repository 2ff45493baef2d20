"""The quantizer side of partitioned stores: option checks, stored lists' checks, and the probe.

Shared by the quantizers with a ``partitions`` option (the kernels and k-means are in ``_ivf``),
so their options read and fail alike and their searches fall back alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization._fast_scan import _HEAP_MAX_K
from langchain_vq.quantization._ivf import MAX_PARTITIONS, default_nprobe
from langchain_vq.topk import top_k
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import numpy.typing as npt

    from langchain_vq.code_blocks import StoredCodes
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
