"""Reading a query's hits in several segments at once gives what reading them segment by segment does."""

from __future__ import annotations

import datetime as dt

import numpy as np

from langchain_vq.storage import build_segment
from langchain_vq.storage.segment import RECORDS_BY_ROW_MAX, records_of_rows


def _segment(name: str, n: int, metadata):
    ids = [f"{name}-{i}" for i in range(n)]
    vectors = np.zeros((n, 4), np.float32)
    metadatas = [metadata(i) for i in range(n)]
    return build_segment(name, ids, [f"text {i}" for i in ids], metadatas, vectors, None)


def _alike(i: int) -> dict:
    """Typed columns, and values only the fallback holds (nested, None, mixed kinds, dates)."""
    out: dict = {"n": i, "tag": f"t{i % 3}"}
    if i % 4 == 0:
        out["nested"] = {"a": [1, 2], "b": None}
    if i % 5 == 0:
        out["n"] = None
    if i % 7 == 0:
        out["day"] = dt.date(2024, 1, 1 + i % 28)
    return out


def test_hits_in_several_segments_read_as_segment_by_segment() -> None:
    segments = [_segment(f"s{j}", 40, _alike) for j in range(3)]
    hits = [(segments[j], r) for j, r in [(0, 3), (2, 0), (1, 39), (0, 20), (2, 35), (1, 14), (0, 0)]]
    got = records_of_rows(hits)
    assert got is not None
    want: tuple[list, list, list] = ([], [], [])
    for segment, row in hits:
        ids, texts, metadatas = segment.records(np.array([row]))
        want[0].extend(ids)
        want[1].extend(texts)
        want[2].extend(metadatas)
    assert got == want
    assert got[2][0] == {"n": 3, "tag": "t0"} and got[2][6]["nested"] == {"a": [1, 2], "b": None}


def test_segments_with_other_columns_or_many_rows_are_left_to_the_caller() -> None:
    a = _segment("a", 40, _alike)
    other = _segment("b", 40, lambda i: {"n": float(i) + 0.5})  # "n" is a float column here
    assert records_of_rows([(a, 1), (other, 2)]) is None
    assert records_of_rows([(a, i % 40) for i in range(RECORDS_BY_ROW_MAX + 1)]) is None
    assert records_of_rows([]) is None
    legacy = build_segment("c", ["c-0"], ["t"], ['{"n": 1}'], np.zeros((1, 4), np.float32), None)
    assert records_of_rows([(legacy, 0), (legacy, 0)]) is None  # format 1: one take per segment
