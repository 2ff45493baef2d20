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
from langchain_vq.storage import SegmentEntry, StoreDirectory
from langchain_vq.storage import segment as segment_module
from langchain_vq.storage.schema import INT8_LO_KEY, INT8_SCALE_KEY
from langchain_vq.storage.segment import Segment, build_segment, merge_segments

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
    assert polars_frame.schema["metadata.year"] == pl.Int16  # narrowest for 2020 and 2022
    assert polars_frame.schema["metadata.when"] == pl.Date
    assert polars_frame["metadata.tags"].to_list() == [["a"], None, None, []]
    assert polars_frame.filter(pl.col("metadata.year") > 2020)["id"].to_list() == ["id3"]
    # a segment whose fallback is unused (type null) and whose ints are int8 reads as well
    other = tmp_path / "other"
    other.mkdir()
    path = _reopened(_segment([{"year": 1, "ok": True}, {"year": -3}]), other).path
    assert pd.read_feather(path)["metadata.year"].tolist() == [1, -3]
    polars_frame = pl.read_ipc(path)
    assert polars_frame.schema["metadata.year"] == pl.Int8
    assert polars_frame["metadata"].to_list() == [None, None]


# -- narrow integer columns and the null fallback through files and merges ---------------------
def _int_segment(name: str, values: list, start: int = 0) -> Segment:
    n = len(values)
    vectors = np.full((n, 4), start, dtype=np.float32)
    ids = [f"id{start + i}" for i in range(n)]
    metadatas = [{"n": v, "s": "x"} if v is not None else {"s": "x"} for v in values]
    return build_segment(name, ids, ["t"] * n, metadatas, vectors, None)


def _no_reencoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a merge that reads metadata back and encodes it again fail the test."""

    def refuse(_metadatas: object) -> None:
        msg = "the merge re-encoded the metadata instead of concatenating"
        raise AssertionError(msg)

    monkeypatch.setattr(segment_module, "encode_metadata", refuse)


def test_a_segment_file_shows_narrow_int_columns_and_a_null_fallback(tmp_path) -> None:
    segment = _reopened(_int_segment("s", [1, -129, None, 2**31]), tmp_path)
    table = ipc.open_file(segment.path).read_all()
    assert table.column_names == ["id", "text", "metadata.n", "metadata.s", "metadata", "vector"]
    assert table.schema.field("metadata.n").type == pa.int64()  # 2**31 needs int64
    assert table.column("metadata.n").to_pylist() == [1, -129, None, 2**31]
    assert table.schema.field("metadata").type == pa.null()
    assert segment.metadata() == [
        {"n": 1, "s": "x"},
        {"n": -129, "s": "x"},
        {"s": "x"},
        {"n": 2**31, "s": "x"},
    ]
    assert segment.metadata(np.array([1, 2])) == [{"n": -129, "s": "x"}, {"s": "x"}]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_merging_int_columns_of_different_widths_widens_them(
    order: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [[1, -128, 127], [300, None, -129], [2**40, 5]]
    parts = [_int_segment(f"p{i}", values[i], start=10 * i) for i in order]
    assert [str(p.table.schema.field("metadata.n").type) for p in parts] == [
        ["int8", "int16", "int64"][i] for i in order
    ]
    _no_reencoding(monkeypatch)
    merged = merge_segments("m", parts)
    assert merged.table.schema.field("metadata.n").type == pa.int64()
    assert merged.table.schema.field("metadata").type == pa.null()
    assert merged.metadata() == [m for p in parts for m in p.metadata()]
    assert merged.ids.to_pylist() == [i for p in parts for i in p.ids.to_pylist()]


def test_a_merge_narrows_to_the_values_it_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    # Written int64 before narrowing, or wider than the merged rows need: narrowed on the way.
    wide = _int_segment("w", [1, 2])
    index = wide.table.schema.get_field_index("metadata.n")
    wide = Segment("w", wide.table.set_column(index, pa.field("metadata.n", pa.int64()),
                                              wide.table.column(index).cast(pa.int64())))  # fmt: skip
    narrow = _int_segment("n", [100, -100], start=2)
    _no_reencoding(monkeypatch)
    merged = merge_segments("m", [wide, narrow])
    assert merged.table.schema.field("metadata.n").type == pa.int8()
    assert [m["n"] for m in merged.metadata()] == [1, 2, 100, -100]


def test_merging_with_and_without_a_fallback_column(monkeypatch: pytest.MonkeyPatch) -> None:
    with_fallback = build_segment(
        "f", ["a", "b"], ["t", "t"], [{"n": 1}, {"n": None}], np.zeros((2, 4), np.float32), None
    )
    without = _int_segment("w", [1000], start=2)
    assert with_fallback.table.schema.field("metadata").type == pa.string()
    _no_reencoding(monkeypatch)
    merged = merge_segments("m", [without, with_fallback])
    assert merged.table.schema.field("metadata").type == pa.string()
    assert merged.table.schema.field("metadata.n").type == pa.int16()
    assert merged.metadata() == [{"n": 1000, "s": "x"}, {"n": 1}, {"n": None}]
    # the rows that needed the fallback are gone (as after deletions): the fallback becomes null
    assert (
        merge_segments("m2", [Segment("f", with_fallback.table.slice(0, 1)), without])
        .table.schema.field("metadata")
        .type
        == pa.null()
    )


def test_a_string_fallback_with_no_values_from_an_older_segment_merges_to_null(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = _int_segment("o", [1, 2])
    index = old.table.schema.get_field_index("metadata")
    old = Segment(
        "o", old.table.set_column(index, pa.field("metadata", pa.string()), pa.nulls(2, pa.string()))
    )
    assert old.metadata() == [{"n": 1, "s": "x"}, {"n": 2, "s": "x"}]  # an older file still reads
    new = _int_segment("n", [3], start=2)
    _no_reencoding(monkeypatch)
    merged = merge_segments("m", [old, new])
    assert merged.table.schema.field("metadata").type == pa.null()
    assert [m["n"] for m in merged.metadata()] == [1, 2, 3]


def test_an_int_and_a_float_column_for_one_key_merge_by_reencoding() -> None:
    ints = _int_segment("i", [1, 2])
    floats = build_segment("f", ["f0"], ["t"], [{"n": 0.5, "s": "x"}], np.zeros((1, 4), np.float32), None)
    merged = merge_segments("m", [ints, floats])
    assert [m["n"] for m in merged.metadata()] == [1, 2, 0.5]
    assert [type(m["n"]) for m in merged.metadata()] == [int, int, float]


@pytest.mark.parametrize(
    ("fallback", "readable"),
    [(pa.nulls(2), True), (pa.nulls(2, pa.string()), True), (pa.nulls(2, pa.int8()), False)],
)
def test_a_store_reads_a_null_or_string_fallback_and_refuses_another_type(
    fallback: pa.Array, readable: bool, tmp_path
) -> None:
    segment = _int_segment("s", [1, 2])
    index = segment.table.schema.get_field_index("metadata")
    table = segment.table.set_column(index, pa.field("metadata", fallback.type), fallback)
    (tmp_path / "_segments").mkdir()
    directory = StoreDirectory(tmp_path)
    entry = SegmentEntry("s", 2, directory.write_segment(Segment("s", table)), has_codes=False)
    if readable:
        read = directory.read_segment(entry, 4, None)
        assert read.metadata() == [{"n": 1, "s": "x"}, {"n": 2, "s": "x"}]
    else:
        with pytest.raises(CorruptStoreError, match="metadata: int8"):
            directory.read_segment(entry, 4, None)


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


def _mixed(i: int) -> dict:
    """Typed columns, and values only the fallback holds (nested, None, mixed kinds, dates)."""
    out: dict = {"n": i, "tag": f"t{i % 3}", "text": "é" * (i % 4)}
    if i % 4 == 0:
        out["nested"] = {"a": [1, 2], "b": None}
    if i % 5 == 0:
        out["n"] = None
    if i % 7 == 0:
        out["day"] = dt.date(2024, 1, 1 + i % 28)
    return out


@pytest.mark.parametrize("by_value_max", [0, segment_module.RECORDS_BY_VALUE_MAX])
def test_records_read_value_by_value_or_by_take_give_the_same_rows(
    by_value_max, tmp_path, monkeypatch
) -> None:
    """A few rows are read value by value (strings from the buffers, metadata as scalars), more by
    one take: the same ids, texts and dicts, from a file, in memory, and from a sliced table."""
    monkeypatch.setattr(segment_module, "RECORDS_BY_VALUE_MAX", by_value_max)
    n = 40
    ids, texts = [f"id-{i}-ü" for i in range(n)], [f"text {i}" * (i % 3) for i in range(n)]
    rows = np.array([3, 0, 39, 20, 35, 14, 3, 28])
    for metadatas in ([_mixed(i) for i in range(n)], [{"n": i} for i in range(n)]):  # no fallback
        built = build_segment("s", ids, texts, metadatas, np.zeros((n, 4), np.float32), None)
        sliced = Segment("s", built.table.slice(5, 30))  # its arrays start at offset 5
        for segment, base in ((built, 0), (_reopened(built, tmp_path), 0), (sliced, 5)):
            picked = rows[rows < 30] if base else rows
            want = [base + int(r) for r in picked]
            got = segment.records(picked)
            assert got == ([ids[r] for r in want], [texts[r] for r in want], [metadatas[r] for r in want])
    assert built.records(np.array([], dtype=np.int64)) == ([], [], [])


def test_records_read_value_by_value_name_a_damaged_file(monkeypatch) -> None:
    segment = _segment([{"a": 1}, {"a": 2}, {"a": "x"}])  # row 2 keeps "a" in its fallback JSON
    fallback = pa.array([None, None, "{not json"], pa.string())
    index = segment.table.schema.get_field_index("metadata")
    damaged = Segment("s", segment.table.set_column(index, segment.table.schema.field(index), fallback))
    assert damaged.records(np.array([0]))[2] == [{"a": 1}]
    with pytest.raises(CorruptStoreError, match="segment s holds damaged metadata"):
        damaged.records(np.array([2]))
    text = segment.table.column("text").chunk(0)
    bad_utf8 = pa.Array.from_buffers(pa.string(), 3, [None, text.buffers()[1], pa.py_buffer(b"\xff\xfe\xfd")])
    index = segment.table.schema.get_field_index("text")
    unreadable = Segment("s", segment.table.set_column(index, segment.table.schema.field(index), bad_utf8))
    with pytest.raises(CorruptStoreError, match="segment s cannot be read"):
        unreadable.records(np.array([0]))


def test_records_of_damaged_format1_metadata_name_the_file() -> None:
    segment = _segment(['{"a": 1}', "[1, 2]"])
    assert segment.records(np.array([0]))[2] == [{"a": 1}]
    with pytest.raises(CorruptStoreError, match="segment s holds metadata that is not a JSON object"):
        segment.records(np.array([1]))


def test_a_merge_of_grouped_parts_takes_rows_in_list_order_with_every_column(tmp_path) -> None:
    """Parts grouped by list merge into rows grouped by list, each part's rows in order within a list.

    The merged rows are taken straight from the parts (one copy); every column must follow its
    row: ids, texts, metadata, vectors, codes and lists, also when the parts come from files.
    """
    rng = np.random.default_rng(7)
    parts, ids, vectors, codes, lists, metadatas = [], [], [], [], [], []
    for p, n in enumerate((37, 50, 23)):
        part_ids = [f"p{p}r{i}" for i in range(n)]
        part_vectors = rng.standard_normal((n, 8)).astype(np.float16)
        part_codes = rng.integers(0, 256, (n, 4), dtype=np.uint8)
        part_lists = rng.integers(0, 6, n).astype(np.uint16)
        part_metadatas = [{"part": p, "row": i, **({"odd": "yes"} if i % 2 else {})} for i in range(n)]
        segment = build_segment(
            f"s{p}", part_ids, [f"t{i}" for i in part_ids], part_metadatas, part_vectors, part_codes,
            lists=part_lists,
        )  # fmt: skip
        parts.append(_reopened(segment, tmp_path) if p == 1 else segment)  # one read from a file
        order = np.argsort(part_lists, kind="stable")  # as the part stores them: grouped
        ids += [part_ids[i] for i in order]
        vectors.append(part_vectors[order])
        codes.append(part_codes[order])
        lists.append(part_lists[order])
        metadatas += [part_metadatas[i] for i in order]
    all_lists = np.concatenate(lists)
    want = np.argsort(all_lists, kind="stable")  # list by list; parts, then rows, in order within one
    merged = merge_segments("m", parts)
    assert merged.ids.to_pylist() == [ids[i] for i in want]
    assert merged.table.column("text").to_pylist() == [f"t{ids[i]}" for i in want]
    assert merged.metadata() == [metadatas[i] for i in want]
    np.testing.assert_array_equal(merged.vectors, np.concatenate(vectors)[want])
    np.testing.assert_array_equal(merged.codes, np.concatenate(codes)[want])
    np.testing.assert_array_equal(merged.lists, all_lists[want])
    assert all(merged.table.column(c).num_chunks == 1 for c in merged.table.column_names)


# -- merges and regrouping gather vectors and codes from the parts (storage.rows) -----------------
def _arrow_take(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """What merges and regrouping took rows with before ``take_rows``: Arrow's own take."""
    return table.take(pa.array(np.asarray(rows, np.int64)))


def _int8_part(name: str, rng: np.random.Generator, n: int, start: int, big: bool) -> Segment:
    """A grouped part: int metadata (``big``: past int8), some rows needing the fallback, int8 vectors."""
    metadatas = [{"n": None} if i % 7 == 3 else {"n": (i * 1000 if big else i % 100), "s": "x"}
                 for i in range(start, start + n)]  # fmt: skip
    ranges = {INT8_LO_KEY: bytes(32), INT8_SCALE_KEY: np.ones(8, np.float32).tobytes()}
    return build_segment(
        name, [f"id{i}" for i in range(start, start + n)], [f"t{i}" for i in range(start, start + n)],
        metadatas, rng.integers(0, 256, (n, 8), dtype=np.uint8), rng.integers(0, 256, (n, 5), dtype=np.uint8),
        vector_metadata=ranges, lists=rng.integers(0, 9, n).astype(np.uint16),
    )  # fmt: skip


def test_a_merge_gives_the_table_arrow_s_take_gave(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Typed metadata of different widths, a fallback, int8 ranges, lists, deletions, chunked parts."""
    rng = np.random.default_rng(17)
    from_file = _reopened(_int8_part("a", rng, 60, 0, big=False), tmp_path)
    chunked = _int8_part("b", rng, 45, 100, big=True).row_lists_table()  # a list value per row
    chunked = Segment("b", pa.concat_tables([chunked.slice(0, 10), chunked.slice(10, 20), chunked.slice(30)]))
    deleted = _int8_part("c", rng, 50, 200, big=False)
    live = np.ones(50, bool)
    live[[0, 7, 8, 31, 49]] = False  # as a store's merge reads a part with deletions
    deleted = Segment("c", deleted.row_lists_table().filter(pa.array(live)))
    parts = [from_file, chunked, deleted]
    assert chunked.table.column("vector").num_chunks == 3
    merged = merge_segments("m", parts)
    monkeypatch.setattr(segment_module, "take_rows", _arrow_take)
    want = merge_segments("m", parts)
    assert merged.table.equals(want.table, check_metadata=True)
    assert merged.table.schema.field("vector").metadata == from_file.vector_field.metadata
    assert merged.table.schema.field("metadata").type == pa.string()
    assert merged.rows == 60 + 45 + 45
    assert merged.grouped
    lists = merged.lists
    assert lists is not None
    assert np.all(np.diff(lists.astype(int)) >= 0)
    assert sorted(merged.ids.to_pylist()) == sorted(i for p in parts for i in p.ids.to_pylist())


def test_regrouping_a_chunked_table_gives_the_table_arrow_s_take_gave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(19)
    table = _int8_part("a", rng, 40, 0, big=True).row_lists_table().drop_columns(["partition"])
    table = pa.concat_tables([table.slice(0, 25), table.slice(25)])
    lists = rng.integers(0, 5, table.num_rows).astype(np.uint16)
    grouped, order = segment_module.grouped_table(table, lists)
    monkeypatch.setattr(segment_module, "take_rows", _arrow_take)
    want, want_order = segment_module.grouped_table(table, lists)
    assert grouped.equals(want, check_metadata=True)
    assert order is not None
    np.testing.assert_array_equal(order, want_order)
