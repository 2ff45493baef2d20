"""Rows grouped by list (format 3): every write keeps them grouped; row numbers stay right.

A partitioned store keeps each segment's rows sorted by list, with the list boundaries as the
runs of a run-end-encoded ``list`` column (``storage.schema``). These tests check each write
that groups rows (ingest, the first training, the crossing add, merges, compaction) against
what the rows must still be: their ids, deletions, upserts, filters and answers; that damaged
runs are refused; and that a store written by format-2 code (a ``partition`` value per row,
the committed fixture ``tests/fixtures/format2_partitioned``) opens, answers as it did, and is
regrouped by the next merge or compaction.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from langchain_vq import collection as collection_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.errors import CorruptStoreError, UnsupportedFormatError
from langchain_vq.filters import compile_filter
from langchain_vq.merge_policy import MergePolicy
from langchain_vq.quantization import _partitions
from langchain_vq.quantization.precision import float_rows
from langchain_vq.storage import Segment, StoreDirectory
from langchain_vq.storage import manifest as manifest_module
from langchain_vq.storage.schema import FORMAT_VERSION, LIST_COLUMN, LIST_FIELD, PARTITION_COLUMN
from langchain_vq.synthetic import synthetic_embeddings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "format2_partitioned"
DIM = 64
LISTS = 16
#: Every add merges everything into one segment; or never merges.
ALWAYS = MergePolicy(segments_per_tier=2, floor_rows=1 << 29, max_rows=1 << 30, max_deleted_fraction=1.0)
NEVER = MergePolicy(segments_per_tier=1 << 20, floor_rows=1, max_rows=1 << 30, max_deleted_fraction=1.0)


def _config(kind: str = "binary", partitions: object = LISTS) -> CollectionConfig:
    return CollectionConfig(metric="cosine", quantization=kind, quantizer_options={"partitions": partitions})


def _add(collection: Collection, x: np.ndarray, ids: list[int], text: str = "t") -> None:
    names = [f"r{i}" for i in ids]
    metadatas = [{"i": i, "even": i % 2 == 0} for i in ids]
    collection.add(names, [f"{text}{i}" for i in ids], metadatas, collection.check_vectors(x[ids]))


def _assert_grouped(collection: Collection) -> None:
    """Every segment with codes keeps its rows grouped by list, in runs, without a ``partition`` column."""
    views = collection.snapshot.views
    assert views
    for view in views:
        segment = view.segment
        assert PARTITION_COLUMN not in segment.table.column_names
        assert segment.grouped and segment.lists is not None
        assert np.all(np.diff(segment.lists.astype(np.int64)) >= 0)
        runs = segment.table.column(LIST_COLUMN).chunk(0)
        assert len(runs.run_ends) == np.unique(segment.lists).size  # one run per list present


def _live(collection: Collection) -> set[str]:
    return set(collection.live_ids())


def _self_hits(collection: Collection, x: np.ndarray, ids: list[int]) -> float:
    """Share of rows whose own vector finds them first (row numbers, ids and vectors agree)."""
    found = collection.search(x[ids], 1, rescore_multiplier=64)
    return float(np.mean([rows[0].id == f"r{i}" for rows, i in zip(found, ids, strict=True)]))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return synthetic_embeddings(4000, DIM, seed=3)


@pytest.mark.parametrize("kind", ["binary", "pq"])
def test_ingest_and_merges_group_rows_and_answer_as_before(
    kind: str, x: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(collection_module, "MERGE_POLICY", NEVER)
    several = Collection(_config(kind), tmp_path / "several")
    for start in range(0, 3000, 1000):
        _add(several, x, list(range(start, start + 1000)))
    _assert_grouped(several)
    assert len(several.snapshot.views) == 3
    monkeypatch.setattr(collection_module, "MERGE_POLICY", ALWAYS)
    _add(several, x, [3000])  # merges all four segments, regrouped as one
    assert len(several.snapshot.views) == 1
    _assert_grouped(several)
    # The merged segment holds every row once, each with its vector and its metadata.
    segment = several.snapshot.views[0].segment
    rows = np.array([int(i[1:]) for i in segment.ids.to_pylist()])
    assert sorted(rows.tolist()) == list(range(3001))
    np.testing.assert_allclose(
        float_rows(segment), x[rows] / np.linalg.norm(x[rows], axis=1, keepdims=True), atol=1e-3
    )
    assert [m["i"] for m in segment.metadata()] == rows.tolist()
    assert _self_hits(several, x, list(range(0, 3001, 97))) == 1.0
    reopened = Collection(CollectionConfig(), tmp_path / "several")
    assert reopened.verify() == []
    # Only the partitioned scan reads grouped codes, packing lists from row-major ones: they are
    # not stored in the full scan's block layout (which fast-scan stores keep otherwise).
    assert all(not v.segment.stored_codes.blocked for v in reopened.snapshot.views)
    assert (
        reopened.snapshot.manifest is not None and reopened.snapshot.manifest.format_version == FORMAT_VERSION
    )
    assert [r.text for r in reopened.get(["r5", "r2999", "r3000"])] == ["t5", "t2999", "t3000"]


def test_segments_without_lists_keep_the_block_layout(x: np.ndarray, tmp_path: Path) -> None:
    collection = Collection(_config(partitions=0), tmp_path / "s")
    _add(collection, x, list(range(1000)))
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    segment = reopened.snapshot.views[0].segment
    assert segment.stored_codes.blocked and not segment.grouped and segment.lists is None


def test_the_first_training_regroups_rows_and_keeps_their_deletions(x: np.ndarray, tmp_path: Path) -> None:
    # Below 16 x 39 rows: no quantizer yet. Deleted rows then move when the training add groups
    # the old segment by list: its deletions must follow them (collection._encoded_view).
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, list(range(500)))
    gone = [f"r{i}" for i in range(0, 500, 7)]
    assert collection.delete(gone) == len(gone)
    _add(collection, x, list(range(500, 1500)))
    assert collection.snapshot.quantizer is not None and collection.snapshot.quantizer.partitioned
    _assert_grouped(collection)
    first = collection.snapshot.views[0]
    assert first.deleted.size == len(gone)  # the old segment, rewritten grouped, its deletions moved
    assert first.segment.lists is not None and np.any(np.diff(first.segment.lists.astype(np.int64)) != 0)
    want = {f"r{i}" for i in range(1500)} - set(gone)
    assert _live(collection) == want
    assert collection.get(gone) == []
    assert _self_hits(collection, x, [i for i in range(0, 1500, 11) if f"r{i}" in want]) == 1.0
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    assert _live(reopened) == want
    assert reopened.verify() == []


def test_the_crossing_add_regroups_with_deletions_and_upserts(
    x: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_partitions, "AUTO_PARTITION_ROWS", 3000)
    monkeypatch.setattr(_partitions, "AUTO_PARTITIONS", LISTS)
    monkeypatch.setattr(collection_module, "MERGE_POLICY", NEVER)
    collection = Collection(_config(partitions="auto"), tmp_path / "s")
    for start in range(0, 2000, 1000):
        _add(collection, x, list(range(start, start + 1000)))
    assert not collection.snapshot.quantizer.partitioned
    gone = [f"r{i}" for i in range(3, 2000, 13)]
    collection.delete(gone)
    # The crossing add upserts rows of both old segments: its rewrite drops them with the deleted.
    upserts = [10, 1500]
    collection.add(
        [f"r{i}" for i in upserts],
        ["new"] * 2,
        [{"i": -1, "even": True}] * 2,
        collection.check_vectors(x[[3990, 3991]]),
    )
    _add(collection, x, list(range(2000, 3200)))
    assert collection.snapshot.quantizer.partitioned
    _assert_grouped(collection)
    assert all(v.deleted.size == 0 for v in collection.snapshot.views[:2])  # dropped by the rewrite
    want = ({f"r{i}" for i in range(3200)} - set(gone)) | {"r10", "r1500"}
    assert _live(collection) == want and collection.snapshot.live_rows == len(want)
    got = collection.get(["r10", "r1500", "r11", gone[0]])
    assert [(r.id, r.text, r.metadata) for r in got] == [
        ("r10", "new", {"i": -1, "even": True}),
        ("r1500", "new", {"i": -1, "even": True}),
        ("r11", "t11", {"i": 11, "even": False}),
    ]
    found = collection.search(x[[3990, 3991]], 1, rescore_multiplier=64)
    assert [rows[0].id for rows in found] == ["r10", "r1500"]  # upserted vectors, found at their new rows
    odd = compile_filter({"even": False})
    for rows in collection.search(x[:20], 10, rescore_multiplier=8, filter=odd):
        assert rows and all(r.metadata["i"] % 2 == 1 for r in rows)
    assert (
        _self_hits(collection, x, [i for i in range(0, 3200, 29) if f"r{i}" in want and i not in upserts])
        == 1.0
    )


def test_compaction_and_a_codes_only_merge_regroup(x: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collection_module, "MERGE_POLICY", NEVER)
    monkeypatch.setattr(collection_module, "SEGMENT_MAX_ROWS", 700)  # compaction cuts the merged rows
    for precision in ("float32", "none"):
        config = replace(_config(), rescore_precision=precision)
        collection = Collection(config)
        for start in range(0, 2000, 1000):
            _add(collection, x, list(range(start, start + 1000)))
        collection.delete([f"r{i}" for i in range(0, 2000, 5)])
        collection.compact()
        assert [v.segment.rows for v in collection.snapshot.views] == [700, 700, 200]
        _assert_grouped(collection)
        assert _live(collection) == {f"r{i}" for i in range(2000) if i % 5}
        assert _self_hits(collection, x, [i for i in range(1, 2000, 19) if i % 5]) >= 0.95


def _old_store(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "store"
    shutil.copytree(FIXTURE / "store", path)
    return path, json.loads((FIXTURE / "expected.json").read_text())


def _rows(found: list, with_score: bool = True) -> list[list[object]]:
    return [[r.id, r.text, r.metadata, *([float(r.score)] if with_score else [])] for r in found]


def _near(got: list[list[list[object]]], want: list[list[list[object]]]) -> None:
    """The same answers but where rows tied in the kernel's quantized scores are taken in another
    row order (test_collection_joined_scan): at most one row of a query, in a few queries."""
    differ = [(g, w) for g, w in zip(got, want, strict=True) if g != w]
    assert len(differ) <= max(1, len(got) // 8)
    for g, w in differ:
        assert len({r[0] for r in g} & {r[0] for r in w}) >= len(w) - 1


def test_a_format2_store_opens_and_answers_as_it_did(tmp_path: Path) -> None:
    path, want = _old_store(tmp_path)
    collection = Collection(CollectionConfig(), path)
    views = collection.snapshot.views
    assert [[v.segment.rows, int(v.deleted.size)] for v in views] == want["segments"]
    assert all(PARTITION_COLUMN in v.segment.table.column_names and not v.segment.grouped for v in views)
    queries = np.array(want["queries"], np.float32)
    assert _rows_of_all(collection.search(queries, 10, rescore_multiplier=4)) == want["search"]
    where = compile_filter(want["filter"])
    assert (
        _rows_of_all(collection.search(queries, 10, rescore_multiplier=4, filter=where)) == want["filtered"]
    )
    assert _rows(collection.get(["r0", "r1", "r7", "r250", "r777", "r1499", "missing"]), False) == want["get"]
    assert collection.verify() == []


def _rows_of_all(found: list[list]) -> list[list[list[object]]]:
    return [_rows(rows) for rows in found]


def test_a_merge_regroups_format2_segments_and_keeps_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, want = _old_store(tmp_path)
    collection = Collection(CollectionConfig(), path)
    # Upsert r7 as it is (its own vector, text and metadata): the rows stay what they were, and
    # the add merges every segment (the old ones' rows regrouped, their deleted rows dropped).
    view = next(v for v in collection.snapshot.views if v.segment.rows_of_ids(pa.array(["r7"])).size)
    row = view.segment.rows_of_ids(pa.array(["r7"]))
    monkeypatch.setattr(collection_module, "MERGE_POLICY", ALWAYS)
    collection.add(["r7"], ["text r7"], [{"i": 7, "parity": "odd"}], float_rows(view.segment, row))
    assert len(collection.snapshot.views) == 1
    _assert_grouped(collection)
    assert collection.snapshot.live_rows == want["live_rows"]
    assert (
        collection.snapshot.manifest is not None
        and collection.snapshot.manifest.format_version == FORMAT_VERSION
    )
    queries = np.array(want["queries"], np.float32)
    _near(_rows_of_all(collection.search(queries, 10, rescore_multiplier=4)), want["search"])
    where = compile_filter(want["filter"])
    _near(_rows_of_all(collection.search(queries, 10, rescore_multiplier=4, filter=where)), want["filtered"])
    assert _rows(collection.get(["r0", "r1", "r7", "r250", "r777", "r1499", "missing"]), False) == want["get"]
    reopened = Collection(CollectionConfig(), path)
    assert reopened.verify() == [] and reopened.snapshot.live_rows == want["live_rows"]


def test_compaction_rewrites_format2_segments_grouped(tmp_path: Path) -> None:
    path, want = _old_store(tmp_path)
    collection = Collection(CollectionConfig(), path)
    collection.compact()
    _assert_grouped(collection)
    assert collection.snapshot.live_rows == want["live_rows"]
    assert _rows(collection.get(["r0", "r1", "r7", "r250", "r777", "r1499", "missing"]), False) == want["get"]
    # Retrained: other codes, so not the same answers; as good against exact search.
    queries = np.array(want["queries"], np.float32)
    found = collection.search(queries, 10, rescore_multiplier=4)
    truth = _exact(collection, queries)
    recall_now = np.mean([len({r.id for r in got} & t) / 10 for got, t in zip(found, truth, strict=True)])
    recall_then = np.mean(
        [len({r[0] for r in got} & t) / 10 for got, t in zip(want["search"], truth, strict=True)]
    )
    assert recall_now >= recall_then - 0.05


def _exact(collection: Collection, queries: np.ndarray) -> list[set[str]]:
    """Each query's exact top 10 ids by cosine over the live rows' stored vectors."""
    ids, vectors = [], []
    for view in collection.snapshot.views:
        rows = np.arange(view.segment.rows) if view.live_mask is None else np.flatnonzero(view.live_mask)
        ids += [view.segment.ids[int(r)].as_py() for r in rows]
        vectors.append(float_rows(view.segment, rows))
    x = np.concatenate(vectors)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    top = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    return [{ids[i] for i in row} for row in top]


def _with_segment_table(path: Path, table: pa.Table) -> None:
    """Commit a version whose only segment holds ``table`` (file and manifest agree: no checksum error)."""
    directory = StoreDirectory(path)
    old = directory.read_manifest()
    entry = old.segments[0]
    data = directory._write_table(f"_segments/{entry.name}-bad.arrow", table)
    bad = replace(entry, name=f"{entry.name}-bad", data=data, deleted=0, deletions=None)
    directory.commit(old.next(segments=(bad,)))


def _damaged(table: pa.Table, ends: list[int], values: list[int]) -> pa.Table:
    children = [pa.array(ends, pa.int32()), pa.array(values, pa.uint16())]
    runs = pa.Array.from_buffers(LIST_FIELD.type, table.num_rows, [None], children=children)
    return table.set_column(table.schema.get_field_index(LIST_COLUMN), LIST_FIELD, runs)


@pytest.mark.parametrize(
    "damage",
    [
        lambda n: ([n // 2, n], [3, 1]),  # lists not increasing: rows not grouped
        lambda n: ([n // 2, n], [2, 2]),  # one list in two runs
    ],
)
def test_damaged_list_runs_are_refused(x: np.ndarray, tmp_path: Path, damage) -> None:
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, list(range(1000)))
    table = collection.snapshot.views[0].segment.row_major_table()
    ends, values = damage(table.num_rows)
    _with_segment_table(tmp_path / "s", _damaged(table, ends, values))
    with pytest.raises(CorruptStoreError, match="damaged list column"):
        Collection(CollectionConfig(), tmp_path / "s")


def test_run_ends_damaged_in_the_file_are_refused(x: np.ndarray, tmp_path: Path) -> None:
    # Arrow's writer cuts runs to the rows, so the file is damaged byte by byte, as bit rot would.
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, list(range(1000)))
    segment = collection.snapshot.views[0].segment
    ends = segment.table.column(LIST_COLUMN).chunk(0).run_ends.to_numpy().astype("<i4")
    path = Path(segment.path or "")
    data = bytearray(path.read_bytes())
    at = data.find(ends.tobytes())
    assert at > 0 and data.find(ends.tobytes(), at + 1) < 0  # found once
    data[at + 4 * (ends.size - 1) : at + 4 * ends.size] = np.array([1005], "<i4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="damaged list column"):
        Collection(CollectionConfig(), tmp_path / "s")
    assert any(
        "checksum" in problem
        for problem in StoreDirectory(tmp_path / "s").verify(StoreDirectory(tmp_path / "s").read_manifest())
    )


def test_a_format2_reader_refuses_a_format3_store(
    x: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A format-2 reader would find an unknown column and call the segment damaged; the manifest's
    # version makes it say instead that the store needs a newer library.
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, list(range(1000)))
    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 2)
    with pytest.raises(UnsupportedFormatError, match="Upgrade"):
        StoreDirectory(tmp_path / "s").read_manifest()


def test_segment_slices_and_row_tables_keep_each_rows_list(x: np.ndarray) -> None:
    collection = Collection(_config())
    _add(collection, x, list(range(1000)))
    segment = collection.snapshot.views[0].segment
    lists = segment.lists
    assert lists is not None
    part = segment.sliced("p", 130, 400)
    assert part.grouped and np.array_equal(part.lists, lists[130:530])
    assert part.ids.to_pylist() == segment.ids.to_pylist()[130:530]
    rows = segment.row_lists_table()
    assert LIST_COLUMN not in rows.column_names
    assert np.array_equal(rows.column(PARTITION_COLUMN).to_numpy(), lists)
    assert Segment("r", rows).lists is not None


def test_a_grouped_store_opens_and_answers_in_a_new_process_without_pandas(
    x: np.ndarray, tmp_path: Path
) -> None:
    # Reading the runs with Arrow's to_numpy imported pandas: opening a 200k store took 0.5 s.
    collection = Collection(_config(), tmp_path / "s")
    _add(collection, x, list(range(1000)))
    want = [r.id for r in collection.search(x[:1], 5, rescore_multiplier=8)[0]]
    script = (
        "import sys, numpy as np\n"
        "from langchain_vq.collection import Collection, CollectionConfig\n"
        "from langchain_vq.synthetic import synthetic_embeddings\n"
        "c = Collection(CollectionConfig(), sys.argv[1])\n"
        "x = synthetic_embeddings(4000, 64, seed=3)\n"
        "found = c.search(x[:1], 5, rescore_multiplier=8)[0]\n"
        "print(' '.join(r.id for r in found), 'pandas' in sys.modules)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *ids, imported = result.stdout.split()
    assert ids == want and imported == "False"


@pytest.mark.parametrize("kind", ["binary", "pq"])
def test_grouped_and_format2_layouts_of_the_same_rows_answer_alike(kind: str, x: np.ndarray) -> None:
    """The same rows, codes and quantizer, laid out both ways: format 2 (insertion order, a
    ``partition`` per row, blocked codes as the format-2 writer kept them) and grouped."""
    collection = Collection(_config(kind))
    for start in range(0, 3000, 1000):
        _add(collection, x, list(range(start, start + 1000)))
    grouped = list(collection.snapshot.views)
    old = []
    for view in grouped:
        table = view.segment.row_lists_table()
        order = np.argsort([int(i[1:]) for i in view.segment.ids.to_pylist()], kind="stable")
        segment = Segment(view.segment.name, table.take(pa.array(order)))
        assert not segment.grouped and np.any(np.diff(segment.lists.astype(np.int64)) < 0)
        old.append(collection_module.SegmentView(Segment(segment.name, segment.blocked_table())))
    quantizer = collection.snapshot.quantizer
    queries = synthetic_embeddings(40, DIM, seed=9)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    unit = x[:3000] / np.linalg.norm(x[:3000], axis=1, keepdims=True)
    truth = [set(row.tolist()) for row in np.argsort(-(queries @ unit.T), axis=1)[:, :10]]
    recalls = {}
    for name, views in (("old", old), ("grouped", grouped)):
        hits = collection_module.search_segments(
            views, queries, 10, kind="ip", quantizer=quantizer, rescore_multiplier=8
        )
        ids = [
            [int(views[s].segment.ids[int(r)].as_py()[1:]) for s, r in zip(seg, rows, strict=True) if s >= 0]
            for seg, rows in zip(hits.segments.tolist(), hits.rows.tolist(), strict=True)
        ]
        recalls[name] = (ids, np.mean([len(set(i) & t) / 10 for i, t in zip(ids, truth, strict=True)]))
    (old_ids, old_recall), (new_ids, new_recall) = recalls["old"], recalls["grouped"]
    assert new_recall == pytest.approx(old_recall, abs=0.01)
    assert new_recall >= 0.85  # a floor; equal recall is the check
    _near([[[i] for i in q] for q in new_ids], [[[i] for i in q] for q in old_ids])


@pytest.mark.parametrize("kind", ["binary", "pq"])
@pytest.mark.parametrize("precision", ["float16", "int8", "float32"])
def test_an_add_encodes_its_grouped_rows_as_the_rows_encoded_at_once(
    x: np.ndarray, kind: str, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows encoded a block at a time in list order store what encoding them all, then grouping, gives."""
    monkeypatch.setattr(collection_module, "MERGE_POLICY", NEVER)
    monkeypatch.setattr(collection_module, "_ENCODE_BLOCK_ROWS", 97)  # blocks end mid-list, a short last one
    config = replace(_config(kind), rescore_precision=precision)
    collection = Collection(config)
    _add(collection, x, list(range(2000)))  # trains the quantizer and the lists
    _add(collection, x, list(range(2000, 3000)))  # an add of its own: one new grouped segment
    snapshot = collection.snapshot
    quantizer, codec = snapshot.quantizer, snapshot.codec
    assert quantizer is not None and codec is not None and quantizer.partitioned
    segment = snapshot.views[-1].segment
    floats = collection.check_vectors(x[2000:3000])
    lists = quantizer.assign(floats)
    order = np.argsort(lists, kind="stable")
    assert segment.ids.to_pylist() == [f"r{2000 + i}" for i in order]
    np.testing.assert_array_equal(segment.lists, lists[order])
    np.testing.assert_array_equal(segment.codes, quantizer.encode(floats)[order])
    np.testing.assert_array_equal(segment.vectors, codec.encode(floats)[order])
    assert segment.precision == precision
