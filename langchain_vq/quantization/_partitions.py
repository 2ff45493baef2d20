"""The quantizer side of partitioned stores: the ``partitions``/``nprobe`` options and stored lists' checks.

Shared by the quantizers with a ``partitions`` option (binary and 4-bit PQ; the kernels, k-means
and the probe are in ``_ivf``), so their options read and fail alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization._ivf import MAX_PARTITIONS
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from langchain_vq.code_blocks import StoredCodes


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
