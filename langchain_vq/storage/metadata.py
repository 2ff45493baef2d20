"""Metadata as typed Arrow columns, with a lossless JSON fallback (on-disk format 2).

Each top-level metadata key becomes one column, typed as most of its values are: a signed
integer (``int8`` to ``int64``, the narrowest that holds the segment's values; nested ints stay
``int64``), ``float64``, ``bool``, ``string``, ``timestamp[us]`` (naive, or in the values' time
zone), ``date32``, ``list<T>``, or ``struct<...>`` for nested dicts that share their keys. So a segment
file read with pyarrow, pandas or polars shows the users' fields as columns, and filters run on
them without parsing.

A value that does not fit its key's column (``None``, a value of another type than most, an int
beyond int64, a dict with other keys) goes with its key into the row's *fallback* object:
JSON in which datetimes and dates are tagged (``{"$datetime": "..."}``, ``{"$date": "..."}``), so
nothing is lost. A row's metadata is the union of its column values and its fallback object.
When no row needs the fallback, its column is of Arrow type ``null``: no buffers, no bytes per row.

Round-trip caveats (equal values, other Python objects): tuples come back as lists, dict keys
come back in another order, and an aware datetime keeps its instant and UTC offset but may come
back with another ``tzinfo`` object (``ZoneInfo("UTC")`` for ``timezone.utc``; a fixed offset
for a zone when it went to the fallback).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from langchain_vq.errors import CorruptStoreError, InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Keys beyond this many distinct ones in a segment stay in the fallback (the least used first).
MAX_COLUMNS = 1024
_INT64 = (-(1 << 63), (1 << 63) - 1)
_TAG_DATETIME = "$datetime"
_TAG_DATE = "$date"
_TAG_DICT = "$dict"  # a user dict that would read as a tag: {"$x": 1} -> {"$dict": [["$x", 1]]}
_EMPTY_LIST = pa.list_(pa.null())
#: Integer column types, narrowest first; a column takes the first that holds all its values.
_INT_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.int64())


def encode_metadata(
    metadatas: Sequence[Mapping[str, Any] | None],
) -> tuple[dict[str, pa.Array], pa.Array]:
    """Typed columns by key, and the fallback column (JSON text, null where a row has none).

    Integer columns are as narrow as their values allow; the fallback is a ``null``-typed column
    when no row needs it (4 bytes of offsets per row saved).

    Raises ``InvalidInputError`` naming the row, the key and the type of a value that can be
    stored neither way (e.g. a set, bytes or a NaN).
    """
    n = len(metadatas)
    kinds = _value_types(metadatas)
    chosen = _column_types(kinds)
    columns: dict[str, pa.Array] = {}
    rest: dict[int, dict[str, Any]] = {}
    for key, by_row in kinds.items():
        kind = chosen.get(key)
        values: list[Any] = [None] * n
        for row, value_kind in by_row.items():
            value = metadatas[row][key]  # type: ignore[index]
            if kind is not None and _fits(value_kind, kind):
                values[row] = value
            else:
                rest.setdefault(row, {})[key] = value
        if kind is not None:
            if kind == pa.int64():
                present = [v for v in values if v is not None]
                kind = narrowest_int(min(present), max(present))
            columns[key] = pa.array(values, type=kind)
    if not rest:
        return columns, pa.nulls(n)
    fallback: list[str | None] = [None] * n
    for row, extra in rest.items():
        fallback[row] = json.dumps(_tagged(extra), ensure_ascii=False, allow_nan=False)
    return columns, pa.array(fallback, type=pa.string())


def narrowest_int(lo: int, hi: int) -> pa.DataType:
    """The narrowest signed integer type holding ``lo .. hi`` (both within int64)."""
    for kind in _INT_TYPES:
        half = 1 << (kind.bit_width - 1)
        if -half <= lo and hi < half:
            return kind
    msg = f"{lo} .. {hi} is beyond int64"
    raise ValueError(msg)


def narrowed(array: pa.Array) -> pa.Array:
    """An integer column in the narrowest type that holds its values (other columns as they are).

    For merges, whose parts may hold a key at several widths, or int64 from before narrowing.
    """
    if not pa.types.is_signed_integer(array.type) or array.null_count == len(array):
        return array
    bounds = pc.min_max(array)
    kind = narrowest_int(bounds["min"].as_py(), bounds["max"].as_py())
    return array if kind.bit_width >= array.type.bit_width else array.cast(kind)


def decode_metadata(
    columns: Mapping[str, pa.Array], fallback: pa.Array, where: str = ""
) -> list[dict[str, Any]]:
    """The rows' metadata dicts, exactly as added, from ``encode_metadata``'s columns."""
    rows: list[dict[str, Any]] = [{} for _ in range(len(fallback))]
    for key, array in columns.items():
        for row, value in enumerate(array.to_pylist()):
            if value is not None:  # column values are never None: None lives in the fallback
                rows[row][key] = value
    for row, rest in fallback_objects(fallback, where).items():
        rows[row].update(rest)
    return rows


def decode_metadata_values(
    columns: Mapping[str, Sequence[Any]], fallback: Sequence[str | None], where: str = ""
) -> list[dict[str, Any]]:
    """:func:`decode_metadata` of a few rows whose column values were read as Python values.

    The same dicts; for a query's hits, read value by value, with no Arrow kernel call.
    """
    rows: list[dict[str, Any]] = [{} for _ in fallback]
    for key, values in columns.items():
        for row, value in enumerate(values):
            if value is not None:
                rows[row][key] = value
    for row, text in enumerate(fallback):
        if text is not None:
            rows[row].update(_fallback_object(text, where))
    return rows


def fallback_objects(fallback: pa.Array, where: str = "") -> dict[int, dict[str, Any]]:
    """Row -> the keys and values kept in that row's fallback (only rows that have one)."""
    if fallback.null_count == len(fallback):
        return {}
    # Arrow kernels and to_pylist only: numpy conversions import pandas (see langchain_vq.arrays).
    mask = fallback.is_valid()
    rows = pc.indices_nonzero(mask).to_pylist()
    texts = fallback.filter(mask).to_pylist()
    return {row: _fallback_object(text, where) for row, text in zip(rows, texts, strict=True)}


def _fallback_object(text: str, where: str) -> dict[str, Any]:
    """One row's fallback JSON object, its tags undone; damage is a ``CorruptStoreError``."""
    try:
        rest = json.loads(text, object_hook=_untag)
    except (ValueError, RecursionError) as exc:
        msg = f"Store file {where or '(in memory)'} holds damaged metadata ({exc}); run verify()."
        raise CorruptStoreError(msg, where or None) from exc
    if not isinstance(rest, dict):
        msg = f"Store file {where or '(in memory)'} holds metadata that is not an object; run verify()."
        raise CorruptStoreError(msg, where or None)
    return rest


def check_metadatas(metadatas: Sequence[Mapping[str, Any] | None]) -> None:
    """Raise ``InvalidInputError`` naming the row, key and type of the first unstorable value.

    The same checks ``encode_metadata`` makes, for callers that want to fail before costly work
    (embedding the texts).
    """
    _value_types(metadatas)


def _value_types(metadatas: Sequence[Mapping[str, Any] | None]) -> dict[str, dict[int, pa.DataType | None]]:
    """Key -> row -> the type of that row's value, checking every row and key on the way."""
    try:
        return _value_types_unguarded(metadatas)
    except RecursionError as exc:
        msg = (
            "A metadata value is nested too deeply to store (a dict or list inside itself, or "
            "thousands of levels); flatten it."
        )
        raise InvalidInputError(msg) from exc


def _value_types_unguarded(
    metadatas: Sequence[Mapping[str, Any] | None],
) -> dict[str, dict[int, pa.DataType | None]]:
    kinds: dict[str, dict[int, pa.DataType | None]] = {}
    for row, metadata in enumerate(metadatas):
        if metadata is None:
            continue
        if not isinstance(metadata, dict):
            msg = f"metadatas[{row}] is {type(metadata).__name__}, expected a dict (or None)."
            raise InvalidInputError(msg)
        for key, value in metadata.items():
            by_row = kinds.get(key) if type(key) is str else None
            if by_row is None:  # a key not seen yet (checked once), or a str subclass
                if not isinstance(key, str):
                    key_type = type(key).__name__
                    msg = f"metadatas[{row}] has key {key!r} ({key_type}); metadata keys must be str."
                    raise InvalidInputError(msg)
                _check_unicode(key, f"metadatas[{row}] key {key!r}")
                by_row = kinds.setdefault(key, {})
            # Plain scalars by their exact type first: the same answers as arrow_type, which
            # formats a location string per value (both passes over 100k rows of two plain
            # keys: 0.21 s CPU, benchmarks/measure_hot_paths.py).
            kind = _plain_type(value)
            by_row[row] = kind if kind is not _NOT_PLAIN else arrow_type(value, f"metadatas[{row}][{key!r}]")
    return kinds


_NOT_PLAIN = pa.null()  # a sentinel no plain scalar maps to
_PLAIN_INT64 = pa.int64()
_PLAIN_FLOAT64 = pa.float64()
_PLAIN_BOOL = pa.bool_()
_PLAIN_STRING = pa.string()


def _plain_type(value: object) -> pa.DataType:
    """The column type of a plain int, float, bool or ASCII str; ``_NOT_PLAIN`` for anything else."""
    kind = type(value)
    if kind is int:
        return _PLAIN_INT64 if _INT64[0] <= value <= _INT64[1] else _NOT_PLAIN  # type: ignore[operator]
    if kind is float:
        return _PLAIN_FLOAT64 if math.isfinite(value) else _NOT_PLAIN  # type: ignore[arg-type]
    if kind is bool:
        return _PLAIN_BOOL
    if kind is str and value.isascii():  # type: ignore[attr-defined]
        return _PLAIN_STRING
    return _NOT_PLAIN


def arrow_type(value: object, where: str) -> pa.DataType | None:
    """The column type ``value`` fits, or None for the fallback; a typed error if unstorable."""
    if isinstance(value, (list, tuple)):
        return _list_type(value, where)
    if isinstance(value, dict):
        return _struct_type(value, where)
    return _scalar_type(value, where)


def _scalar_type(value: object, where: str) -> pa.DataType | None:  # noqa: PLR0911 - one per type
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64() if _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"{where} is {value}; metadata numbers must be finite (JSON has no NaN or infinity)."
            raise InvalidInputError(msg)
        return pa.float64()
    if isinstance(value, str):
        _check_unicode(value, where)
        return pa.string()
    if isinstance(value, dt.datetime):  # before date: datetime is a date subclass
        return pa.timestamp("us", tz=_zone(value))
    if isinstance(value, dt.date):
        return pa.date32()
    msg = (
        f"{where} is a {type(value).__name__}; metadata values may be str, int, float, bool, None, "
        "datetime, date, and lists and dicts of them. Convert it first (e.g. str() or .tolist())."
    )
    raise InvalidInputError(msg)


def _list_type(value: list[Any] | tuple[Any, ...], where: str) -> pa.DataType | None:
    """``list<T>`` when every item has type T; ``list<null>`` when empty."""
    kinds = {arrow_type(item, f"{where}[{i}]") for i, item in enumerate(value)}
    if not kinds:
        return _EMPTY_LIST
    kind = kinds.pop()
    return pa.list_(kind) if kind is not None and not kinds and kind != _EMPTY_LIST else None


def _struct_type(value: dict[Any, Any], where: str) -> pa.DataType | None:
    """``struct<...>`` of the sorted keys when every value has a column type."""
    for key in value:
        if not isinstance(key, str):
            msg = f"{where} has key {key!r} ({type(key).__name__}); metadata keys must be str."
            raise InvalidInputError(msg)
    # Every value is checked (a None must not hide an unstorable sibling) before deciding.
    kinds = {key: arrow_type(value[key], f"{where}[{key!r}]") for key in sorted(value)}
    if not kinds or None in kinds.values():
        return None
    return pa.struct([pa.field(key, kind) for key, kind in kinds.items()])


def _column_types(kinds: dict[str, dict[int, pa.DataType | None]]) -> dict[str, pa.DataType]:
    """Each key's column type: its most common storable type (empty lists fit any list)."""
    ranked = sorted(kinds.items(), key=lambda item: -len(item[1]))
    chosen = {}
    for key, by_row in ranked[:MAX_COLUMNS]:
        counts = Counter(kind for kind in by_row.values() if kind is not None)
        if any(pa.types.is_list(kind) and kind != _EMPTY_LIST for kind in counts):
            counts.pop(_EMPTY_LIST, None)  # empty lists join the most common list type
        if counts:  # most common; ties broken by the type's name, so the choice is deterministic
            chosen[key] = max(counts.items(), key=lambda item: (item[1], str(item[0])))[0]
    return chosen


def _fits(value_kind: pa.DataType | None, kind: pa.DataType) -> bool:
    return value_kind == kind or (value_kind == _EMPTY_LIST and pa.types.is_list(kind))


def _zone(value: dt.datetime) -> str | None:
    """The Arrow time-zone name of an aware datetime (None when naive)."""
    tzinfo = value.tzinfo
    if tzinfo is None or tzinfo.utcoffset(value) is None:
        return None
    key = getattr(tzinfo, "key", None) or getattr(tzinfo, "zone", None)  # zoneinfo, pytz
    if isinstance(key, str):
        return key
    if tzinfo is dt.timezone.utc:
        return "UTC"
    if isinstance(tzinfo, dt.timezone):
        offset = tzinfo.utcoffset(value)
        assert offset is not None  # noqa: S101 - checked above
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return pa.array([value]).type.tz  # other tzinfo classes (dateutil...): as Arrow names them


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"{where} is not valid Unicode ({exc.reason} at {exc.start}); clean the text first."
        raise InvalidInputError(msg) from exc


def _tagged(value: Any) -> Any:
    """``value`` with datetimes, dates and tag-like dicts made JSON-safe and reversible."""
    if isinstance(value, dt.datetime):
        return {_TAG_DATETIME: value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG_DATE: value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_tagged(item) for item in value]
    if isinstance(value, dict):
        out = {key: _tagged(item) for key, item in value.items()}
        if len(out) == 1 and next(iter(out)).startswith("$"):  # would read as a tag: escape it
            return {_TAG_DICT: [[key, item] for key, item in out.items()]}
        return out
    return value


def _untag(obj: dict[str, Any]) -> Any:
    """``json.loads`` hook: the inverse of ``_tagged`` (inner objects are untagged first)."""
    if len(obj) != 1:
        return obj
    ((key, value),) = obj.items()
    if key == _TAG_DATETIME:
        return dt.datetime.fromisoformat(value)
    if key == _TAG_DATE:
        return dt.date.fromisoformat(value)
    if key == _TAG_DICT:
        return dict(value)
    return obj
