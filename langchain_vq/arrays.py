"""Arrow <-> numpy conversions for the search path that never import pandas.

pyarrow probes for pandas whenever it converts Python or numpy objects (``pa.array``,
``pa.scalar``) or turns an array into numpy with ``to_numpy(zero_copy_only=False)``. The first
probe imports pandas: 0.3 s on an idle machine, over a second on a busy one, paid by a process's
first filtered query. These helpers go through the arrays' buffers instead.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

_EPOCH = dt.date(1970, 1, 1)


def one_array(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A chunked array as one array (zero-copy for one chunk)."""
    if isinstance(array, pa.ChunkedArray):
        return array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    return array


def bool_mask(array: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    """A boolean Arrow array as a numpy mask; nulls count as False."""
    array = one_array(array)
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=bool)
    validity, values = array.buffers()
    mask = _bits(values, array.offset, n)
    if array.null_count:
        mask &= _bits(validity, array.offset, n)
    return mask


def _bits(buffer: pa.Buffer, offset: int, n: int) -> npt.NDArray[np.bool_]:
    """Bits ``offset .. offset + n`` of an Arrow bitmap (least significant bit first)."""
    packed = np.frombuffer(buffer, dtype=np.uint8)
    return np.unpackbits(packed, bitorder="little", count=offset + n)[offset:].astype(bool)


def int_values(array: pa.Array | pa.ChunkedArray, null: int = 0) -> npt.NDArray[np.int64]:
    """The values of an integer Arrow array as int64, with ``null`` where it is null."""
    array = one_array(array)
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dtype = np.dtype(array.type.to_pandas_dtype())
    values = np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset : array.offset + n].astype(np.int64)
    if array.null_count:
        values[~_bits(array.buffers()[0], array.offset, n)] = null
    return values


def bool_array(mask: npt.NDArray[np.bool_]) -> pa.Array:
    """A boolean Arrow array of a numpy mask (e.g. for ``Table.filter``)."""
    mask = np.asarray(mask, dtype=bool)
    bits = np.packbits(mask, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), mask.size, [None, pa.py_buffer(bits)])


def int_array(values: npt.NDArray[np.int64]) -> pa.Array:
    """An int64 Arrow array sharing the memory of ``values``."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), values.size, [None, pa.py_buffer(values)])


def scalar(value: bool | float | str | dt.date, arrow_type: pa.DataType) -> pa.Scalar:
    """``pa.scalar(value, arrow_type)`` for the filter value kinds (see :func:`array_of`)."""
    return array_of([value], arrow_type)[0]


def int_scalar(value: int, arrow_type: pa.DataType) -> pa.Scalar:
    """An integer scalar of ``arrow_type`` (int8 .. uint64; ``value`` must fit), from numpy."""
    signed = pa.types.is_signed_integer(arrow_type)
    values = np.array([value], dtype=f"{'int' if signed else 'uint'}{arrow_type.bit_width}")
    return pa.Array.from_buffers(arrow_type, 1, [None, pa.py_buffer(values)])[0]


def array_of(values: Sequence[bool | float | str | dt.date | None], arrow_type: pa.DataType) -> pa.Array:
    """``pa.array(values, arrow_type)``, None as null, built from numpy buffers.

    Kinds: bool, float64, string, date32, and timestamp (us; with a zone the values are aware).
    """
    n = len(values)
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    nulls = n - int(valid.sum())
    validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    if pa.types.is_string(arrow_type):
        encoded = [b"" if v is None else str(v).encode("utf-8") for v in values]
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
        return pa.Array.from_buffers(arrow_type, n, buffers, null_count=nulls)
    data: npt.NDArray[Any]
    if pa.types.is_boolean(arrow_type):
        bits = np.fromiter((bool(v) for v in values), dtype=bool, count=n)
        data = np.packbits(bits, bitorder="little")
    elif pa.types.is_floating(arrow_type):
        data = np.fromiter((0.0 if v is None else float(v) for v in values), dtype=np.float64, count=n)  # type: ignore[arg-type]
    elif pa.types.is_date32(arrow_type):
        data = np.fromiter((0 if v is None else _days(v) for v in values), dtype=np.int32, count=n)  # type: ignore[arg-type]
    elif pa.types.is_timestamp(arrow_type):
        data = np.fromiter((0 if v is None else _micros(v) for v in values), dtype=np.int64, count=n)  # type: ignore[arg-type]
    else:
        msg = f"No buffer layout for {arrow_type}"
        raise TypeError(msg)
    return pa.Array.from_buffers(arrow_type, n, [validity, pa.py_buffer(data)], null_count=nulls)


def _days(value: dt.date) -> int:
    """Days since the epoch."""
    return (value - _EPOCH).days


def _micros(value: dt.datetime) -> int:
    """Microseconds since the epoch: UTC for an aware value, wall-clock for a naive one."""
    if value.utcoffset() is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    delta = value - dt.datetime(1970, 1, 1)  # noqa: DTZ001 - naive arithmetic on purpose
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
