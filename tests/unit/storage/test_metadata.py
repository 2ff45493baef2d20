# ruff: noqa: DTZ001 - naive datetimes are among the values stored
"""Typed metadata columns: every supported value round-trips exactly; the rest is refused clearly."""

from __future__ import annotations

import datetime as dt
import json
import math
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_vq.errors import CorruptStoreError, InvalidInputError
from langchain_vq.storage import metadata as metadata_module
from langchain_vq.storage.metadata import decode_metadata, encode_metadata

PARIS = ZoneInfo("Europe/Paris")


def round_trip(rows: list[dict | None]) -> list[dict]:
    columns, fallback = encode_metadata(rows)
    return decode_metadata(columns, fallback)


def test_every_supported_type_round_trips_exactly() -> None:
    rows = [
        {
            "int": 7,
            "float": 2.5,
            "bool": True,
            "str": "héllo",
            "none": None,
            "naive": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
            "utc": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
            "paris": dt.datetime(2024, 7, 1, 9, 30, tzinfo=PARIS),
            "offset": dt.datetime(2024, 7, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
            "date": dt.date(1999, 12, 31),
            "ints": [1, 2, 3],
            "strs": ["a", "b"],
            "empty": [],
            "nested": {"author": {"name": "Ada", "born": dt.date(1815, 12, 10)}, "score": 0.5},
            "big": 1 << 70,
            "list_of_dicts": [{"a": 1}, {"a": 2}],
        }
    ]
    assert round_trip(rows) == rows


def test_types_come_back_as_the_same_python_types() -> None:
    rows = [{"n": 1, "x": 1.0, "b": False, "d": dt.date(2020, 1, 1), "t": dt.datetime(2020, 1, 1)}] * 3
    out = round_trip(rows)[0]
    assert [type(out[k]) for k in "nxbdt"] == [int, float, bool, dt.date, dt.datetime]
    assert out["t"].tzinfo is None


def test_aware_datetimes_keep_their_zone_in_a_column() -> None:
    rows = [{"t": dt.datetime(2024, 7, 1, 9, 30, tzinfo=PARIS)}, {"t": dt.datetime(2024, 1, 1, tzinfo=PARIS)}]
    columns, fallback = encode_metadata(rows)
    assert columns["t"].type == pa.timestamp("us", tz="Europe/Paris")
    assert fallback.null_count == 2
    out = decode_metadata(columns, fallback)
    assert [r["t"].utcoffset() for r in out] == [dt.timedelta(hours=2), dt.timedelta(hours=1)]


def test_each_key_becomes_a_column_of_its_most_common_type() -> None:
    rows = [
        {"year": 2020, "lang": "en", "tags": ["a"], "when": dt.date(2020, 1, 1)},
        {"year": 2021, "lang": "de", "tags": []},
        {"year": "unknown", "tags": ["b", "c"], "extra": {"k": 1}},
        {"year": None},
        None,
    ]
    columns, fallback = encode_metadata(rows)
    assert {k: str(v.type) for k, v in columns.items()} == {
        "year": "int16",  # the narrowest integer type holding 2020 and 2021
        "lang": "string",
        "tags": "list<item: string>",
        "when": "date32[day]",
        "extra": "struct<k: int64>",
    }
    assert columns["year"].to_pylist() == [2020, 2021, None, None, None]
    # only what does not fit its column is in the fallback: the string year and the None year
    assert [json.loads(t) if t else None for t in fallback.to_pylist()] == [
        None,
        None,
        {"year": "unknown"},
        {"year": None},
        None,
    ]
    assert decode_metadata(columns, fallback) == [r or {} for r in rows]


def test_keys_whose_types_differ_across_rows_round_trip() -> None:
    rows = [
        {"v": 1},
        {"v": 1.5},
        {"v": "1"},
        {"v": True},
        {"v": [1]},
        {"v": [1, "a"]},
        {"v": {"a": 1}},
        {"v": {"a": "x"}},
        {"v": dt.datetime(2020, 1, 1)},
        {"v": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
        {"v": dt.date(2020, 1, 1)},
        {"v": None},
        {"v": [None, 1]},
        {"v": {}},
        {"v": {"x": None}},
    ]
    assert round_trip(rows) == rows


def test_dicts_that_look_like_tags_stay_dicts() -> None:
    rows = [
        {"a": {"$datetime": "2020-01-01T00:00:00"}},
        {"a": {"$date": "2020-01-01"}},
        {"a": {"$dict": [["x", 1]]}},
        {"a": [{"$other": 1}]},
        {"b": {"$datetime": {"$date": "2020-01-01"}}},
    ]
    assert round_trip(rows) == rows


def test_tuples_come_back_as_lists() -> None:
    assert round_trip([{"t": (1, 2)}, {"t": ("a", 1)}]) == [{"t": [1, 2]}, {"t": ["a", 1]}]


def test_keys_beyond_the_column_limit_stay_in_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata_module, "MAX_COLUMNS", 2)
    rows = [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}, {"a": 5}]
    columns, fallback = encode_metadata(rows)
    assert sorted(columns) == ["a", "b"]  # the two most used keys
    assert decode_metadata(columns, fallback) == rows


def test_no_rows_and_empty_rows() -> None:
    assert round_trip([]) == []
    columns, fallback = encode_metadata([{}, None, {}])
    assert columns == {}
    assert decode_metadata(columns, fallback) == [{}, {}, {}]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"s": {1, 2}}], "metadatas[0]['s'] is a set"),
        ([{}, {"raw": b"x"}], "metadatas[1]['raw'] is a bytes"),
        ([{"deep": {"inner": [1, object()]}}], "metadatas[0]['deep']['inner'][1] is a object"),
        ([{"x": math.nan}], "metadatas[0]['x'] is nan; metadata numbers must be finite"),
        ([{"x": [math.inf]}], "metadatas[0]['x'][0] is inf"),
        ([{1: "a"}], "metadatas[0] has key 1 (int); metadata keys must be str"),
        ([{"d": {2: "a"}}], "metadatas[0]['d'] has key 2 (int)"),
        (["text"], "metadatas[0] is str, expected a dict"),
        ([{"s": "\ud800"}], "metadatas[0]['s'] is not valid Unicode"),
        ([{"\ud800": 1}], "metadatas[0] key '\\ud800' is not valid Unicode"),
    ],
)
def test_unstorable_values_name_the_row_key_and_type(rows: list, expected: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        encode_metadata(rows)
    assert expected in str(caught.value)


def test_damaged_fallback_is_a_corrupt_store_error() -> None:
    with pytest.raises(CorruptStoreError, match=r"seg\.arrow"):
        decode_metadata({}, pa.array(['{"a": '], pa.string()), "seg.arrow")
    with pytest.raises(CorruptStoreError, match="not an object"):
        decode_metadata({}, pa.array(["[1]"], pa.string()), "seg.arrow")


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from([dt.UTC, PARIS, dt.timezone(dt.timedelta(hours=3))])),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.none() | st.dictionaries(st.sampled_from(["a", "b", "$c", "d.e", ""]), _values), max_size=6)
)
def test_any_supported_metadata_round_trips(rows: list[dict | None]) -> None:
    assert round_trip(rows) == [r or {} for r in rows]


@pytest.mark.parametrize("bad", [b"x", math.inf])
def test_a_none_beside_an_unstorable_value_does_not_hide_it(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=r"metadatas\[0\]\['m'\]\['0'\]"):
        encode_metadata([{"m": {"": None, "0": bad}}])


# -- integer widths and the null fallback ------------------------------------------------------
_WIDTHS = [
    ([0, 127, -128], "int8"),
    ([-129, 0], "int16"),
    ([128], "int16"),
    ([32767, -32768], "int16"),
    ([32768], "int32"),
    ([-(2**31), 2**31 - 1], "int32"),
    ([2**31], "int64"),
    ([-(2**31) - 1], "int64"),
    ([2**63 - 1, -(2**63)], "int64"),
]


@pytest.mark.parametrize(("values", "width"), _WIDTHS)
def test_an_int_column_takes_the_narrowest_type_and_reads_back_exact_ints(
    values: list[int], width: str
) -> None:
    rows = [{"n": v} for v in values] + [{}, {"n": None}]
    columns, fallback = encode_metadata(rows)
    assert str(columns["n"].type) == width
    out = decode_metadata(columns, fallback)
    assert out == rows
    assert all(type(r["n"]) is int for r in out[: len(values)])


def test_an_int_beyond_int64_stays_in_the_fallback_and_the_rest_stay_narrow() -> None:
    rows = [{"n": 1}, {"n": 2**63}, {"n": -(2**63) - 1}, {"n": 5}]
    columns, fallback = encode_metadata(rows)
    assert columns["n"].type == pa.int8()
    assert fallback.type == pa.string()
    assert decode_metadata(columns, fallback) == rows


def test_the_fallback_is_a_null_typed_column_when_no_row_needs_it() -> None:
    columns, fallback = encode_metadata([{"a": 1, "b": "x"}, None, {}])
    assert fallback.type == pa.null()
    assert len(fallback) == 3
    assert decode_metadata(columns, fallback) == [{"a": 1, "b": "x"}, {}, {}]
    _, needed = encode_metadata([{"a": 1}, {"a": None}])
    assert needed.type == pa.string()
    assert needed.to_pylist() == [None, '{"a": null}']


def test_nested_ints_keep_int64() -> None:
    columns, _ = encode_metadata([{"s": {"k": 1}, "l": [1, 2]}])
    assert str(columns["s"].type) == "struct<k: int64>"
    assert str(columns["l"].type) == "list<item: int64>"


@pytest.mark.parametrize(("values", "width"), _WIDTHS)
def test_narrowed_takes_an_int64_column_to_the_narrowest_type(values: list[int], width: str) -> None:
    array = pa.array([*values, None], pa.int64())
    out = metadata_module.narrowed(array)
    assert str(out.type) == width
    assert out.to_pylist() == [*values, None]
    assert metadata_module.narrowed(pa.array([1.5], pa.float64())).type == pa.float64()  # not an int
    assert metadata_module.narrowed(pa.nulls(2, pa.int64())).type == pa.int64()  # nothing to measure


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.none() | st.integers(min_value=-(1 << 64), max_value=1 << 64), max_size=8))
def test_any_ints_round_trip(values: list[int | None]) -> None:
    rows = [{} if v is None else {"n": v} for v in values]
    assert round_trip(rows) == rows
