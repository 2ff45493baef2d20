"""Reordering the rows of a table (``Table.take``) without copying its vectors and codes twice.

Arrow's take of a chunked column joins the chunks first and then takes from the join: for the
vectors of a merge (the parts' tables concatenated) that is two fresh copies of every row, and
fresh pages are what a large copy costs (zeroed by the kernel). Four 100k-row parts of float16
vectors: 614 MB allocated for a 307 MB result. Here fixed-width columns (vectors, codes) are
gathered by numpy straight from each chunk into one result; other columns are small and go
through Arrow's take.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from langchain_vq.arrays import int_array

if TYPE_CHECKING:
    import numpy.typing as npt

#: Rows of several chunks gathered one run (rows in a row from one chunk) at a time when the
#: runs hold at least this many rows on average; else through a block of this many rows.
_ROWS_PER_RUN = 64
_GATHER_BLOCK_ROWS = 1024


def take_rows(table: pa.Table, rows: npt.NDArray[np.integer[Any]]) -> pa.Table:
    """``table.take(rows)``: the same table (schema, values, row order), each column one chunk.

    Raises:
        IndexError: a row is outside the table (as Arrow's take does).
    """
    rows64: npt.NDArray[np.int64] = np.ascontiguousarray(rows, dtype=np.int64)
    low, high = (int(rows64.min()), int(rows64.max())) if rows64.size else (0, -1)
    if low < 0 or high >= table.num_rows:
        last = table.num_rows - 1
        msg = f"Rows to take run from {low} to {high}; a table of {table.num_rows} rows has rows 0 to {last}."
        raise IndexError(msg)
    indices: pa.Array | None = None
    columns = []
    for column in table.columns:
        taken = _gathered(column, rows64)
        if taken is None:
            indices = int_array(rows64) if indices is None else indices
            taken = column.take(indices)
        columns.append(taken)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _row_width(kind: pa.DataType) -> int | None:
    """Bytes per row of a fixed-size binary, or of a fixed-size list of fixed-width numbers; else None."""
    if pa.types.is_fixed_size_binary(kind):
        return int(kind.byte_width)
    if pa.types.is_fixed_size_list(kind):
        value = kind.value_type
        if pa.types.is_integer(value) or pa.types.is_floating(value):
            return int(kind.list_size * value.bit_width // 8)
    return None


def _row_bytes(chunk: pa.Array, width: int) -> npt.NDArray[np.uint8] | None:
    """A chunk's rows as a zero-copy ``uint8[rows, width]`` view, or None if it has nulls."""
    start = chunk.offset * width
    data = chunk
    if pa.types.is_fixed_size_list(chunk.type):
        data = chunk.values  # the whole child: its own offset, not the list's
        start += data.offset * (width // chunk.type.list_size)
    if chunk.null_count or data.null_count:
        return None
    buffer = data.buffers()[1]
    if buffer is None or len(chunk) == 0:
        return np.empty((0, width), np.uint8)
    flat = np.frombuffer(buffer, dtype=np.uint8)
    return flat[start : start + len(chunk) * width].reshape(-1, width)


def _gathered(column: pa.ChunkedArray, rows: npt.NDArray[np.int64]) -> pa.Array | None:
    """``column.take(rows)`` of a fixed-width column without nulls, gathered by numpy; else None."""
    width = _row_width(column.type)
    if not width or column.num_chunks == 0:
        return None
    found = [_row_bytes(chunk, width) for chunk in column.chunks]
    views = [view for view in found if view is not None]
    if len(views) < len(found):
        return None
    # From Arrow's pool, as Arrow's own take: it reuses memory freed by earlier tables, where
    # a fresh numpy array of this size is fresh pages, each faulted in and zeroed by the kernel.
    buffer = pa.allocate_buffer(rows.size * width)
    out = np.frombuffer(buffer, np.uint8).reshape(rows.size, width)
    # mode="clip": the rows are checked; numpy's default ("raise") gathers into a temporary
    # of the whole result and copies it to ``out`` (a second fresh 307 MB in the merge above).
    if len(views) == 1:
        np.take(views[0], rows, axis=0, out=out, mode="clip")
    elif rows.size:
        _gather_chunks(views, rows, out)
    return _array_of(column.type, buffer, rows.size)


def _gather_chunks(
    views: list[npt.NDArray[np.uint8]], rows: npt.NDArray[np.int64], out: npt.NDArray[np.uint8]
) -> None:
    """``out[i] = row rows[i]`` of the chunks ``views`` laid end to end, without joining them.

    Rows grouped by list come from the parts in runs (a list's rows of one part, then of the
    next): each run is one ``np.take`` into its place. Rows in many short runs go a chunk at a
    time through a small reused block instead.
    """
    sizes = np.array([view.shape[0] for view in views], np.int64)
    ends = np.cumsum(sizes)
    chunk_of = np.searchsorted(ends, rows, side="right")
    local = rows - (ends - sizes)[chunk_of]
    cuts = np.flatnonzero(chunk_of[1:] != chunk_of[:-1]) + 1
    if cuts.size <= rows.size // _ROWS_PER_RUN:
        bounds = [0, *cuts.tolist(), rows.size]
        for lo, hi in itertools.pairwise(bounds):
            np.take(views[chunk_of[lo]], local[lo:hi], axis=0, out=out[lo:hi], mode="clip")
        return
    block = np.empty((min(rows.size, _GATHER_BLOCK_ROWS), out.shape[1]), np.uint8)
    for k, view in enumerate(views):
        places = np.flatnonzero(chunk_of == k)
        for lo in range(0, places.size, _GATHER_BLOCK_ROWS):
            picked = places[lo : lo + _GATHER_BLOCK_ROWS]
            out[picked] = np.take(view, local[picked], axis=0, out=block[: picked.size], mode="clip")


def _array_of(kind: pa.DataType, buffer: pa.Buffer, rows: int) -> pa.Array:
    """``rows`` rows of bytes in ``buffer`` as an Arrow array of the fixed-width type ``kind``."""
    if pa.types.is_fixed_size_binary(kind):
        return pa.FixedSizeBinaryArray.from_buffers(kind, rows, [None, buffer])
    values = pa.Array.from_buffers(kind.value_type, rows * kind.list_size, [None, buffer])
    return pa.FixedSizeListArray.from_arrays(values, type=kind)
