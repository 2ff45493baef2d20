# ruff: noqa: DTZ001 - naive datetimes are among the values stored
"""Segments: metadata read back exactly from format-1 (JSON) and format-2 (typed columns) files."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import ipc

from langchain_vq.errors import CorruptStoreError
from langchain_vq.storage.segment import Segment, build_segment

ROWS = [
    {"year": 2020, "when": dt.date(2020, 5, 1), "tags": ["a"], "deep": {"k": 1}},
    {"year": "unknown", "when": dt.date(2021, 1, 1), "at": dt.datetime(2021, 1, 1, 8), "none": None},
    {},
    {"year": 2022, "tags": [], "deep": {"k": 2}},
]


def _segment(metadatas: list) -> Segment:
    n = len(metadatas)
    vectors = np.eye(n, 4, dtype=np.float32)
    return build_segment("s", [f"id{i}" for i in range(n)], ["t"] * n, metadatas, vectors, None)


def _reopened(segment: Segment, tmp_path) -> Segment:
    path = tmp_path / "segment.arrow"
    with ipc.new_file(str(path), segment.table.schema) as writer:
        writer.write_table(segment.table)
    return Segment("s", ipc.open_file(pa.memory_map(str(path))).read_all(), path=str(path))


def test_format2_metadata_round_trips_through_a_file(tmp_path) -> None:
    segment = _reopened(_segment(ROWS), tmp_path)
    assert segment.typed_metadata is not None
    assert segment.metadata() == ROWS
    assert segment.metadata(np.array([3, 1])) == [ROWS[3], ROWS[1]]


def test_format1_metadata_is_parsed_from_json() -> None:
    rows = [{"a": 1}, {"b": [1, "x"]}]
    segment = _segment([json.dumps(r) for r in rows])
    assert segment.typed_metadata is None
    assert segment.metadata() == rows
    assert segment.metadata(np.array([1])) == [rows[1]]


def test_format2_file_shows_the_fields_as_columns(tmp_path) -> None:
    segment = _reopened(_segment(ROWS), tmp_path)
    table = ipc.open_file(segment.path).read_all()
    # one column per key that has a storable value ("none" holds only None: fallback only)
    assert table.column_names == ["id", "text", "metadata.year", "metadata.when", "metadata.tags",
                                  "metadata.deep", "metadata.at", "metadata", "vector"]  # fmt: skip
    assert table.column("metadata.year").to_pylist() == [2020, None, None, 2022]
    assert table.schema.field("metadata.when").type == pa.date32()
    assert table.schema.field("metadata.at").type == pa.timestamp("us")
    assert table.column("metadata").to_pylist() == [None, '{"year": "unknown", "none": null}', None, None]


@pytest.mark.parametrize("damaged", ["{not json", "[1, 2]", '"text"'])
def test_damaged_format1_metadata_names_the_file(damaged: str) -> None:
    segment = _segment(['{"a": 1}', damaged])
    with pytest.raises(CorruptStoreError, match="segment s holds metadata that is not a JSON object"):
        segment.metadata()
    assert segment.metadata(np.array([0])) == [{"a": 1}]


def test_pandas_and_polars_read_the_typed_columns_from_a_segment_file(tmp_path) -> None:
    pd = pytest.importorskip("pandas", reason="pandas comes with the test extra")
    pl = pytest.importorskip("polars", reason="polars comes with the test extra")
    path = _reopened(_segment(ROWS), tmp_path).path
    frame = pd.read_feather(path)
    assert frame["metadata.year"].tolist()[::3] == [2020, 2022]
    assert frame["metadata.deep"].tolist()[0] == {"k": 1}
    polars_frame = pl.read_ipc(path)
    assert polars_frame.schema["metadata.year"] == pl.Int64
    assert polars_frame.schema["metadata.when"] == pl.Date
    assert polars_frame["metadata.tags"].to_list() == [["a"], None, None, []]
    assert polars_frame.filter(pl.col("metadata.year") > 2020)["id"].to_list() == ["id3"]


def test_records_reads_what_take_and_metadata_read(tmp_path) -> None:
    """One take of all the row columns (a query's hits) gives the values of the per-column reads."""
    rows = np.array([3, 1, 1, 0, 2])
    for segment in (
        _reopened(_segment(ROWS), tmp_path),
        _segment([json.dumps(r, default=str) for r in ROWS]),  # format 1
    ):
        values = segment.take(rows, ("id", "text"))
        assert segment.records(rows) == (values["id"], values["text"], segment.metadata(rows))
    assert _segment(ROWS).records(np.array([], dtype=np.int64)) == ([], [], [])


def test_records_of_damaged_format1_metadata_name_the_file() -> None:
    segment = _segment(['{"a": 1}', "[1, 2]"])
    assert segment.records(np.array([0]))[2] == [{"a": 1}]
    with pytest.raises(CorruptStoreError, match="segment s holds metadata that is not a JSON object"):
        segment.records(np.array([1]))
