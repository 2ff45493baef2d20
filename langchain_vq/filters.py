"""Metadata filters: a dict language compiled once, evaluated as Arrow row masks before the scan.

The language is the one users know from Chroma, PGVector and LangChain's FAISS store::

    {"source": "a.md"}                                  implicit $eq
    {"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}   implicit AND across keys
    {"$or": [{"tags": {"$contains": "ml"}}, {"meta.score": {"$gt": 0.5}}]}

Fields are metadata keys; dotted paths reach into nested dicts. Operators: ``$eq $ne $gt $gte
$lt $lte $in $nin $exists $contains`` on fields, ``$and $or $not`` to combine filters.

Type semantics (explicit, never a raise at search time):
- a number never equals or orders against a string, and booleans are not numbers
  (``True`` does not match ``1``); strings order lexicographically;
- numbers compare by value: an integer column (int8 .. int64) exactly against any int or float
  (``n > 2.5`` is ``n >= 3``); float columns and keys whose rows mix types as float64, exact
  while values are within 2**53 in magnitude (an int beyond float range is an infinity there);
- dates and datetimes (format-2 stores) compare only with their own kind: a ``date`` with dates,
  a naive ``datetime`` with naive ones, an aware ``datetime`` with aware ones, as instants (12:00
  UTC equals 13:00 in Paris in winter); never with the ISO strings of other rows;
- a missing field (or a ``None``) matches nothing, except ``{"$exists": False}``;
  ``$ne`` and ``$nin`` match rows where the field exists with another value;
- ``$contains`` matches list-valued fields holding the value; ``$eq`` on a list field does not;
- ``$not`` negates its filter, so it also matches rows where the field is missing.

Format-1 segments store metadata as JSON text: each is parsed once (Arrow's JSON reader, or a
Python pass when the rows disagree on a field's type) into typed Arrow columns, cached with the
segment. Format-2 segments store those columns already (``storage.metadata``); only keys with
values in the fallback take the Python pass. A filter then costs a few vectorized
``pyarrow.compute`` kernels per query.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from langchain_vq.arrays import array_of, bool_mask, int_scalar, int_values, scalar
from langchain_vq.errors import CorruptStoreError, InvalidFilterError
from langchain_vq.storage.metadata import fallback_objects
from langchain_vq.storage.segment import single_array

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import numpy.typing as npt

    from langchain_vq.storage.segment import Segment

FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains"}
)
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$not"})
#: Deeper filters are refused with a typed error instead of exhausting the stack.
MAX_DEPTH = 100
_ORDERING = {"$gt": pc.greater, "$gte": pc.greater_equal, "$lt": pc.less, "$lte": pc.less_equal}
_CACHE_KEY = "metadata_columns"

Scalar = str | int | float | bool | dt.date  # dt.datetime is a dt.date


# -- typed columns ----------------------------------------------------------------------------
@dataclass
class TypedColumn:
    """One metadata field across a segment's rows, split by JSON type (null where absent)."""

    number: pa.Array | None = None  # an integer type (as stored) or float64
    string: pa.Array | None = None
    boolean: pa.Array | None = None
    timestamp: pa.Array | None = None  # naive datetimes: timestamp[us]
    timestamp_tz: pa.Array | None = None  # aware datetimes, as instants: timestamp[us, UTC]
    date: pa.Array | None = None  # date32
    list_parents: npt.NDArray[np.int64] | None = None  # row of each list element
    elements: TypedColumn | None = None  # list elements, aligned with list_parents

    def exists(self, rows: int) -> npt.NDArray[np.bool_]:
        """Rows where the field holds any non-null value."""
        mask = np.zeros(rows, dtype=bool)
        for array in (self.number, self.string, self.boolean, self.timestamp, self.timestamp_tz, self.date):
            if array is not None:
                mask |= _to_mask(pc.is_valid(array))
        if self.list_parents is not None:
            mask[self.list_parents] = True
            mask |= self._empty_lists
        return mask

    _empty_lists: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def equals(self, value: Scalar, rows: int) -> npt.NDArray[np.bool_]:
        """Rows whose scalar value equals ``value`` (same JSON type only)."""
        array = self._array_for(value)
        if array is None:
            return np.zeros(rows, dtype=bool)
        if _kind(value) == "number":
            return _number_mask("$eq", array, value, rows)  # type: ignore[arg-type]
        return _to_mask(pc.equal(array, _scalar(value)))

    def compare(self, op: str, value: str | float | dt.date, rows: int) -> npt.NDArray[np.bool_]:
        """Rows whose value orders against ``value`` as ``op`` says (same JSON type only)."""
        array = self._array_for(value)
        if array is None:
            return np.zeros(rows, dtype=bool)
        if _kind(value) == "number":
            return _number_mask(op, array, value, rows)  # type: ignore[arg-type]
        return _to_mask(_ORDERING[op](array, _scalar(value)))

    def contains(self, value: Scalar, rows: int) -> npt.NDArray[np.bool_]:
        """Rows whose list value holds ``value``."""
        mask = np.zeros(rows, dtype=bool)
        if self.elements is None or self.list_parents is None:
            return mask
        hits = self.elements.equals(value, self.list_parents.size)
        mask[self.list_parents[hits]] = True
        return mask

    def _array_for(self, value: Scalar) -> pa.Array | None:
        return getattr(self, _kind(value))


def _kind(value: object) -> str:
    """The ``TypedColumn`` array a filter value compares against (its JSON or date kind)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dt.datetime):
        return "timestamp" if value.utcoffset() is None else "timestamp_tz"
    if isinstance(value, dt.date):
        return "date"
    return "string"


_ARROW_TYPES = {
    "number": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "timestamp_tz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def _scalar(value: Scalar) -> pa.Scalar:
    kind = _kind(value)
    return scalar(_as_float(value) if kind == "number" else value, _ARROW_TYPES[kind])  # type: ignore[arg-type]


_NUMBER_OPS = {"$eq": pc.equal, **_ORDERING}


def _number_mask(op: str, array: pa.Array, value: float, rows: int) -> npt.NDArray[np.bool_]:
    """Rows whose number is ``op`` ``value``; integer columns are compared as integers.

    Why: casting a stored integer column to float64 once per segment cost the first filtered
    query on a 1M-row store 22-34 ms in two profiles at load 3-8 (8 MB of fresh memory per
    column, page faults included).
    Instead the value becomes the integer bound that selects the same rows (``n > 2.5`` is
    ``n > 2``, ``n < 2.5`` is ``n < 3``), which is also exact beyond 2**53.
    """
    if not pa.types.is_integer(array.type):
        return _to_mask(_NUMBER_OPS[op](array, scalar(_as_float(value), pa.float64())))
    bound = _integer_bound(op, value)
    bits = array.type.bit_width
    low, high = (
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        if pa.types.is_signed_integer(array.type)
        else (0, (1 << bits) - 1)
    )
    if (
        bound is None
        or (bound > high and op in ("$eq", "$gt", "$gte"))
        or (bound < low and op in ("$eq", "$lt", "$lte"))
    ):
        return np.zeros(rows, dtype=bool)
    if not low <= bound <= high:  # every stored value is on the matching side
        return _to_mask(pc.is_valid(array))
    return _to_mask(_NUMBER_OPS[op](array, int_scalar(bound, array.type)))


def _integer_bound(op: str, value: float) -> int | None:
    """The integer that ``op`` compares integers against to match ``value``; None: no integer does.

    ``value`` is finite: ``compile_filter`` refuses NaN and infinities.
    """
    if isinstance(value, int):
        return value
    if op == "$eq" and not value.is_integer():
        return None
    return math.floor(value) if op in ("$eq", "$gt", "$lte") else math.ceil(value)


def _as_float(value: float) -> float:
    """``float(value)``; an int beyond float range is an infinity, which orders the same way.

    Numbers compare as float64 on float columns and keys of mixed types.
    """
    try:
        return float(value)
    except OverflowError:  # only ints overflow (finite floats do not)
        return math.inf if value > 0 else -math.inf


def _to_mask(result: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    return bool_mask(result)


def metadata_columns(segment: Segment) -> dict[str, TypedColumn]:
    """Typed columns of a segment's metadata by dotted path; parsed once and cached."""
    cached = segment.cache.get(_CACHE_KEY)
    if cached is None:
        column = single_array(segment.table.column("metadata"))
        try:
            typed = segment.typed_metadata
            if typed is not None:
                cached = _columns_from_typed(*typed, segment.path or "")
            else:
                cached = _columns_from_arrow_json(column) or _columns_from_python(
                    json.loads(text) for text in column.to_pylist()
                )
        except (ValueError, RecursionError, pa.ArrowException) as exc:  # JSONDecodeError included
            where = segment.path or f"segment {segment.name}"
            msg = f"Store file {where} holds metadata that is not valid JSON ({exc}); damaged (run verify())."
            raise CorruptStoreError(msg, segment.path) from exc
        segment.cache[_CACHE_KEY] = cached
    return cached


def _columns_from_typed(
    columns: dict[str, pa.Array], fallback: pa.Array, where: str
) -> dict[str, TypedColumn]:
    """Format 2: the stored columns as they are; keys with fallback values in one Python pass."""
    extra = fallback_objects(fallback, where)
    mixed = {key for values in extra.values() for key in values}
    out: dict[str, TypedColumn] = {}
    for key, array in columns.items():
        if key not in mixed and not _flatten_arrow(key, array, out, typed=True):
            mixed.add(key)
    if mixed:
        rows: list[dict[str, Any]] = [{} for _ in range(len(fallback))]
        for key in mixed & columns.keys():
            for row, value in enumerate(columns[key].to_pylist()):
                if value is not None:
                    rows[row][key] = value
        for row, values in extra.items():
            rows[row].update(values)
        out.update(_columns_from_python(rows))
    return out


def _columns_from_arrow_json(column: pa.Array) -> dict[str, TypedColumn] | None:
    """Parse with Arrow's JSON reader; None when rows disagree on types (or types are exotic)."""
    n = len(column)
    if n == 0:
        return {}
    empty = pa.repeat(pa.scalar("", pa.string()), n)  # 2 ms at 1M rows; a list of "" took 28 ms
    lines = pc.binary_join_element_wise(column, empty, "\n")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=n + 1, offset=lines.offset * 4)
    data = lines.buffers()[2][offsets[0] : offsets[-1]]
    try:
        table = pa_json.read_json(pa.BufferReader(data))
    except pa.ArrowInvalid:
        return None
    if table.num_rows != n:
        return None
    out: dict[str, TypedColumn] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        if not _flatten_arrow(name, chunked.combine_chunks(), out):
            return None
    return out


def _flatten_arrow(path: str, array: pa.Array, out: dict[str, TypedColumn], *, typed: bool = False) -> bool:
    """Add ``array`` (and nested struct fields) to ``out``; False for types we do not map.

    ``typed``: the array holds stored values (format 2), so timestamps and dates are the users'
    own; from Arrow's JSON reader (format 1) they were inferred from strings and are refused.
    """
    kind = array.type
    if pa.types.is_struct(kind):
        return all(
            _flatten_arrow(f"{path}.{kind.field(i).name}", child, out, typed=typed)
            for i, child in enumerate(array.flatten())
        )
    if pa.types.is_null(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        elements: dict[str, TypedColumn] = {}
        if not _flatten_arrow("", array.flatten(), elements, typed=typed) or set(elements) - {""}:
            return False  # lists of dicts or lists: not addressable by $contains
        parents = int_values(pc.list_parent_indices(array))
        lengths = int_values(pc.list_value_length(array), null=-1)
        out[path] = TypedColumn(
            list_parents=parents, elements=elements.get("", TypedColumn()), _empty_lists=lengths == 0
        )
        return True
    column = _scalar_column(array, typed=typed)
    if column is None:
        return False  # e.g. timestamps inferred from strings: keep the exact text instead
    out[path] = column
    return True


def _scalar_column(array: pa.Array, *, typed: bool) -> TypedColumn | None:  # noqa: PLR0911 - one per kind
    """A scalar Arrow array as the ``TypedColumn`` kind filters compare (None: not mapped)."""
    kind = array.type
    if pa.types.is_integer(kind):
        return TypedColumn(number=array)  # compared as integers, see _number_mask
    if pa.types.is_floating(kind):
        return TypedColumn(number=array if kind == pa.float64() else pc.cast(array, pa.float64()))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return TypedColumn(string=array.cast(pa.string()))
    if pa.types.is_boolean(kind):
        return TypedColumn(boolean=array)
    if typed and pa.types.is_timestamp(kind):
        if kind.tz is None:
            return TypedColumn(timestamp=array.cast(_ARROW_TYPES["timestamp"]))
        return TypedColumn(timestamp_tz=array.cast(_ARROW_TYPES["timestamp_tz"]))
    if typed and pa.types.is_date(kind):
        return TypedColumn(date=array.cast(pa.date32()))
    return None


def _columns_from_python(metadatas: Iterable[dict[str, Any]]) -> dict[str, TypedColumn]:
    """One Python pass for metadata whose rows disagree on a field's type."""
    rows = list(metadatas)
    n = len(rows)
    scalars: dict[str, dict[str, list[Any]]] = {}
    lists: dict[str, tuple[list[int], dict[str, list[Any]], set[int]]] = {}
    for row, metadata in enumerate(rows):
        for path, value in _walk(metadata):
            if isinstance(value, list):
                parents, elements, empty = lists.setdefault(path, ([], {}, set()))
                if not value:
                    empty.add(row)
                for item in value:
                    kind = _json_kind(item)
                    if kind is None:
                        continue
                    index = len(parents)
                    parents.append(row)
                    _put(elements, kind, index, item, None)
            elif (kind := _json_kind(value)) is not None:
                _put(scalars.setdefault(path, {}), kind, row, value, n)
    out: dict[str, TypedColumn] = {}
    for path, by_kind in scalars.items():
        out[path] = _typed(by_kind)
    for path, (parents, elements, empty) in lists.items():
        size = len(parents)
        padded = {k: v + [None] * (size - len(v)) for k, v in elements.items()}
        empty_mask = np.zeros(n, dtype=bool)
        empty_mask[list(empty)] = True
        column = out.setdefault(path, TypedColumn())
        column.list_parents = np.asarray(parents, dtype=np.int64)
        column.elements = _typed(padded)
        column._empty_lists = empty_mask  # noqa: SLF001
    return out


def _walk(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        return [(prefix, value)] if prefix else []
    found = []
    for key, child in value.items():
        found.extend(_walk(child, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _json_kind(value: object) -> str | None:
    """The kind of a scalar metadata value; None for None, lists and dicts."""
    if value is None or isinstance(value, (list, tuple, dict)):
        return None
    return _kind(value)


def _put(by_kind: dict[str, list[Any]], kind: str, row: int, value: object, n: int | None) -> None:
    values = by_kind.get(kind)
    if values is None:
        values = by_kind[kind] = [None] * (n or 0)
    if n is None and len(values) <= row:
        values.extend([None] * (row + 1 - len(values)))
    values[row] = _as_float(value) if kind == "number" else value  # type: ignore[arg-type]


def _typed(by_kind: dict[str, list[Any]]) -> TypedColumn:
    return TypedColumn(**{kind: array_of(values, _ARROW_TYPES[kind]) for kind, values in by_kind.items()})


# -- compiled filters -------------------------------------------------------------------------
class Filter:
    """A compiled filter: evaluates to a boolean row mask per segment."""

    def mask(self, segment: Segment) -> npt.NDArray[np.bool_]:
        """Rows of ``segment`` that match (deleted rows included; the engine removes those)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Field(Filter):
    path: str
    op: str
    value: Any

    def mask(self, segment: Segment) -> npt.NDArray[np.bool_]:  # noqa: PLR0911 - one branch per operator
        rows = segment.rows
        column = metadata_columns(segment).get(self.path)
        if self.op == "$exists":
            exists = column.exists(rows) if column is not None else np.zeros(rows, dtype=bool)
            return exists if self.value else ~exists
        if column is None:
            return np.zeros(rows, dtype=bool)
        if self.op == "$eq":
            return column.equals(self.value, rows)
        if self.op == "$ne":
            return column.exists(rows) & ~column.equals(self.value, rows)
        if self.op in _ORDERING:
            return column.compare(self.op, self.value, rows)
        if self.op == "$contains":
            return column.contains(self.value, rows)
        hits = np.zeros(rows, dtype=bool)
        for value in self.value:
            hits |= column.equals(value, rows)
        return hits if self.op == "$in" else column.exists(rows) & ~hits


@dataclass(frozen=True)
class _Combined(Filter):
    """``$and`` (every part holds) or ``$or`` (any part holds) of the parts' masks."""

    parts: tuple[Filter, ...]
    any_of: bool = False  # False: $and, True: $or

    def mask(self, segment: Segment) -> npt.NDArray[np.bool_]:
        combine = np.logical_or if self.any_of else np.logical_and
        out = np.full(segment.rows, not self.any_of)  # the identity of the combination
        for part in self.parts:
            combine(out, part.mask(segment), out=out)
        return out


@dataclass(frozen=True)
class _Not(Filter):
    part: Filter

    def mask(self, segment: Segment) -> npt.NDArray[np.bool_]:
        return ~self.part.mask(segment)


@dataclass(frozen=True)
class _Callable(Filter):
    """``filter(Document) -> bool``, the InMemoryVectorStore convention: one call per row."""

    predicate: Callable[[Any], bool]

    def mask(self, segment: Segment) -> npt.NDArray[np.bool_]:
        from langchain_core.documents import Document

        ids = segment.table.column("id").to_pylist()
        texts = segment.table.column("text").to_pylist()
        metas = segment.metadata()
        return np.fromiter(
            (
                bool(self.predicate(Document(id=i, page_content=t, metadata=m)))
                for i, t, m in zip(ids, texts, metas, strict=True)
            ),
            dtype=bool,
            count=len(ids),
        )


def compile_filter(spec: object) -> Filter | None:
    """Compile a dict filter (or wrap a callable); None means no filter.

    Raises:
        InvalidFilterError: the filter is malformed; the message names the offending part.
    """
    if spec is None:
        return None
    if isinstance(spec, Filter):
        return spec
    if callable(spec):
        return _Callable(spec)
    return _compile(spec, "filter", 0)


def _compile(spec: object, where: str, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        msg = f"{where}: the filter is nested deeper than {MAX_DEPTH} levels; flatten it."
        raise InvalidFilterError(msg, where)
    if not isinstance(spec, dict):
        msg = (
            f"{where}: expected a dict such as {{'field': value}} or {{'$and': [...]}}, "
            f"got {type(spec).__name__} {spec!r:.80}."
        )
        raise InvalidFilterError(msg, where)
    parts: list[Filter] = []
    for key, value in spec.items():
        here = f"{where}.{key}" if where != "filter" else str(key)
        if not isinstance(key, str) or not key:
            msg = f"{where}: field names must be non-empty strings, got {key!r}."
            raise InvalidFilterError(msg, where)
        if key in LOGICAL_OPERATORS:
            parts.append(_compile_logical(key, value, here, depth))
        elif key.startswith("$"):
            hint = (
                f" Operators apply to a field: {{'field': {{'{key}': ...}}}}."
                if key in FIELD_OPERATORS
                else f" Known operators: {sorted(FIELD_OPERATORS | LOGICAL_OPERATORS)}."
            )
            msg = f"{here}: {key!r} cannot stand here.{hint}"
            raise InvalidFilterError(msg, here)
        else:
            parts.extend(_compile_field(key, value, here))
    if not parts:
        msg = f"{where}: an empty filter; pass None for no filter, or at least one condition."
        raise InvalidFilterError(msg, where)
    return parts[0] if len(parts) == 1 else _Combined(tuple(parts))


def _compile_logical(op: str, value: object, where: str, depth: int) -> Filter:
    if op == "$not":
        return _Not(_compile(value, where, depth + 1))
    if not isinstance(value, list) or not value:
        msg = f"{where}: {op} takes a non-empty list of filters, got {value!r:.80}."
        raise InvalidFilterError(msg, where)
    parts = tuple(_compile(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    return _Combined(parts, any_of=op == "$or")


def _compile_field(path: str, value: object, where: str) -> list[Filter]:
    if not isinstance(value, dict):
        return [_Field(path, "$eq", _check_scalar(value, where, "$eq"))]
    if not value:
        msg = f"{where}: an empty condition; use a value for equality or {{'$exists': True}}."
        raise InvalidFilterError(msg, where)
    out: list[Filter] = []
    for op, operand in value.items():
        here = f"{where}.{op}"
        if op not in FIELD_OPERATORS:
            hint = (
                " Nested fields are addressed with dotted paths: {'a.b': value}."
                if isinstance(op, str) and not op.startswith("$")
                else f" Known field operators: {sorted(FIELD_OPERATORS)}."
            )
            msg = f"{here}: unknown operator {op!r}.{hint}"
            raise InvalidFilterError(msg, here)
        out.append(_Field(path, op, _check_operand(op, operand, here)))
    return out


def _check_operand(op: str, operand: object, where: str) -> object:
    if op == "$exists":
        if not isinstance(operand, bool):
            msg = f"{where}: $exists takes True or False, got {operand!r:.80}."
            raise InvalidFilterError(msg, where)
        return operand
    if op in ("$in", "$nin"):
        if not isinstance(operand, (list, tuple)):
            msg = f"{where}: {op} takes a list of values, got {type(operand).__name__} {operand!r:.80}."
            raise InvalidFilterError(msg, where)
        return tuple(_check_scalar(v, f"{where}[{i}]", op) for i, v in enumerate(operand))
    value = _check_scalar(operand, where, op)
    if op in _ORDERING and isinstance(value, bool):
        msg = f"{where}: {op} compares numbers, strings, dates or datetimes, got the boolean {value!r}."
        raise InvalidFilterError(msg, where)
    return value


def _check_scalar(value: object, where: str, op: str) -> Scalar:
    if isinstance(value, (str, bool, int, float, dt.date)) and not (
        isinstance(value, float) and not np.isfinite(value)
    ):
        return value
    hint = " Use {'$exists': False} to find rows without the field." if value is None else ""
    msg = (
        f"{where}: {op} takes a string, number, boolean, date or datetime, got "
        f"{type(value).__name__} {value!r:.80}.{hint}"
    )
    raise InvalidFilterError(msg, where)
