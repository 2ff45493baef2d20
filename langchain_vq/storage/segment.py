"""Segments: immutable batches of rows, as Arrow tables viewed zero-copy as numpy arrays.

A segment opened from disk is memory-mapped: opening reads only the Arrow footer, the float
vectors stay on disk until rescoring touches the few rows it needs.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from langchain_vq.arrays import bool_mask, int_array
from langchain_vq.code_blocks import BLOCKED, LAYOUT_KEY, StoredCodes, to_blocked
from langchain_vq.errors import CorruptStoreError
from langchain_vq.storage.advice import MADV_RANDOM, advise, all_resident, will_need_rows
from langchain_vq.storage.metadata import decode_metadata, decode_metadata_values, encode_metadata, narrowed
from langchain_vq.storage.rows import take_rows
from langchain_vq.storage.schema import (
    FALLBACK_METADATA,
    FALLBACK_TYPES,
    LIST_COLUMN,
    LIST_FIELD,
    METADATA_PREFIX,
    PARTITION_COLUMN,
    PARTITION_FIELD,
    SEGMENT_FORMAT_KEY,
    VECTOR_TYPES,
    precision_of,
    segment_schema,
    vector_field,
)

#: Columns that belong to the codes: dropped, kept and re-encoded with them.
_CODE_COLUMNS = ("codes", PARTITION_COLUMN, LIST_COLUMN)
#: The columns that give rows their lists: format 3's runs, or format 2's value per row.
_LIST_COLUMNS = (LIST_COLUMN, PARTITION_COLUMN)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import numpy.typing as npt

_T = TypeVar("_T")
_CHECKSUM_CHUNK = 1 << 24
#: Column buffers from this size on are written from the table's memory instead of copied.
_SHARED_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class Segment:
    """Rows of one segment: ids, texts, metadata, rescoring vectors (optional) and codes (optional)."""

    name: str
    table: pa.Table
    #: Derived read-only structures (e.g. parsed metadata columns), built once per segment.
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: The file the segment was read from (named in errors), None while only in memory.
    path: str | None = field(default=None, compare=False)

    @property
    def rows(self) -> int:
        """Number of rows, deleted ones included."""
        return self.table.num_rows

    @cached_property
    def ids(self) -> pa.Array:
        """The id column as one Arrow array."""
        return single_array(self.table.column("id"))

    @cached_property
    def vector_field(self) -> pa.Field | None:
        """The ``vector`` field (type and, for int8, its ranges), or None in a codes-only segment."""
        index = self.table.schema.get_field_index("vector")
        return None if index < 0 else self.table.schema.field(index)

    @cached_property
    def precision(self) -> str:
        """``"float32"``, ``"float16"``, ``"int8"`` or ``"none"``: how the vectors are stored."""
        return precision_of(self.vector_field)

    @property
    def has_vectors(self) -> bool:
        """Whether the segment keeps rescoring vectors (a codes-only segment does not)."""
        return self.vector_field is not None

    @cached_property
    def vectors(self) -> npt.NDArray[Any]:
        """Stored vectors ``[rows, dim]`` (float32, float16 or uint8 levels), a zero-copy view.

        Only float32 is usable as is; ``quantization.precision.float_rows`` reads any precision
        as float32. A codes-only segment has none (check ``has_vectors``).
        """
        if self.vector_field is None:
            msg = f"Segment {self.path or self.name} keeps no vectors (a codes-only store)."
            raise ValueError(msg)
        column = single_array(self.table.column("vector"))
        dim = column.type.list_size
        values = column.values  # np.frombuffer avoids to_numpy's pandas import
        dtype = np.dtype(VECTOR_TYPES[self.precision].to_pandas_dtype())
        flat = np.frombuffer(values.buffers()[1], dtype=dtype)[values.offset :]
        vectors = flat[column.offset * dim : (column.offset + len(column)) * dim].reshape(-1, dim)
        if "codes" in self.table.column_names:
            # Two-stage search reads a few scattered rows: no read-ahead around each one.
            advise(vectors, MADV_RANDOM)
        return vectors

    @cached_property
    def typed_metadata(self) -> tuple[dict[str, pa.Array], pa.Array] | None:
        """Format 2: the metadata columns by key, and the fallback column; None for format 1."""
        if SEGMENT_FORMAT_KEY not in (self.table.schema.metadata or {}):
            return None
        columns = {
            name[len(METADATA_PREFIX) :]: single_array(self.table.column(name))
            for name in self.table.column_names
            if name.startswith(METADATA_PREFIX)
        }
        return columns, single_array(self.table.column(FALLBACK_METADATA))

    def prefetch(self, rows: npt.NDArray[np.int64], *, probes: int = 8) -> bool:
        """Ask the kernel to read these rows' vectors now, together, before they are gathered.

        On a cold page cache each scattered row costs one disk read; issued one by one as page
        faults they queue behind each other, issued as ``WILLNEED`` hints they overlap. A few
        rows (``probes``) are probed with ``mincore`` first, so a warm cache costs no hints at
        all. Returns whether the probed rows were resident (no hint given).
        """
        if all_resident(self.vectors, rows, probes):
            return True
        will_need_rows(self.vectors, rows)
        return False

    @property
    def has_codes(self) -> bool:
        """Whether the rows are encoded (a segment written before training is not)."""
        return "codes" in self.table.column_names

    @cached_property
    def stored_codes(self) -> StoredCodes | None:
        """The codes as stored (a zero-copy view; row-major or blocked), or None if not encoded.

        Fast-scan stores keep them in the kernel's block layout (``langchain_vq.code_blocks``),
        which the search reads as it is; :attr:`codes` gives them row by row.
        """
        index = self.table.schema.get_field_index("codes")
        if index < 0:
            return None
        column = single_array(self.table.column(index))
        size = column.type.byte_width
        flat = np.frombuffer(column.buffers()[1], dtype=np.uint8)
        view = flat[column.offset * size : (column.offset + len(column)) * size].reshape(-1, size)
        metadata = self.table.schema.field(index).metadata or {}
        return StoredCodes(view, blocked=metadata.get(LAYOUT_KEY) == BLOCKED, lists=self.lists)

    @property
    def grouped(self) -> bool:
        """Whether the rows are grouped by list (the ``list`` column, format 3)."""
        return LIST_COLUMN in self.table.column_names

    @property
    def lists(self) -> npt.NDArray[np.uint16] | None:
        """Each row's list, or None when the segment has none (its codes are scanned in full).

        Format 3 (:attr:`grouped`): expanded once from the list runs (2 bytes per row in memory,
        none on disk). Format 2: a zero-copy view of the ``partition`` column.
        """
        if LIST_COLUMN in self.table.column_names:
            cached = self.cache.get(LIST_COLUMN)
            if cached is None:
                values, ends = list_runs(single_array(self.table.column(LIST_COLUMN)))
                cached = self.cache[LIST_COLUMN] = np.repeat(values, np.diff(ends, prepend=0))
            return cached  # type: ignore[no-any-return]
        if PARTITION_COLUMN not in self.table.column_names:
            return None
        column = single_array(self.table.column(PARTITION_COLUMN))
        flat = np.frombuffer(column.buffers()[1], dtype=np.uint16)
        return flat[column.offset : column.offset + len(column)]

    def sliced(self, name: str, start: int, length: int) -> Segment:
        """Rows ``start`` to ``start + length`` as a new segment ``name`` (list runs cut to them)."""
        table = self.table.slice(start, length)
        if LIST_COLUMN in table.column_names:
            lists = self.lists
            assert lists is not None  # noqa: S101 - the segment has a list column
            table, _ = grouped_table(table.drop_columns([LIST_COLUMN]), lists[start : start + table.num_rows])
        return Segment(name, table)

    def row_lists_table(self) -> pa.Table:
        """The table with row-major codes and its lists as one value per row (``partition``).

        What row operations (filter, take) need: Arrow cannot filter a run-end-encoded column,
        and rows taken out of list order must not keep runs. :func:`grouped_table` regroups.
        """
        table = self.row_major_table()
        if LIST_COLUMN not in table.column_names:
            return table
        lists = self.lists
        assert lists is not None  # noqa: S101 - the segment has a list column
        table = table.drop_columns([LIST_COLUMN])
        return table.append_column(PARTITION_FIELD, _lists_array(lists))

    @property
    def codes(self) -> npt.NDArray[np.uint8] | None:
        """Row-major codes ``uint8[rows, code_size]``, or None if not encoded.

        A zero-copy view of row-major stored codes; blocked ones are unpacked on first use
        (use :attr:`stored_codes` on search paths).
        """
        stored = self.stored_codes
        return None if stored is None else stored.row_major

    def row_major_table(self) -> pa.Table:
        """The table with its codes (if any) row by row: what row operations (take, concat) need."""
        stored = self.stored_codes
        if stored is None or not stored.blocked:
            return self.table
        index = self.table.schema.get_field_index("codes")
        field = self.table.schema.field(index).remove_metadata()
        return self.table.set_column(index, field, _codes_array(stored.row_major))

    def blocked_table(self) -> pa.Table:
        """The table with its codes in the fast-scan block layout, as fast-scan stores write it."""
        stored = self.stored_codes
        if stored is None or stored.blocked:
            return self.table
        index = self.table.schema.get_field_index("codes")
        field = self.table.schema.field(index).with_metadata({LAYOUT_KEY: BLOCKED})
        return self.table.set_column(index, field, _codes_array(to_blocked(stored.stored)))

    def rows_of_ids(self, ids: pa.Array) -> npt.NDArray[np.int64]:
        """Row offsets whose id is in ``ids`` (vectorized, no per-row Python)."""
        if self.rows == 0 or len(ids) == 0:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(bool_mask(pc.is_in(self.ids, value_set=ids)))

    def take(self, rows: npt.NDArray[np.int64], columns: Sequence[str]) -> dict[str, list]:
        """Python values of ``columns`` at ``rows`` (used only for the final top-k rows)."""
        return self._read(lambda: {c: array.to_pylist() for c, array in self._taken(rows, columns).items()})

    def records(self, rows: npt.NDArray[np.int64]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Ids, texts and metadata dicts of ``rows`` (a query's hits).

        The same values as :meth:`take` and :meth:`metadata`. A few rows (up to
        :data:`RECORDS_BY_VALUE_MAX` values of metadata columns) are read value by value:
        strings sliced from the mapped buffers, metadata as Arrow scalars. Right after a query's
        code scan has flushed the caches, an Arrow take cost 110-240 us whatever the rows; ten
        rows read value by value, 60 us. More rows: one Arrow take of all the record columns.
        """
        where = self.path or f"segment {self.name}"
        typed = self.typed_metadata
        if typed is not None and rows.size * (len(typed[0]) + 1) <= RECORDS_BY_VALUE_MAX:
            return self._read(lambda: self._records_by_value(rows.tolist(), typed, where))

        def read() -> tuple[list[str], list[str], list[dict[str, Any]]]:
            taken = self.records_batch.take(int_array(rows))
            ids, texts = taken.column("id").to_pylist(), taken.column("text").to_pylist()
            fallback = taken.column(FALLBACK_METADATA)
            if typed is None:  # format 1: the whole JSON object
                return ids, texts, [_json_object(text, where, self.path) for text in fallback.to_pylist()]
            columns = {key: taken.column(METADATA_PREFIX + key) for key in typed[0]}
            return ids, texts, decode_metadata(columns, fallback, where)

        return self._read(read)

    def _records_by_value(
        self, rows: list[int], typed: tuple[dict[str, pa.Array], pa.Array], where: str
    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """:meth:`records` of a format-2 segment (``typed``: its metadata columns), one value at a time."""
        if not rows:
            return [], [], []
        ids, texts = self._record_strings
        columns, fallback = typed
        values = {key: [array[row].as_py() for row in rows] for key, array in columns.items()}
        if fallback.null_count == len(fallback):  # no row has one (a ``null`` column)
            texts_of_fallback: list[str | None] = [None] * len(rows)
        else:
            texts_of_fallback = [fallback[row].as_py() for row in rows]
        metadatas = decode_metadata_values(values, texts_of_fallback, where)
        return ids.values(rows), texts.values(rows), metadatas

    @cached_property
    def _record_strings(self) -> tuple[_Strings, _Strings]:
        """The id and text columns, read value by value."""
        ids, texts = (single_array(self.table.column(name)) for name in ("id", "text"))
        return _Strings(ids), _Strings(texts)

    @cached_property
    def records_batch(self) -> pa.RecordBatch:
        """The id, text and metadata columns as one zero-copy batch, read by :meth:`records`."""
        names = ["id", "text"]
        if self.typed_metadata is not None:
            names += [METADATA_PREFIX + key for key in self.typed_metadata[0]]
        names.append(FALLBACK_METADATA)
        return pa.RecordBatch.from_arrays([single_array(self.table.column(c)) for c in names], names=names)

    def metadata(self, rows: npt.NDArray[np.int64] | None = None) -> list[dict[str, Any]]:
        """The metadata dicts of ``rows`` (all rows if None), exactly as they were added.

        Format 1 parses each row's JSON object; format 2 joins the typed columns and the fallback
        (``storage.metadata``). Damage is a ``CorruptStoreError`` naming the file.
        """
        where = self.path or f"segment {self.name}"
        typed = self.typed_metadata
        if typed is None:
            column = FALLBACK_METADATA  # format 1: the whole JSON object
            texts = (
                self._read(self.table.column(column).to_pylist)
                if rows is None
                else self.take(rows, (column,))[column]
            )
            return [_json_object(text, where, self.path) for text in texts]
        columns, fallback = typed
        if rows is not None:
            names = [METADATA_PREFIX + key for key in columns]
            taken = self._read(lambda: self._taken(rows, [*names, FALLBACK_METADATA]))
            columns = {key: taken[name] for key, name in zip(columns, names, strict=True)}
            fallback = taken[FALLBACK_METADATA]
        return self._read(lambda: decode_metadata(columns, fallback, where))

    def _taken(self, rows: npt.NDArray[np.int64], columns: Sequence[str]) -> dict[str, pa.Array]:
        indices = int_array(rows)  # not pa.array(), which imports pandas (see langchain_vq.arrays)
        return {c: single_array(self.table.column(c)).take(indices) for c in columns}

    def _read(self, read: Callable[[], _T]) -> _T:
        """``read()``, with Arrow's errors on a damaged file turned into ``CorruptStoreError``."""
        try:
            return read()
        except (pa.ArrowException, UnicodeDecodeError, IndexError) as exc:
            where = self.path or f"segment {self.name}"
            msg = f"Store file {where} cannot be read ({exc}); the file is damaged (run verify())."
            raise CorruptStoreError(msg, self.path) from exc

    def with_codes(
        self, codes: npt.NDArray[np.uint8] | None, lists: npt.NDArray[np.uint16] | None = None
    ) -> Segment:
        """A new in-memory segment with the same rows and new (or no) codes, and their lists if given.

        ``lists`` must already be in list order (rows grouped by list); rows that are not are
        regrouped by :meth:`with_grouped_codes`, which says how they moved.
        """
        if lists is not None and list_order(lists) is not None:
            msg = "Rows with lists must be grouped by list; use with_grouped_codes() to regroup them."
            raise ValueError(msg)
        segment, _ = self.with_grouped_codes(codes, lists)
        return segment

    def with_grouped_codes(
        self, codes: npt.NDArray[np.uint8] | None, lists: npt.NDArray[np.uint16] | None
    ) -> tuple[Segment, npt.NDArray[np.int64] | None]:
        """The rows with new (or no) codes and, given ``lists``, grouped by list (format 3).

        Returns the segment and the order its rows were taken in (row ``i`` of the result is row
        ``order[i]`` of this one), or None when they kept their places: callers holding row
        numbers (deletions) remap them with :func:`moved_rows`.
        """
        table = self.table.drop_columns([c for c in _CODE_COLUMNS if c in self.table.column_names])
        order = None
        if codes is not None:
            table = table.append_column(
                pa.field("codes", pa.binary(codes.shape[1]), nullable=False), _codes_array(codes)
            )
            if lists is not None:
                table, order = grouped_table(table, lists)
        return Segment(self.name, table), order

    def with_vectors(
        self, vectors: npt.NDArray[Any] | None, vector_metadata: dict[bytes, bytes] | None = None
    ) -> Segment:
        """A new in-memory segment with the same rows and these stored vectors (None: none)."""
        table = self.table.drop_columns(
            [c for c in ("vector", *_CODE_COLUMNS) if c in self.table.column_names]
        )
        if vectors is not None:
            table = table.append_column(_vector_field(vectors, vector_metadata), _vector_array(vectors))
        for name in _CODE_COLUMNS:  # codes, then their lists, as they were
            if name in self.table.column_names:
                table = table.append_column(self.table.schema.field(name), self.table.column(name))
        return Segment(self.name, table)


def _json_object(text: str, where: str, path: str | None) -> dict[str, Any]:
    """A format-1 row's metadata JSON as a dict; anything else is damage."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        value = exc
    if not isinstance(value, dict):
        msg = f"Store file {where} holds metadata that is not a JSON object; damaged (run verify())."
        raise CorruptStoreError(msg, path)
    return value


def single_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array, zero-copy when it is one chunk (a memory-mapped segment is).

    ``combine_chunks()`` copies even a single chunk, which would pull a memory-mapped column
    (1.5 GB of floats at 1M x 384) into RAM on the first search.
    """
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def build_segment(
    name: str,
    ids: Sequence[str],
    texts: Sequence[str],
    metadatas: Sequence[str] | Sequence[dict[str, Any] | None],
    vectors: npt.NDArray[Any] | None,
    codes: npt.NDArray[np.uint8] | None,
    *,
    vector_metadata: dict[bytes, bytes] | None = None,
    lists: npt.NDArray[np.uint16] | None = None,
) -> Segment:
    """Build an in-memory segment from validated columns.

    Metadata given as JSON text makes a format-1 segment; given as dicts, a format-2 segment
    with one typed column per key (``storage.metadata``). ``vectors`` are stored as given:
    float32, float16, or uint8 int8 levels (whose ranges ``vector_metadata`` carries); None
    makes a codes-only segment. ``lists`` (with ``codes``): each row's list; the rows are then
    stored grouped by list (in a stable order: row order within a list), not in the order given.
    """
    n = len(ids)
    metadata_fields: list[pa.Field] | None = None
    fallback_type: pa.DataType | None = None
    if metadatas and not isinstance(metadatas[0], str):
        typed, fallback = encode_metadata(metadatas)  # type: ignore[arg-type]
        metadata_fields = [pa.field(METADATA_PREFIX + key, array.type) for key, array in typed.items()]
        metadata_arrays = [*typed.values(), fallback]
        fallback_type = fallback.type
    else:
        metadata_arrays = [pa.array(metadatas, type=pa.string())]
    schema = segment_schema(
        0 if vectors is None else vectors.shape[1],
        None if codes is None else codes.shape[1],
        metadata_fields,
        "none" if vectors is None else _precision_of_dtype(vectors.dtype),
        vector_metadata,
        fallback_type,
    )
    columns: list[pa.Array] = [
        pa.array(ids, type=pa.string()),
        pa.array(texts, type=pa.string()),
        *metadata_arrays,
    ]
    if vectors is not None:
        columns.append(_vector_array(vectors))
    if codes is not None:
        columns.append(_codes_array(codes))
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    assert batch.num_rows == n  # noqa: S101 - internal invariant, inputs are validated upstream
    table = pa.Table.from_batches([batch])
    if codes is not None and lists is not None:
        table, _ = grouped_table(table, lists)
    return Segment(name, table)


def list_order(lists: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int64] | None:
    """The stable order that groups rows by list (row order kept within a list); None if they are."""
    lists = np.asarray(lists)
    if lists.size < 2 or not np.any(lists[1:] < lists[:-1]):
        return None
    return np.argsort(lists, kind="stable").astype(np.int64)


def moved_rows(rows: npt.NDArray[np.int64], order: npt.NDArray[np.int64] | None) -> npt.NDArray[np.int64]:
    """Row numbers ``rows`` after the rows were taken in ``order`` (sorted, as deletions are kept)."""
    if order is None or rows.size == 0:
        return rows
    place = np.empty(order.size, np.int64)
    place[order] = np.arange(order.size, dtype=np.int64)
    return np.sort(place[rows])


def grouped_table(
    table: pa.Table, lists: npt.NDArray[np.integer[Any]]
) -> tuple[pa.Table, npt.NDArray[np.int64] | None]:
    """``table`` (row-major codes) with its rows grouped by ``lists`` and the ``list`` runs appended.

    Any list column it had is replaced. Returns the table and the order its rows were taken in
    (None: unchanged), as :meth:`Segment.with_grouped_codes`.
    """
    grouped: npt.NDArray[np.uint16] = np.asarray(lists, dtype=np.uint16)
    if grouped.shape != (table.num_rows,):
        msg = f"Got {grouped.shape[0]} lists for {table.num_rows} rows; give one list per row."
        raise ValueError(msg)
    field = table.schema.field("codes") if "codes" in table.column_names else None
    if field is not None and (field.metadata or {}).get(LAYOUT_KEY) == BLOCKED:
        msg = "Rows of blocked codes cannot be regrouped; group the row-major table (row_major_table())."
        raise ValueError(msg)
    table = table.drop_columns([c for c in _LIST_COLUMNS if c in table.column_names])
    order = list_order(grouped)
    if order is not None:
        table = take_rows(table, order)
        grouped = grouped[order]
    return table.append_column(LIST_FIELD, _runs_array(grouped)), order


def list_runs(array: pa.Array) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.int64]]:
    """``(values, ends)`` of a ``list`` column: each run's list and its end row, from row 0 of ``array``.

    A slice of the column (an Arrow offset) gives the runs of its own rows.
    """
    values = _fixed_width(array.values, np.uint16).copy()
    ends = _fixed_width(array.run_ends, np.int32).astype(np.int64)
    offset, length = array.offset, len(array)
    if offset == 0 and (ends.size == 0 or ends[-1] == length):
        return values, ends
    starts = np.clip(np.concatenate([[0], ends[:-1]]) - offset, 0, length)
    ends = np.clip(ends - offset, 0, length)
    keep = ends > starts
    return values[keep], ends[keep]


def _fixed_width(array: pa.Array, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A fixed-width Arrow array's values as a zero-copy numpy view (``to_numpy`` imports pandas)."""
    data = array.buffers()[1]
    if data is None:
        return np.empty(0, dtype)
    return np.frombuffer(data, dtype=dtype)[array.offset : array.offset + len(array)]


def _runs_array(lists: npt.NDArray[np.uint16]) -> pa.Array:
    """Lists in list order as a run-end-encoded ``list`` column: one run per list present."""
    ends = np.append(np.flatnonzero(np.diff(lists)) + 1, lists.size).astype(np.int32)
    values = lists[ends - 1] if lists.size else lists
    ends = ends if lists.size else ends[:0]
    return pa.RunEndEncodedArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), ends.size, [None, pa.py_buffer(np.ascontiguousarray(ends))]),
        pa.Array.from_buffers(pa.uint16(), values.size, [None, pa.py_buffer(np.ascontiguousarray(values))]),
        type=LIST_FIELD.type,
    )


def check_list_runs(table: pa.Table, path: str) -> None:
    """The ``list`` column of a read segment holds the grouping a writer gives it, or damage is raised.

    One run per list, lists increasing (rows grouped by list), run ends increasing up to the
    row count. O(lists), never O(rows).

    Raises:
        CorruptStoreError: the runs are not that.
    """
    if LIST_COLUMN not in table.column_names:
        return
    column = table.column(LIST_COLUMN)
    try:
        array = single_array(column)
        array.validate(full=True)
        if array.values.null_count:
            problem = "null lists"
        else:
            values, ends = list_runs(array)
            raw = _fixed_width(array.run_ends, np.int32)
            problem = ""
            if array.offset or (raw.size and int(raw[-1]) != table.num_rows):
                problem = f"runs end at row {int(raw[-1])}, not at the segment's {table.num_rows} rows"
            elif ends.size == 0 and table.num_rows:
                problem = f"no runs for {table.num_rows} rows"
            elif np.any(np.diff(values.astype(np.int64)) <= 0):
                problem = "lists not in increasing order, one run each (rows not grouped by list)"
    except (pa.ArrowException, ValueError) as exc:
        problem = str(exc)
    if problem:
        msg = (
            f"Store file {path} has a damaged list column ({problem}); restore the file or rebuild the store."
        )
        raise CorruptStoreError(msg, path)


def merge_segments(name: str, parts: Sequence[Segment], *, codes: bool = True) -> Segment:
    """One format-2 segment holding the rows of ``parts`` in order (``codes=False`` drops codes).

    Format-2 parts whose columns agree are concatenated: a key's integer columns of different
    widths are widened to the widest, and the fallback is a string column if any part needs one
    (``null`` otherwise); the merged integer columns are then narrowed to their values. Otherwise
    (format-1 parts, or keys typed differently) the metadata is read back and encoded again, so a
    merge also upgrades format-1 rows and re-types keys across the merged rows. Stored vectors
    are concatenated, so the parts must store them alike (one precision, one set of int8 ranges).
    Rows' lists are carried when every part has them (runs or, format 2, a value per row), and
    the merged rows are then grouped by list (row order within a list, so parts' rows keep their
    order within each list); else lists are dropped (the merged segment is scanned in full).
    Parts are read row by row (:meth:`Segment.row_lists_table`), so they may have lists either way.
    """
    fields = {str(p.vector_field) + repr(p.vector_field.metadata if p.vector_field else None) for p in parts}
    if len(fields) > 1:
        msg = f"Cannot merge segments whose vectors are stored differently: {sorted(fields)}."
        raise ValueError(msg)
    part_lists = [p.lists for p in parts] if codes else []
    lists: npt.NDArray[np.uint16] | None = None
    if part_lists and all(x is not None for x in part_lists):
        lists = np.concatenate([x for x in part_lists if x is not None])
    dropped = _CODE_COLUMNS if not codes else _LIST_COLUMNS
    tables = [(p.table if not codes else p.row_major_table()) for p in parts]
    tables = [t.drop_columns([c for c in dropped if c in t.column_names]) for t in tables]
    types = _merged_types(tables) if all(p.typed_metadata is not None for p in parts) else None
    if types is not None:
        # Keys missing from some parts become nulls (absent), in the column order a reader expects.
        tables = [_cast_columns(t, types) for t in tables]
        merged = pa.concat_tables(tables, promote_options="permissive")
        order = list_order(lists) if lists is not None and "codes" in merged.column_names else None
        if order is not None:
            # Rows taken in list order straight from the parts (``take_rows``): one copy of the
            # rows, where joining the parts first and grouping after (as Arrow's take of chunked
            # columns does) copies the vectors twice.
            merged = take_rows(merged, order)
            assert lists is not None  # noqa: S101 - an order comes from lists
            lists = lists[order]
        merged = merged.combine_chunks()
        keys = list(dict.fromkeys(n for t in tables for n in t.column_names if n.startswith(METADATA_PREFIX)))
        fixed = [c for c in ("vector", "codes") if c in merged.column_names]
        merged = _narrowed_metadata(merged.select(["id", "text", *keys, FALLBACK_METADATA, *fixed]), keys)
        if "vector" in fixed:  # keep the vector field's own metadata (int8 ranges)
            index = merged.schema.get_field_index("vector")
            merged = merged.set_column(index, parts[0].vector_field, merged.column(index))
        merged = merged.replace_schema_metadata(tables[0].schema.metadata)
        if lists is not None and "codes" in merged.column_names:
            merged, _ = grouped_table(merged, lists)
        return Segment(name, merged)
    stacked = [p.codes for p in parts] if codes and all(p.has_codes for p in parts) else None
    first = parts[0].vector_field
    return build_segment(
        name,
        [i for p in parts for i in p.ids.to_pylist()],
        [t for p in parts for t in p.table.column("text").to_pylist()],
        [m for p in parts for m in p.metadata()],
        np.concatenate([p.vectors for p in parts]) if first is not None else None,
        np.concatenate(stacked) if stacked else None,  # type: ignore[arg-type]
        vector_metadata=None if first is None else first.metadata,
        lists=lists if stacked else None,
    )


def _merged_types(tables: Sequence[pa.Table]) -> dict[str, pa.DataType] | None:
    """Each column's type in a concatenation of format-2 ``tables``; None if they do not agree.

    A column has one type across the tables, except that a metadata key's signed integer
    columns may differ in width (the widest is taken) and the fallback may be ``null`` in some
    (string is taken). The fixed columns must be the same in all.
    """
    seen: dict[str, pa.DataType] = {}
    for table in tables:
        for column in table.schema:
            name, kind = column.name, column.type
            prior = seen.setdefault(name, kind)
            if prior == kind:
                continue
            if name.startswith(METADATA_PREFIX) and all(map(pa.types.is_signed_integer, (prior, kind))):
                seen[name] = max(prior, kind, key=lambda t: t.bit_width)
            elif name == FALLBACK_METADATA and {prior, kind} == set(FALLBACK_TYPES):
                seen[name] = pa.string()
            else:
                return None
    if len({tuple(c for c in t.column_names if not c.startswith(METADATA_PREFIX)) for t in tables}) != 1:
        return None
    return seen


def _cast_columns(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """``table`` with each column cast to its type in ``types`` (a widening: values unchanged)."""
    for index, column in enumerate(table.schema):
        if column.type != types[column.name]:
            field = pa.field(column.name, types[column.name], nullable=True)
            table = table.set_column(index, field, table.column(index).cast(types[column.name]))
    return table


def _narrowed_metadata(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Integer metadata columns at their values' narrowest width; an all-null fallback ``null``."""
    for name in keys:
        index = table.schema.get_field_index(name)
        array = single_array(table.column(index))
        narrow = narrowed(array)
        if narrow.type != array.type:
            table = table.set_column(index, pa.field(name, narrow.type), narrow)
    index = table.schema.get_field_index(FALLBACK_METADATA)
    fallback = table.column(index)
    if fallback.type != pa.null() and fallback.null_count == len(fallback):
        table = table.set_column(index, pa.field(FALLBACK_METADATA, pa.null()), pa.nulls(len(fallback)))
    return table


def _precision_of_dtype(dtype: np.dtype[Any]) -> str:
    for name, arrow_type in VECTOR_TYPES.items():
        if np.dtype(arrow_type.to_pandas_dtype()) == dtype:
            return name
    msg = f"Stored vectors must be float32, float16 or uint8 (int8 levels), got {dtype}."
    raise ValueError(msg)


def _vector_field(vectors: npt.NDArray[Any], metadata: dict[bytes, bytes] | None) -> pa.Field:
    return vector_field(vectors.shape[1], _precision_of_dtype(vectors.dtype), metadata)


def _vector_array(vectors: npt.NDArray[Any]) -> pa.Array:
    """``[n, dim]`` vectors as a fixed-size-list column, sharing the array's memory."""
    vectors = np.ascontiguousarray(vectors)  # shared, not copied (as pa.array shares numpy memory)
    arrow_type = VECTOR_TYPES[_precision_of_dtype(vectors.dtype)]
    values = pa.Array.from_buffers(arrow_type, vectors.size, [None, pa.py_buffer(vectors)])
    return pa.FixedSizeListArray.from_arrays(values, type=_vector_field(vectors, None).type)


def _lists_array(lists: npt.NDArray[np.uint16]) -> pa.Array:
    lists = np.ascontiguousarray(lists, dtype=np.uint16)
    return pa.Array.from_buffers(pa.uint16(), lists.shape[0], [None, pa.py_buffer(lists)])


def _codes_array(codes: npt.NDArray[np.uint8]) -> pa.Array:
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(codes.shape[1]), codes.shape[0], [None, pa.py_buffer(codes)]
    )


class _ChunkSink:
    """A write-only file for pyarrow's IPC writer that keeps what it is given, without copying.

    pyarrow hands large column buffers over as ``pa.Buffer`` objects that share the table's
    memory; they are kept as views. Small pieces (headers, padding, metadata) are gathered into
    one bytes chunk until a large buffer interrupts them, so a small file is a single chunk.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []
        self._small = bytearray()
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.nbytes >= _SHARED_CHUNK_BYTES:
            self._flush_small()
            self.chunks.append(view)
        else:
            self._small += view
        self._position += view.nbytes
        return view.nbytes

    def _flush_small(self) -> None:
        if self._small:
            self.chunks.append(bytes(self._small))
            self._small.clear()

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing is buffered outside ``chunks``."""

    def close(self) -> None:
        self._flush_small()
        self.closed = True


def serialize_chunks(table: pa.Table, schema: pa.Schema | None = None) -> list[bytes | memoryview]:
    """Arrow IPC file bytes of ``table`` as one uncompressed record batch (memory-mappable).

    Returned as consecutive chunks: the column buffers of ``table`` are shared, not copied, so
    writing a segment holds no second copy of its float vectors (one 1M x 384 add held 1.5 GB
    more when the file was built in one buffer first).
    """
    sink = _ChunkSink()
    with ipc.new_file(sink, schema or table.schema) as writer:
        writer.write_table(table.combine_chunks(), max_chunksize=max(table.num_rows, 1))
    sink.close()
    return sink.chunks


def serialize_table(table: pa.Table, schema: pa.Schema | None = None) -> pa.Buffer:
    """The bytes of ``serialize_chunks`` in one buffer (a copy: for small tables and tests)."""
    return pa.py_buffer(b"".join(serialize_chunks(table, schema)))


def checksum(data: pa.Buffer | bytes | memoryview | Sequence[bytes | memoryview]) -> str:
    """CRC-32 of ``data`` (or of consecutive chunks of it) as stored in manifests."""
    chunks: Sequence[Any] = data if isinstance(data, (list, tuple)) else [data]
    crc = 0
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, view.nbytes, _CHECKSUM_CHUNK):
            crc = zlib.crc32(view[start : start + _CHECKSUM_CHUNK], crc)
    return f"crc32:{crc:08x}"


def file_checksum(path: Path) -> str:
    """CRC-32 of a file's content, read in chunks."""
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHECKSUM_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc:08x}"


def check_segment_table(table: pa.Table, path: Path) -> None:
    """Cheap structural checks of a memory-mapped segment, so damage cannot crash a search.

    Checks buffer sizes (``Table.validate()``) and that the offsets of the string columns are
    non-decreasing and within their data buffers: O(rows) integer work on the offsets only,
    never touching text bytes or vectors. Damage to values (text, vectors, codes) is found by
    the checksums of :meth:`StoreDirectory.verify`.

    Raises:
        CorruptStoreError: the table is inconsistent.
    """
    try:
        table.validate()
        # id, text, a string fallback (a null-typed one has no buffers) and string metadata keys
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        for name in strings:
            for chunk in table.column(name).chunks:
                _check_offsets(chunk)
    except (pa.ArrowException, ValueError) as exc:
        msg = f"Store file {path} is structurally damaged ({exc}); restore it or rebuild the store."
        raise CorruptStoreError(msg, str(path)) from exc


def _check_offsets(chunk: pa.Array) -> None:
    if len(chunk) == 0:
        return
    _validity, offsets_buf, data_buf = chunk.buffers()
    if offsets_buf is None:
        msg = "a string column has no offsets buffer"
        raise ValueError(msg)
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    data_size = 0 if data_buf is None else data_buf.size
    if offsets.size != len(chunk) + 1 or offsets[0] < 0 or offsets[-1] > data_size:
        msg = f"string offsets run from {offsets[0]} to {offsets[-1]}, outside 0..{data_size}"
        raise ValueError(msg)
    if np.any(offsets[1:] < offsets[:-1]):
        msg = "string offsets decrease"
        raise ValueError(msg)


def read_arrow_file(
    path: Path, expected_schema: pa.Schema | Callable[[pa.Schema], pa.Schema] | None, rows: int | None
) -> pa.Table:
    """Memory-map an Arrow IPC file and check its schema (or the one derived from it) and row count.

    Raises:
        CorruptStoreError: the file is missing, truncated, not Arrow, or not what was expected.
    """
    try:
        source = pa.memory_map(str(path), "r")
        table = ipc.open_file(source).read_all()
    except FileNotFoundError as exc:
        msg = f"Store file {path} is missing; the store is damaged (run verify() for details)."
        raise CorruptStoreError(msg, str(path)) from exc
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        msg = f"Store file {path} cannot be read as Arrow ({exc}); the file is damaged."
        raise CorruptStoreError(msg, str(path)) from exc
    expected = expected_schema(table.schema) if callable(expected_schema) else expected_schema
    if expected is not None and not table.schema.equals(expected):
        msg = (
            f"Store file {path} has schema {table.schema.to_string(show_schema_metadata=False)!r}, "
            f"expected {expected.to_string(show_schema_metadata=False)!r}; the file is damaged "
            "or belongs to another store."
        )
        raise CorruptStoreError(msg, str(path))
    if rows is not None and table.num_rows != rows:
        msg = f"Store file {path} has {table.num_rows} rows, the manifest says {rows}; it is damaged."
        raise CorruptStoreError(msg, str(path))
    return table


#: Most metadata values (rows x (metadata columns + 1)) :meth:`Segment.records` reads value by
#: value; past this, one Arrow take of all the record columns is cheaper.
RECORDS_BY_VALUE_MAX = 256


class _Strings:
    """A string column read one value at a time: slices of its mapped buffers, no Arrow call."""

    def __init__(self, array: pa.Array) -> None:
        _, offsets, data = array.buffers()
        start, stop = array.offset, array.offset + len(array) + 1
        # int32 offsets, little-endian in Arrow files as on the machines FAISS's kernels run on
        self._offsets = memoryview(offsets or b"\0" * 4)[start * 4 : stop * 4].cast("i")
        self._data = memoryview(data) if data is not None else memoryview(b"")

    def values(self, rows: list[int]) -> list[str]:
        """The strings at ``rows`` (non-null column; bad UTF-8 raises ``UnicodeDecodeError``)."""
        offsets, data = self._offsets, self._data
        return [str(data[offsets[row] : offsets[row + 1]], "utf-8") for row in rows]
