"""take_rows: the table Arrow's ``Table.take`` gives, with vectors and codes gathered from each chunk."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from langchain_vq.arrays import int_array
from langchain_vq.storage import rows as rows_module
from langchain_vq.storage.rows import take_rows
from langchain_vq.storage.schema import INT8_LO_KEY, vector_field

DIM = 6


def _vectors(rng: np.random.Generator, n: int, precision: str) -> pa.Array:
    if precision == "int8":
        values = rng.integers(0, 256, (n, DIM), dtype=np.uint8)
    else:
        values = rng.standard_normal((n, DIM)).astype(precision)
    flat = pa.Array.from_buffers(
        vector_field(DIM, precision).type.value_type, values.size, [None, pa.py_buffer(values)]
    )
    return pa.FixedSizeListArray.from_arrays(flat, type=vector_field(DIM, precision).type)


def _table(rng: np.random.Generator, sizes: list[int], precision: str = "float16") -> pa.Table:
    """A table of ``sizes`` chunks: strings, an int metadata column, vectors (int8 ranges), codes."""
    metadata = {INT8_LO_KEY: b"\x00" * 4 * DIM} if precision == "int8" else None
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("metadata.year", pa.int16()),
            vector_field(DIM, precision, metadata),
            pa.field("codes", pa.binary(3), nullable=False),
        ],
        metadata={b"langchain_vq.segment_format": b"2"},
    )
    batches, start = [], 0
    for n in sizes:
        years = [None if i % 5 == 0 else 1990 + i for i in range(start, start + n)]
        codes = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        batches.append(
            pa.record_batch(
                [
                    pa.array([f"r{i}" for i in range(start, start + n)], pa.string()),
                    pa.array(years, pa.int16()),
                    _vectors(rng, n, precision),
                    pa.FixedSizeBinaryArray.from_buffers(pa.binary(3), n, [None, pa.py_buffer(codes)]),
                ],
                schema=schema,
            )
        )
        start += n
    return pa.Table.from_batches(batches, schema=schema)


def _arrow_take(table: pa.Table, rows: np.ndarray) -> pa.Table:
    return table.take(int_array(rows))


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
@pytest.mark.parametrize("sizes", [[40], [13, 0, 27, 9, 31], [1, 1, 1]])
@pytest.mark.parametrize("kind", ["grouped", "shuffled", "repeated", "empty"])
def test_take_rows_gives_arrow_s_take(precision: str, sizes: list[int], kind: str) -> None:
    rng = np.random.default_rng(3)
    table = _table(rng, sizes, precision)
    n = table.num_rows
    rows = {
        "grouped": np.argsort(rng.integers(0, 4, n), kind="stable"),  # long runs from each chunk
        "shuffled": rng.permutation(n),  # runs of about one row: the block path
        "repeated": rng.integers(0, n, 2 * n),
        "empty": np.empty(0, np.int64),
    }[kind]
    taken = take_rows(table, rows)
    assert taken.equals(_arrow_take(table, rows), check_metadata=True)
    assert taken.schema.field("vector").metadata == table.schema.field("vector").metadata
    assert all(column.num_chunks == 1 for column in taken.columns)


def test_both_gather_paths_give_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs taken one by one, or rows a chunk at a time through a block smaller than a chunk."""
    rng = np.random.default_rng(5)
    table = _table(rng, [50, 70, 30])
    rows = np.argsort(rng.integers(0, 8, table.num_rows), kind="stable")
    want = _arrow_take(table, rows)
    monkeypatch.setattr(rows_module, "_GATHER_BLOCK_ROWS", 7)
    for per_run in (1, 10**9):  # every order taken run by run; never
        monkeypatch.setattr(rows_module, "_ROWS_PER_RUN", per_run)
        assert take_rows(table, rows).equals(want, check_metadata=True)


def test_chunks_sliced_or_over_an_offset_child_are_read_from_their_own_rows() -> None:
    rng = np.random.default_rng(11)
    values = rng.standard_normal(30 * DIM).astype(np.float32)
    child = pa.Array.from_buffers(pa.float32(), values.size, [None, pa.py_buffer(values)]).slice(2 * DIM + 1)
    over_offset = pa.FixedSizeListArray.from_arrays(child.slice(0, 20 * DIM), DIM)  # child offset 13
    sliced = pa.FixedSizeListArray.from_arrays(
        pa.Array.from_buffers(pa.float32(), values.size, [None, pa.py_buffer(values)]), DIM
    ).slice(4, 17)
    column = pa.chunked_array([over_offset.slice(3, 12), sliced, over_offset], over_offset.type)
    table = pa.table({"vector": column})
    rows = rng.permutation(table.num_rows)
    assert take_rows(table, rows).equals(_arrow_take(table, rows))


def test_columns_with_nulls_are_taken_by_arrow() -> None:
    """A null vector or code has no bytes to gather: Arrow takes the column (nulls kept)."""
    vectors = pa.array([[1.0, 2.0], None, [5.0, 6.0]], pa.list_(pa.float32(), 2))
    codes = pa.array([b"ab", b"cd", None], pa.binary(2))
    table = pa.Table.from_batches([pa.record_batch([vectors, codes], names=["vector", "codes"])] * 2)
    rows = np.array([5, 1, 0, 4, 3])
    taken = take_rows(table, rows)
    assert taken.equals(_arrow_take(table, rows))
    assert taken.column("vector").null_count == 2  # rows 1 and 4
    assert taken.column("codes").null_count == 1  # row 5


@pytest.mark.parametrize("rows", [[0, 9], [-1, 2]])
def test_rows_outside_the_table_are_refused(rows: list[int]) -> None:
    table = _table(np.random.default_rng(0), [4, 5])
    with pytest.raises(IndexError, match=r"a table of 9 rows has rows 0 to 8"):
        take_rows(table, np.array(rows))
