"""Fast-scan stores keep their codes on disk in the kernel's block layout; others row by row.

A store reopened in a new ``Collection`` searches the blocked files without repacking them; its
answers must be exactly those of the process that wrote them (which searches its in-memory,
row-major codes), through every path that reads codes: the full scan, a dense filter, a
selective filter (rows gathered from the blocks), merges of blocked files, deletes and a
codes-only compaction.
"""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 - used at run time by pytest's tmp_path annotations

import numpy as np
import pytest
from pyarrow import ipc

from langchain_vq.code_blocks import BLOCKED, LAYOUT_KEY
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.filters import compile_filter
from tests.conftest import clustered_vectors

DIM = 64
N = 3000
#: No filter; a dense one (half the rows: over-fetched from the full scan); a selective one (a
#: tenth: the kept rows' codes gathered from the blocks).
FILTERS = [None, {"even": True}, {"bucket": {"$lt": 10}}]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered_vectors(N, DIM, seed=0)
    q = clustered_vectors(50, DIM, seed=1)
    return x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)


def _add(collection: Collection, x: np.ndarray, rows: np.ndarray) -> None:
    collection.add(
        [str(i) for i in rows],
        [f"t{i}" for i in rows],
        [{"even": bool(i % 2 == 0), "bucket": int(i % 100)} for i in rows],
        x[rows],
    )


def _answers(collection: Collection, q: np.ndarray) -> list[list[list[tuple[str, float]]]]:
    rescore = collection.rescore_precision != "none"
    return [
        [
            [(r.id, r.score) for r in found]
            for found in collection.search(
                q, 10, rescore=rescore, rescore_multiplier=4, filter=compile_filter(f)
            )
        ]
        for f in FILTERS
    ]


def _layouts(path: Path) -> set[bytes | None]:
    layouts = set()
    for file in (path / "_segments").iterdir():
        field = ipc.open_file(file).schema.field("codes")
        layouts.add((field.metadata or {}).get(LAYOUT_KEY))
    return layouts


def _codes_match_encoding(collection: Collection, x: np.ndarray) -> None:
    """Every segment's codes, read row by row, are its rows' vectors encoded by the quantizer."""
    snapshot = collection.snapshot
    assert snapshot.quantizer is not None
    for view in snapshot.views:
        rows = np.array([int(i) for i in view.segment.ids.to_pylist()])
        expected = snapshot.quantizer.encode(x[rows])
        stored = view.segment.stored_codes
        assert stored is not None
        shuffled = np.random.default_rng(0).permutation(len(rows))
        assert np.array_equal(stored.take(shuffled), expected[shuffled])  # gathered from blocks
        assert np.array_equal(view.segment.codes, expected)  # unpacked whole


@pytest.mark.parametrize(
    ("quantization", "options", "blocked"),
    [
        ("binary", None, True),
        ("pq", None, True),
        ("binary", {"fast_scan": False}, False),
        ("int8", None, False),
    ],
)
def test_reopened_store_answers_as_the_writer(quantization, options, blocked, data, tmp_path: Path) -> None:
    x, q = data
    config = CollectionConfig(quantization=quantization, quantizer_options=options)
    writer = Collection(config, tmp_path / "store")
    for part in np.array_split(np.arange(N), 3):
        _add(writer, x, part)
    assert _layouts(tmp_path / "store") == ({BLOCKED} if blocked else {None})
    reopened = Collection(config, tmp_path / "store")
    assert _answers(reopened, q) == _answers(writer, q)
    _codes_match_encoding(reopened, x)


@pytest.mark.parametrize("precision", ["float16", "none"])
def test_merges_deletes_and_compaction_of_blocked_files(precision, data, tmp_path: Path) -> None:
    x, q = data
    config = CollectionConfig(quantization="binary", rescore_precision=precision)
    path = tmp_path / "store"
    parts = np.array_split(np.arange(N), 10)
    for part in parts:  # a new Collection per add, as a new process: merges read blocked files
        _add(Collection(config, path), x, part)
    writer = Collection(config, path)
    assert len(writer.snapshot.views) < len(parts)  # the tiered policy merged segments
    writer.delete([str(i) for i in range(0, N, 7)])  # merges then filter out deleted rows
    _add(writer, x, np.arange(0, N, 7))
    assert _layouts(path) == {BLOCKED}
    reopened = Collection(config, path)
    _codes_match_encoding(reopened, x)
    assert _answers(reopened, q) == _answers(writer, q)
    if precision == "none":  # codes only: compaction merges the codes it has
        reopened.compact()
        assert len(reopened.snapshot.views) == 1
        compacted = Collection(config, path)
        _codes_match_encoding(compacted, x)
        assert _answers(compacted, q) == _answers(reopened, q)
