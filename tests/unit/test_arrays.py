# ruff: noqa: DTZ001 - naive datetimes are among the values converted
"""Arrow <-> numpy helpers agree with pyarrow's own conversions, and a filtered search in a new
process never imports pandas (which pyarrow's conversions do, costing the first query 0.3-2 s)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path  # noqa: TC003 - used at run time by pytest's tmp_path annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from langchain_vq.arrays import bool_mask, int_array, int_values, scalar
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("offset", [0, 3, 8, 13])
def test_bool_mask_matches_pyarrow_with_nulls_and_offsets(offset: int) -> None:
    rng = np.random.default_rng(offset)
    values = [None if r < 0.2 else bool(r > 0.6) for r in rng.random(50)]
    array = pa.array(values, pa.bool_()).slice(offset)
    expected = [bool(v) for v in values[offset:]]  # null counts as False
    assert bool_mask(array).tolist() == expected
    assert bool_mask(pa.chunked_array([array, array])).tolist() == expected * 2
    assert bool_mask(pa.array([], pa.bool_())).size == 0


@pytest.mark.parametrize("arrow_type", [pa.int32(), pa.int64(), pa.uint64()])
def test_int_values_fill_nulls_and_respect_offsets(arrow_type: pa.DataType) -> None:
    array = pa.array([5, None, 7, 8, None, 10], arrow_type).slice(1)
    assert int_values(array, null=-1).tolist() == [-1, 7, 8, -1, 10]
    assert int_values(pa.array([1, 2], arrow_type)).dtype == np.int64
    rows = np.array([3, 1, 2], dtype=np.int64)
    assert int_array(rows).to_pylist() == [3, 1, 2]


def test_bool_array_round_trips_a_numpy_mask() -> None:
    from langchain_vq.arrays import bool_array

    mask = np.random.default_rng(0).random(37) > 0.5
    assert bool_array(mask).to_pylist() == mask.tolist()
    assert bool_mask(bool_array(mask)).tolist() == mask.tolist()


@pytest.mark.parametrize(
    ("value", "arrow_type"),
    [
        (True, pa.bool_()),
        (False, pa.bool_()),
        (2.5, pa.float64()),
        (-7.0, pa.float64()),
        ("héllo ☃", pa.string()),
        ("", pa.string()),
        (dt.date(1815, 12, 10), pa.date32()),
        (dt.date(2024, 2, 29), pa.date32()),
        (dt.datetime(2024, 2, 29, 23, 59, 59, 999999), pa.timestamp("us")),
        (dt.datetime(1969, 12, 31, 23, 0, 0, 1), pa.timestamp("us")),
        (dt.datetime(2024, 7, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))), pa.timestamp("us", tz="UTC")),
    ],
)
def test_scalar_equals_pyarrows_scalar(value: object, arrow_type: pa.DataType) -> None:
    ours = scalar(value, arrow_type)  # type: ignore[arg-type]
    assert ours.type == arrow_type
    assert ours.equals(pa.scalar(value, arrow_type))
    column = pa.array([value, None], arrow_type)
    assert pc.equal(column, ours).to_pylist() == [True, None]


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [
        ([True, None, False, True, True, False, None, True, False], pa.bool_()),
        ([1.5, None, -2.0, 1e300], pa.float64()),
        (["a", None, "", "ünï", None], pa.string()),
        ([dt.date(2000, 1, 1), None, dt.date(1900, 3, 1)], pa.date32()),
        ([dt.datetime(2001, 2, 3, 4, 5, 6, 7), None], pa.timestamp("us")),
        ([None, None], pa.string()),
        ([], pa.float64()),
    ],
)
def test_array_of_equals_pa_array(values: list[object], arrow_type: pa.DataType) -> None:
    from langchain_vq.arrays import array_of

    ours = array_of(values, arrow_type)  # type: ignore[arg-type]
    ours.validate(full=True)
    assert ours.equals(pa.array(values, arrow_type))
    assert ours.to_pylist() == values


def test_a_filtered_search_in_a_new_process_does_not_import_pandas(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import datetime as dt, sys
        import numpy as np
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_vq import VQVectorStore

        rng = np.random.default_rng(0)
        store = VQVectorStore(DeterministicFakeEmbedding(size=16), path={str(tmp_path / "s")!r})
        n = 600
        metas = [
            {{"bucket": i % 10, "tag": f"t{{i % 3}}", "day": dt.date(2024, 1, 1 + i % 28),
              "tags": ["a", "b"] if i % 2 else [], "mixed": i if i % 5 else "s", "maybe": None}}
            for i in range(n)
        ]
        store.add_embeddings([str(i) for i in range(n)], rng.standard_normal((n, 16)), metas,
                             [str(i) for i in range(n)])
        """
    )
    build = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                           cwd=REPO_ROOT, timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stderr
    search = textwrap.dedent(
        f"""
        import datetime as dt, sys
        import numpy as np
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_vq import VQVectorStore

        store = VQVectorStore(DeterministicFakeEmbedding(size=16), path={str(tmp_path / "s")!r})
        q = np.ones(16, dtype=np.float32)
        filters = [
            {{"bucket": 3}}, {{"tag": {{"$in": ["t1", "t2"]}}}}, {{"day": {{"$gte": dt.date(2024, 1, 20)}}}},
            {{"tags": {{"$contains": "a"}}}}, {{"mixed": {{"$lt": 100}}}}, {{"maybe": {{"$exists": False}}}},
            {{"$or": [{{"bucket": {{"$ne": 1}}}}, {{"tag": "t0"}}]}},
        ]
        found = [len(store.similarity_search_by_vector(q, k=5, filter=f)) for f in filters]
        store.get_by_ids(["1", "2"])
        print(found, "pandas" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", search], capture_output=True, text=True, check=False,
                            cwd=REPO_ROOT, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts, imported = result.stdout.split("]")
    assert counts.strip("[ ").split(", ") == ["5"] * 7
    assert imported.strip() == "False"
