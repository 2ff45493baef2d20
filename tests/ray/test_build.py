"""Distributed builds on the session's local cluster: output, reruns, upserts, crashes, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import DimensionMismatchError, InvalidInputError, VQVectorStore
from langchain_vq.collection import BUILDS_SETTING, CLEANUP_GRACE_SECONDS, Collection
from langchain_vq.errors import EmptySourceError, NotAStoreError, SourceNotFoundError
from langchain_vq.storage import StoreDirectory
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("ray_cluster")

DIM = 16


def fake() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=DIM)


def write_jsonl(path: Path, n: int, *, start: int = 0, prefix: str = "doc") -> Path:
    with path.open("w") as fh:
        for i in range(start, start + n):
            fh.write(
                json.dumps({"id": f"d{i}", "text": f"{prefix} {i} about vectors", "year": 1990 + i % 30})
                + "\n"
            )
    return path


def build(*args, **kwargs):
    from langchain_vq.ray import build_store

    kwargs.setdefault("workers", 1)
    kwargs.setdefault("batch_size", 100)
    return build_store(*args, **kwargs)


def segment_files(store: Path) -> set[str]:
    return {f"_segments/{p.name}" for p in (store / "_segments").iterdir()}


def test_build_jsonl_matches_adding_the_same_rows_and_a_rerun_commits_once(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", 300)
    result = build(source, tmp_path / "store", fake(), quantization="binary", rows_per_segment=128)
    assert result.committed
    assert result.rows == 300
    assert result.versions == (1,)  # version 0 is the empty store: one commit for the whole build

    store = VQVectorStore(fake(), path=tmp_path / "store")
    assert len(store) == 300
    assert store.verify() == []
    assert store.collection.snapshot.quantizer is not None  # trained on the sample
    assert store.get_by_ids(["d7"])[0].metadata == {"year": 1997}
    assert store.collection.snapshot.settings[BUILDS_SETTING] == {result.build_id: 1}

    reference = VQVectorStore(fake(), quantization="binary")
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    reference.add_texts(
        [r["text"] for r in rows], [{"year": r["year"]} for r in rows], ids=[r["id"] for r in rows]
    )
    # At equal settings: the reference calibrates its multiplier in its add (12 on these rows);
    # a Ray build does not calibrate and keeps the fixed default.
    multiplier = store.rescore_multiplier
    for query in ("doc 3 about vectors", "doc 250 about vectors"):
        got = store.similarity_search_with_score(query, k=5, rescore_multiplier=multiplier)
        want = reference.similarity_search_with_score(query, k=5, rescore_multiplier=multiplier)
        assert [d.id for d, _ in got] == [d.id for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)

    again = build(source, tmp_path / "store", fake())  # same files, same target: same build id
    assert again.build_id == result.build_id
    assert not again.committed
    assert StoreDirectory(tmp_path / "store").latest_version() == 1


def test_build_into_an_existing_store_appends_and_upserts_by_id(tmp_path: Path) -> None:
    store = VQVectorStore(fake(), path=tmp_path / "store", quantization="int8")
    store.add_texts([f"old {i}" for i in range(200)], [{"v": "old"}] * 200, ids=[f"d{i}" for i in range(200)])
    before = store.collection.snapshot
    assert before.quantizer is not None

    data = [{"id": f"d{i}", "text": f"new {i}", "v": "new"} for i in range(150, 300)]
    import ray

    result = build(ray.data.from_items(data), tmp_path / "store", fake(), build_id="append-1")
    assert result.committed
    assert result.versions == (before.version + 1,)

    store.refresh()
    assert len(store) == 300  # 150 old rows kept, 50 replaced, 100 new
    assert store.verify() == []
    assert store.get_by_ids(["d10"])[0].page_content == "old 10"
    assert store.get_by_ids(["d160"])[0].page_content == "new 160"
    assert store.get_by_ids(["d160"])[0].metadata == {"v": "new"}
    assert store.get_by_ids(["d299"])[0].page_content == "new 299"
    after = store.collection.snapshot
    assert after.manifest is not None
    assert before.manifest is not None
    assert (
        after.manifest.quantizer_state == before.manifest.quantizer_state
    )  # codes compare with the old ones
    assert store.similarity_search("new 160", k=1)[0].id == "d160"


def test_build_from_a_folder_of_text_files(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Binary codes keep one bit per dimension.\n\nRescoring uses the floats.")
    (folder / "b.md").write_text("# Shards\n\nEach shard is a normal store served by one actor.")
    result = build(folder, tmp_path / "text-store", fake())
    store = VQVectorStore(fake(), path=tmp_path / "text-store")
    assert result.rows == len(store) == 2
    ids = sorted(store.collection.live_ids())
    assert ids == sorted(f"{(folder / name).resolve().as_posix()}#0" for name in ("a.txt", "b.md"))
    doc = store.get_by_ids([ids[0]])[0]
    assert doc.metadata["chunk"] == 0
    assert doc.metadata["source"].endswith("a.txt")


def test_build_from_a_folder_of_parquet_files_routes_every_row_to_the_shard_of_its_id(tmp_path: Path) -> None:
    """Parquet input: every file of the folder is read, other columns become metadata (nulls dropped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from langchain_vq.ray import shard_of, shard_paths

    folder = tmp_path / "parquet"
    folder.mkdir()
    for part, start in enumerate((0, 60)):
        numbers = range(start, start + 60)
        table = pa.table(
            {
                "id": [f"p{i}" for i in numbers],
                "text": [f"parquet row {i} about codes" for i in numbers],
                "year": [None if i % 7 == 0 else 2000 + i for i in numbers],
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet")
    paths = shard_paths(tmp_path / "sharded", 3)
    result = build(folder, paths, fake(), quantization="int8")
    assert result.committed
    assert result.rows == 120
    assert result.versions == (1, 1, 1)  # one commit per shard
    stores = [VQVectorStore(fake(), path=p) for p in paths]
    for index, store in enumerate(stores):
        ids = store.collection.live_ids()
        assert ids
        assert all(shard_of(i, 3) == index for i in ids)
    assert sorted(i for s in stores for i in s.collection.live_ids()) == sorted(f"p{i}" for i in range(120))
    found = {d.id: d for s in stores for d in s.get_by_ids(["p8", "p64", "p70"])}
    assert found["p8"].page_content == "parquet row 8 about codes"
    assert found["p8"].metadata == {"year": 2008}
    assert found["p64"].metadata == {"year": 2064}  # from the second file
    assert found["p70"].metadata == {}  # a null year is dropped, not stored as None
    assert build(folder, paths, fake()).committed is False  # same files: the same build id


def test_worker_threads_follow_the_reserved_cpus_unless_given(minilm) -> None:
    """Each build actor's model gets its share of the cores, not every core of the machine."""
    from langchain_vq.embeddings import SentenceTransformerEmbeddings
    from langchain_vq.ray.build import _portable, worker_threads

    assert worker_threads(0.5) == 1
    assert worker_threads(1.0) == 1
    assert worker_threads(2.5) == 2
    assert worker_threads(0.5, 3) == 3
    with pytest.raises(InvalidInputError, match="threads_per_worker"):
        worker_threads(1.0, 0)
    assert minilm.num_threads is None
    sent = _portable(minilm, 2)
    assert isinstance(sent, SentenceTransformerEmbeddings)
    assert sent is not minilm
    assert (sent.num_threads, sent.backend, sent.model_name) == (2, minilm.backend, minilm.model_name)
    own = SentenceTransformerEmbeddings(num_threads=3, cache_dir=minilm.cache_dir)
    assert _portable(own, 1).num_threads == 3  # the caller's own choice wins
    assert _portable(fake(), 2).__class__ is DeterministicFakeEmbedding  # other models travel as given


def test_a_build_worker_killed_mid_write_leaves_one_committed_copy_of_every_row(tmp_path: Path) -> None:
    from tests.ray._faults import KillOnce

    marker = tmp_path / "killed"
    fs = KillOnce("_segments", str(marker), after_write=True)
    source = write_jsonl(tmp_path / "docs.jsonl", 400)
    result = build(source, tmp_path / "store", fake(), rows_per_segment=100, fs=fs)

    assert marker.exists()  # a write task died after writing a segment file
    assert int(marker.read_text()) != os.getpid()
    assert result.committed
    collection = Collection(path=tmp_path / "store")
    ids = collection.live_ids()
    assert sorted(ids) == sorted(f"d{i}" for i in range(400))  # every row, each exactly once
    assert collection.verify() == []
    manifest = collection.snapshot.manifest
    assert manifest is not None
    listed = {s.data.file for s in manifest.segments}
    orphans = segment_files(tmp_path / "store") - listed
    assert orphans  # the dead attempt's file is on disk but in no version
    removed = StoreDirectory(tmp_path / "store").cleanup(manifest, grace_seconds=0)
    assert orphans <= set(removed)
    assert segment_files(tmp_path / "store") == listed
    assert CLEANUP_GRACE_SECONDS > 0  # compact() removes them the same way once they are older


def run_driver(address: str, source: Path, store: Path, build_id: str, kill_marker: Path):
    command = [sys.executable, "-m", "tests.ray._driver", "--address", address, "--source", str(source),
               "--store", str(store), "--build-id", build_id, "--kill-marker", str(kill_marker)]  # fmt: skip
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_driver_killed_before_the_commit_leaves_the_store_unchanged_and_a_rerun_commits_once(
    tmp_path: Path, ray_cluster: str
) -> None:
    store_path = tmp_path / "store"
    VQVectorStore(DeterministicFakeEmbedding(size=16), path=store_path).add_texts(["existing"], ids=["e0"])
    assert StoreDirectory(store_path).latest_version() == 1
    source = write_jsonl(tmp_path / "docs.jsonl", 120)

    killed = run_driver(ray_cluster, source, store_path, "nightly-7", tmp_path / "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "killed").exists()
    assert StoreDirectory(store_path).latest_version() == 1  # the previous version stands
    assert Collection(path=store_path).live_ids() == ["e0"]

    # The rerun runs in this process (a new driver, as after a crash): it commits once, and
    # another run with the same id finds the build committed and does nothing.
    rerun = build(source, store_path, DeterministicFakeEmbedding(size=16), build_id="nightly-7")
    assert (rerun.committed, rerun.rows, rerun.versions) == (True, 120, (2,))
    again = build(source, store_path, DeterministicFakeEmbedding(size=16), build_id="nightly-7")
    assert not again.committed
    directory = StoreDirectory(store_path)
    # One commit: versions 1 and 2 are the last. Version 0 may be gone: the build's commit cleans
    # up orphans, and on a slow machine version 1 is older than the cleanup's grace by then.
    assert directory.versions()[-2:] == [1, 2]
    assert sorted(Collection(path=store_path).live_ids()) == sorted(["e0", *(f"d{i}" for i in range(120))])


def test_bad_input_gets_typed_errors(tmp_path: Path) -> None:
    import ray

    with pytest.raises(InvalidInputError, match="has no rows"):
        build(ray.data.from_items([{"id": "x", "text": "y"}]).filter(lambda r: False), tmp_path / "a", fake())
    with pytest.raises(InvalidInputError, match="no 'text' column"):
        build(ray.data.from_items([{"body": "y"}]), tmp_path / "b", fake())
    with pytest.raises(SourceNotFoundError):
        build(tmp_path / "missing.jsonl", tmp_path / "c", fake())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(EmptySourceError):
        build(tmp_path / "empty", tmp_path / "d", fake())
    (tmp_path / "not-a-store").mkdir()
    (tmp_path / "not-a-store" / "notes.txt").write_text("x")
    with pytest.raises(NotAStoreError):
        build(ray.data.from_items([{"text": "y"}]), tmp_path / "not-a-store", fake())
    VQVectorStore(DeterministicFakeEmbedding(size=8), path=tmp_path / "dim8").add_texts(["a"])
    with pytest.raises(DimensionMismatchError, match="dimension 16"):
        build(ray.data.from_items([{"text": "y"}]), tmp_path / "dim8", fake())
    dupes = ray.data.from_items([{"id": "same", "text": "a"}, {"id": "same", "text": "b"}])
    with pytest.raises(InvalidInputError, match="more than once"):
        build(dupes, tmp_path / "e", fake(), quantization="none")
    assert StoreDirectory(tmp_path / "e").latest_version() == 0  # nothing committed


def test_build_with_the_real_model_matches_embedding_on_the_driver(tmp_path: Path, minilm) -> None:
    """The project's model travels to the workers without its loaded runtime and embeds as here."""
    import ray

    texts = [f"Chunk {i}: binary codes are rescored with float vectors read from disk." for i in range(24)]
    texts[5] = "How do I copy a directory tree in Python?"
    rows = [{"id": f"c{i}", "text": t} for i, t in enumerate(texts)]
    result = build(ray.data.from_items(rows), tmp_path / "store", minilm, quantization="int8")
    assert result.rows == 24
    store = VQVectorStore(minilm, path=tmp_path / "store")
    assert store.similarity_search("copy a directory tree", k=1)[0].id == "c5"
    stored = store.collection.search(minilm.encode(texts), 1, with_vectors=True)
    mine = minilm.encode(texts)
    for i, hits in enumerate(stored):
        assert hits[0].id == f"c{i}"
        assert float(hits[0].vector @ mine[i]) > 0.98  # int8 activations scale per batch (architecture.md)


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_vq.errors import MissingDependencyError
    from langchain_vq.ray import require_ray
    from langchain_vq.ray._common import require_ray_core

    monkeypatch.setitem(sys.modules, "ray", None)
    for required in (require_ray, require_ray_core):  # the shard actors' module uses the second
        with pytest.raises(MissingDependencyError, match=r"langchain-vq\[ray\]") as info:
            required()
        assert info.value.extra == "ray"
