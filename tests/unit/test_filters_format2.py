"""Filters on format-2 segments (typed metadata columns): the same semantics, plus dates and datetimes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_vq.filters import compile_filter
from langchain_vq.storage.segment import build_segment
from tests.unit.test_filters import SETTINGS, filters, metadata, reference_match

DAYS = [dt.date(2024, 1, d) for d in (1, 2, 3)]
NAIVE = [dt.datetime(2024, 1, 2, h) for h in (0, 12)]  # noqa: DTZ001 - naive on purpose
AWARE = [
    dt.datetime(2024, 1, 2, 12, tzinfo=dt.UTC),
    dt.datetime(2024, 1, 2, 13, tzinfo=ZoneInfo("Europe/Paris")),  # the same instant as 12:00 UTC
    dt.datetime(2024, 1, 3, tzinfo=ZoneInfo("Asia/Tokyo")),
]
WHEN = st.sampled_from([*DAYS, *NAIVE, *AWARE])


def format2_segment(metadatas: list[dict]) -> object:
    n = len(metadatas)
    vectors = np.zeros((n, 4), dtype=np.float32)
    return build_segment("s", [str(i) for i in range(n)], [""] * n, metadatas, vectors, None)


def test_format2_segment_keeps_metadata_in_typed_columns() -> None:
    segment = format2_segment([{"year": 2020, "when": DAYS[0]}, {"year": 2021}, {"year": "n/a"}])
    columns, fallback = segment.typed_metadata
    assert {k: str(v.type) for k, v in columns.items()} == {"year": "int64", "when": "date32[day]"}
    assert fallback.to_pylist() == [None, None, '{"year": "n/a"}']


@SETTINGS
@given(
    rows=st.lists(
        st.one_of(
            metadata, st.fixed_dictionaries({}, optional={"x": WHEN, "when": WHEN, "tags": st.lists(WHEN)})
        ),
        min_size=1,
        max_size=30,
    ),
    spec=filters,
)
def test_format2_masks_match_the_reference(rows: list[dict], spec: dict) -> None:
    mask = compile_filter(spec).mask(format2_segment(rows))
    assert mask.tolist() == [reference_match(row, spec) for row in rows]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"when": DAYS[1]}, [False, True, False, False, False, False, False, False]),
        ({"when": {"$gt": DAYS[0]}}, [False, True, True, False, False, False, False, False]),
        ({"when": {"$lte": NAIVE[0]}}, [False, False, False, True, False, False, False, False]),
        ({"when": {"$gte": AWARE[0]}}, [False, False, False, False, False, True, True, True]),
        ({"when": AWARE[1]}, [False, False, False, False, False, True, True, False]),  # same instant
        ({"when": {"$in": [DAYS[2], NAIVE[1]]}}, [False, False, True, False, True, False, False, False]),
        ({"when": {"$nin": [DAYS[2], NAIVE[1]]}}, [True, True, False, True, False, True, True, True]),
        ({"when": {"$ne": DAYS[0]}}, [False, True, True, True, True, True, True, True]),
        ({"when": "2024-01-01"}, [False] * 8),  # a string never equals a date
    ],
)
def test_date_and_datetime_operators(spec: dict, expected: list[bool]) -> None:
    rows = [{"when": value} for value in [*DAYS, *NAIVE, *AWARE]]
    assert compile_filter(spec).mask(format2_segment(rows)).tolist() == expected
