# ruff: noqa: DTZ001 - naive datetimes are among the values stored
"""Format 2 through the store: metadata comes back exactly as added, across segments, merges,
compaction, reopening in a new process, and the upgrade of a format-1 store."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path  # noqa: TC003 - used at run time by pytest's tmp_path annotations
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import InvalidInputError, VQVectorStore
from langchain_vq.collection import ROW_KEY_SHIFT, Collection, CollectionConfig, Snapshot
from langchain_vq.storage import segment as segment_module
from langchain_vq.storage.metadata import encode_metadata
from langchain_vq.storage.schema import FORMAT_VERSION
from tests.conftest import REPO_ROOT, clustered_vectors

DIM = 16
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "format1"

#: One value of every kind the store keeps, and keys whose type differs across rows.
KINDS: list[dict[str, Any]] = [
    {"int": 1, "float": 0.5, "bool": True, "str": "a", "none": None, "mixed": 1},
    {"naive": dt.datetime(2024, 2, 29, 23, 59, 59, 999999), "mixed": "one"},
    {"utc": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
     "paris": dt.datetime(2024, 7, 1, tzinfo=ZoneInfo("Europe/Paris"))},
    {"date": dt.date(1999, 12, 31), "mixed": dt.date(2000, 1, 1)},
    {"list": [1, 2, 3], "strs": ["x", "y"], "empty": [], "mixed": [1, "a", None]},
    {"nested": {"author": {"name": "Ada", "born": dt.date(1815, 12, 10)}, "tags": ["m"]}, "mixed": {"a": 1}},
    {},
    {"$dict": {"$date": "not a date"}, "big": 1 << 80, "mixed": None},
]  # fmt: skip


def canonical(value: Any) -> Any:
    """JSON-able form that keeps Python types apart (1 vs 1.0 vs True, date vs datetime, tz)."""
    if isinstance(value, dict):
        return {"dict": {k: canonical(v) for k, v in sorted(value.items())}}
    if isinstance(value, list):
        return {"list": [canonical(v) for v in value]}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat(), "offset": str(value.utcoffset())}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    return {type(value).__name__: value}


def _store(path: Path | None = None) -> VQVectorStore:
    return VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path)


def _add(store: VQVectorStore, metadatas: list[dict[str, Any]], start: int = 0) -> list[str]:
    ids = [f"r{start + i}" for i in range(len(metadatas))]
    vectors = clustered_vectors(len(ids), DIM, seed=start)
    return store.add_embeddings([f"text {i}" for i in ids], vectors, metadatas, ids)


def test_metadata_round_trips_exactly_through_get_and_search(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    ids = _add(store, KINDS * 20)  # 160 rows: the quantizer trains, search scans codes
    got = {d.id: d.metadata for d in store.get_by_ids(ids)}
    assert [canonical(got[i]) for i in ids] == [canonical(m) for m in KINDS * 20]
    found = store.similarity_search_by_vector(clustered_vectors(1, DIM, seed=0)[0], k=10)
    assert all(canonical(d.metadata) == canonical(KINDS[int(d.id[1:]) % len(KINDS)]) for d in found)


def test_types_differ_across_segments_and_survive_merges_and_compaction(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    expected: dict[str, Any] = {}
    for batch in range(12):  # a full tier of small segments is merged by the add that fills it
        metadatas = [
            {"v": [batch, str(batch), float(batch), dt.date(2020, 1, 1 + batch)][batch % 4], "b": batch}
        ]
        expected.update(zip(_add(store, metadatas * 10, start=batch * 10), metadatas * 10, strict=True))
    assert len(store.collection.snapshot.views) < 12  # merged
    store.compact()
    for view in store.collection.snapshot.views:
        assert view.segment.typed_metadata is not None
    got = {d.id: d.metadata for d in store.get_by_ids(list(expected))}
    assert {k: canonical(v) for k, v in got.items()} == {k: canonical(v) for k, v in expected.items()}


def test_metadata_round_trips_after_reopening_in_a_new_process(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    ids = _add(store, KINDS * 10)
    script = textwrap.dedent(
        f"""
        import json, sys
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_vq import VQVectorStore
        from tests.unit.test_collection import canonical
        store = VQVectorStore(DeterministicFakeEmbedding(size={DIM}), path=sys.argv[1])
        print(json.dumps([canonical(d.metadata) for d in store.get_by_ids(sys.argv[2].split(","))]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s"), ",".join(ids)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert json.loads(out.stdout) == [json.loads(json.dumps(canonical(m))) for m in KINDS * 10]


def test_date_filters_through_the_store() -> None:
    store = _store()
    days = [dt.date(2024, 1, d) for d in range(1, 29)]
    _add(store, [{"day": d, "at": dt.datetime(2024, 1, d.day, 12, tzinfo=dt.UTC)} for d in days])
    query = clustered_vectors(1, DIM, seed=1)[0]
    hits = store.similarity_search_by_vector(query, k=50, filter={"day": {"$gte": dt.date(2024, 1, 20)}})
    assert sorted(d.metadata["day"].day for d in hits) == list(range(20, 29))
    paris_noon = dt.datetime(2024, 1, 5, 13, tzinfo=ZoneInfo("Europe/Paris"))  # 12:00 UTC
    assert [
        d.metadata["day"].day
        for d in store.similarity_search_by_vector(query, k=5, filter={"at": paris_noon})
    ] == [5]


def test_time_weighted_retriever_works_with_its_default_datetimes() -> None:
    retrievers = pytest.importorskip(
        "langchain_classic.retrievers", reason="langchain-classic is in the test extra"
    )
    store = _store()
    retriever = retrievers.TimeWeightedVectorStoreRetriever(vectorstore=store, k=2)
    docs = [Document(page_content="a text about cats"), Document(page_content="a text about dogs")]
    retriever.add_documents(docs)  # stores datetimes in the documents' metadata
    found = retriever.invoke("cats")
    assert found
    assert all(isinstance(d.metadata["last_accessed_at"], dt.datetime) for d in found)


@pytest.mark.parametrize(("value", "kind"), [({1, 2}, "set"), (b"x", "bytes"), (np.float32(1), "float32")])
def test_unstorable_value_names_the_key_and_type_before_embedding(value: object, kind: str) -> None:
    class Counting(DeterministicFakeEmbedding):
        calls: int = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls += 1
            return super().embed_documents(texts)

    embedding = Counting(size=DIM)
    store = VQVectorStore(embedding)
    with pytest.raises(InvalidInputError, match=rf"metadatas\[1\]\['bad'\] is a {kind}"):
        store.add_texts(["ok", "bad"], [{"bad": 1}, {"bad": value}])
    assert embedding.calls == 0
    assert len(store) == 0


@pytest.mark.parametrize("name", ["binary_cosine", "int8_l2"])
def test_a_format1_store_upgrades_on_write_and_keeps_its_rows(name: str, tmp_path: Path) -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text())[name]
    shutil.copytree(FIXTURES / name, tmp_path / name)
    store = _store(tmp_path / name)
    assert store.collection.snapshot.manifest.format_version == 1
    probe = ["doc0", "doc1", "doc2", "doc4", "doc150", "doc299", "missing"]

    def rows() -> list[list[Any]]:
        return [[d.id, d.page_content, d.metadata] for d in store.get_by_ids(probe)]

    store.add_embeddings(["new"], clustered_vectors(1, DIM, seed=3), [{"when": dt.date(2026, 1, 1)}], ["new"])
    assert store.collection.snapshot.manifest.format_version == FORMAT_VERSION  # 3 since grouped lists
    assert rows() == expected["get_by_ids"]
    assert store.get_by_ids(["new"])[0].metadata == {"when": dt.date(2026, 1, 1)}
    assert store.verify() == []
    store.compact()  # rewrites the format-1 segments as format 2
    assert all(v.segment.typed_metadata is not None for v in store.collection.snapshot.views)
    assert rows() == expected["get_by_ids"]
    assert len(store) == expected["len"] + 1
    reopened = _store(tmp_path / name)
    assert [[d.id, d.page_content, d.metadata] for d in reopened.get_by_ids(probe)] == expected["get_by_ids"]
    assert reopened.verify() == []


def test_collection_add_with_an_unstorable_value_commits_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    _add(store, [{"a": 1}] * 3)
    collection = store.collection
    before = collection.snapshot.version
    vectors = collection.check_vectors(clustered_vectors(2, DIM, seed=7))
    with pytest.raises(InvalidInputError, match=r"metadatas\[1\]\['a'\] is a set"):
        collection.add(["x", "y"], ["t", "t"], [{"a": 1}, {"a": {1}}], vectors)
    assert collection.snapshot.version == before
    assert _store(tmp_path / "s").collection.snapshot.version == before
    assert sorted(collection.live_ids()) == ["r0", "r1", "r2"]


def test_segments_with_different_keys_merge_without_reencoding_and_reopen(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    expected: dict[str, Any] = {}
    for batch in range(10):  # each batch has its own extra key: schemas differ, types agree
        metadatas = [{"n": batch, f"k{batch}": str(batch), "when": dt.date(2020, 1, 1 + batch)}] * 10
        expected.update(zip(_add(store, metadatas, start=batch * 10), metadatas, strict=True))
    store.compact()
    (view,) = store.collection.snapshot.views
    columns, fallback = view.segment.typed_metadata
    assert sorted(columns) == sorted(["n", "when", *(f"k{b}" for b in range(10))])
    assert fallback.null_count == len(fallback)  # nothing needed the fallback
    reopened = _store(tmp_path / "s")
    got = {d.id: d.metadata for d in reopened.get_by_ids(list(expected))}
    assert {k: canonical(v) for k, v in got.items()} == {k: canonical(v) for k, v in expected.items()}
    assert reopened.verify() == []


def test_settings_hook_sees_the_staged_version_and_commits_with_the_rows(tmp_path: Path) -> None:
    collection = Collection(CollectionConfig(quantization="binary"), tmp_path / "s")
    x = clustered_vectors(300, 16, seed=3)
    seen: list[tuple[int, int, int, bool]] = []

    def hook(current: Snapshot, staged: Snapshot) -> dict[str, Any] | None:
        # The staged version is searchable before it is committed, through the public methods.
        keys, vectors = collection.sample_rows(5, seed=0, snapshot=staged)
        found = collection.search_keys(vectors, 1, exact=True, snapshot=staged)
        assert (found[:, 0] == keys).all()  # each sampled row is its own nearest neighbour
        seen.append((current.version, staged.version, staged.live_rows, staged.quantizer is not None))
        return {"measured_rows": staged.live_rows} if staged.quantizer is not None else None

    collection.add([str(i) for i in range(30)], [""] * 30, [None] * 30, x[:30], settings_for=hook)
    assert collection.snapshot.settings == {}  # None: settings unchanged
    collection.add([str(i) for i in range(30, 300)], [""] * 270, [None] * 270, x[30:], settings_for=hook)
    assert seen == [(0, 1, 30, False), (1, 2, 300, True)]
    assert collection.snapshot.version == 2
    assert collection.snapshot.settings == {"measured_rows": 300}
    assert collection.directory is not None
    assert collection.directory.read_manifest(2).settings == {"measured_rows": 300}  # same commit
    collection.compact(settings_for=lambda current, staged: {"compacted": staged.version})
    assert collection.snapshot.settings == {"measured_rows": 300, "compacted": 3}


def test_a_failing_settings_hook_commits_nothing(tmp_path: Path) -> None:
    collection = Collection(CollectionConfig(quantization="binary"), tmp_path / "s")
    x = clustered_vectors(200, 16, seed=4)

    def hook(current: Snapshot, staged: Snapshot) -> dict[str, Any] | None:
        msg = "measurement failed"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="measurement failed"):
        collection.add([str(i) for i in range(200)], [""] * 200, [None] * 200, x, settings_for=hook)
    reopened = Collection(path=tmp_path / "s")
    assert (reopened.snapshot.version, reopened.snapshot.live_rows) == (0, 0)


def test_search_keys_hide_each_querys_own_row_and_sample_rows_skips_deleted(tmp_path: Path) -> None:
    collection = Collection(CollectionConfig(quantization="binary"), tmp_path / "s")
    x = clustered_vectors(400, 16, seed=5)
    collection.add([str(i) for i in range(400)], [""] * 400, [None] * 400, x)
    collection.delete([str(i) for i in range(0, 400, 2)])
    keys, vectors = collection.sample_rows(10_000, seed=0)
    assert keys.size == 200  # all live rows, no deleted one
    assert set((keys & ((1 << ROW_KEY_SHIFT) - 1)).tolist()) == set(range(1, 400, 2))
    sub_keys, _ = collection.sample_rows(20, seed=1)
    assert sub_keys.size == 20 and set(sub_keys.tolist()) <= set(keys.tolist())
    for exact in (True, False):
        found = collection.search_keys(vectors, 5, exact=exact, rescore_multiplier=4, exclude=keys)
        assert found.shape == (200, 5)
        assert not (found == keys[:, None]).any()  # never its own row
        assert set(found.ravel().tolist()) <= set(keys.tolist())  # only live rows
    assert (collection.search_keys(vectors, 1, exact=True)[:, 0] == keys).all()  # without exclude: itself


#: Ints at every width's bounds: each add below holds one width, so segments differ in width.
WIDTH_BATCHES: list[list[int]] = [
    [0, 127, -128], [-129, 128], [32767, -32768], [32768, -(2**31)], [2**31, -(2**31) - 1],
    [2**63 - 1, -(2**63)], [1, 2], [-129, 5],
]  # fmt: skip


def _old_style_encoding(metadatas: Any) -> Any:
    """``encode_metadata`` as written before narrowing: int64 columns, a string fallback."""
    columns, fallback = encode_metadata(metadatas)
    widened = {k: a.cast(pa.int64()) if pa.types.is_integer(a.type) else a for k, a in columns.items()}
    return widened, fallback.cast(pa.string())


@pytest.mark.parametrize("old_first", [False, True])
def test_int_widths_and_fallbacks_differ_across_segments_and_survive_merges(
    old_first: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path / "s")
    expected: dict[str, dict[str, Any]] = {}
    for batch, values in enumerate(WIDTH_BATCHES):
        with monkeypatch.context() as patch:
            if old_first and batch < 3:  # segments written before: int64 and a string fallback
                patch.setattr(segment_module, "encode_metadata", _old_style_encoding)
            rows = [{"n": v, "b": batch} for v in values] * 5
            if batch == 4:
                rows[0] = {"n": None, "b": batch}  # needs the fallback
            expected.update(zip(_add(store, rows, start=batch * 100), rows, strict=True))
    assert len(store.collection.snapshot.views) < len(WIDTH_BATCHES)  # the tiered policy merged some

    def check(s: VQVectorStore) -> None:
        got = {d.id: d.metadata for d in s.get_by_ids(list(expected))}
        assert {k: canonical(v) for k, v in got.items()} == {k: canonical(v) for k, v in expected.items()}
        query = clustered_vectors(1, DIM, seed=1)[0]
        for spec in ({"n": {"$gt": 1000}}, {"n": {"$in": [-129, 2**31, 10**30]}}, {"n": {"$lte": -128.5}}):
            hits = s.similarity_search_by_vector(query, k=len(expected), filter=spec)
            want = {k for k, m in expected.items() if m["n"] is not None and _holds(m["n"], spec["n"])}
            assert {d.id for d in hits} == want, spec
        assert s.verify() == []

    check(store)
    check(_store(tmp_path / "s"))
    store.compact()
    (view,) = store.collection.snapshot.views
    schema = view.segment.table.schema
    assert schema.field("metadata.n").type == pa.int64()  # 2**63 - 1 and -(2**63) need int64
    assert schema.field("metadata.b").type == pa.int8()  # the batch numbers: narrowed by the merge
    assert schema.field("metadata").type == pa.string()  # one row needs the fallback
    check(store)
    check(_store(tmp_path / "s"))
    kept = {k: m for k, m in expected.items() if m["n"] is not None and -(2**15) <= m["n"] < 2**15}
    store.delete([k for k in expected if k not in kept])
    expected = kept
    store.compact()
    (view,) = store.collection.snapshot.views
    assert view.segment.table.schema.field("metadata.n").type == pa.int16()
    assert view.segment.table.schema.field("metadata").type == pa.null()
    check(store)
    check(_store(tmp_path / "s"))


def _holds(value: int, condition: dict[str, Any]) -> bool:
    ((op, operand),) = condition.items()
    return value > operand if op == "$gt" else value <= operand if op == "$lte" else value in operand


def test_a_segment_written_before_narrowing_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"n": 1, "s": "a"}, {"n": 300, "s": "b"}, {"n": -5, "s": "c"}]
    with monkeypatch.context() as patch:
        patch.setattr(segment_module, "encode_metadata", _old_style_encoding)
        ids = _add(_store(tmp_path / "s"), rows)
    store = _store(tmp_path / "s")
    (view,) = store.collection.snapshot.views
    assert view.segment.table.schema.field("metadata.n").type == pa.int64()
    assert view.segment.table.schema.field("metadata").type == pa.string()
    assert [d.metadata for d in store.get_by_ids(ids)] == rows
    hits = store.similarity_search_by_vector(
        clustered_vectors(1, DIM, seed=1)[0], k=3, filter={"n": {"$gt": 0}}
    )
    assert sorted(d.id for d in hits) == ["r0", "r1"]
    assert store.verify() == []
    store.compact()  # rewritten as written today
    (view,) = store.collection.snapshot.views
    assert view.segment.table.schema.field("metadata.n").type == pa.int16()
    assert view.segment.table.schema.field("metadata").type == pa.null()
    assert [d.metadata for d in _store(tmp_path / "s").get_by_ids(ids)] == rows


def _no_settings(current: Any, staged: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "found"),
    [({}, "neither"), ({"changes": {"a": 1}, "settings_for": _no_settings}, "both")],
)
def test_update_settings_takes_exactly_one_of_changes_and_a_hook(
    tmp_path: Path, kwargs: dict[str, Any], found: str
) -> None:
    collection = Collection(CollectionConfig(quantization="binary"), tmp_path / "s")
    with pytest.raises(InvalidInputError, match=f"got {found} of changes and settings_for"):
        collection.update_settings(**kwargs)
    assert collection.snapshot.version == 0  # nothing committed
