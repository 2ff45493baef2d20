# ruff: noqa: PT017 - one loop checks each injected failure
"""I/O errors: ENOSPC and EACCES injected at every write step of every kind of commit.

For each step the call raises a typed ``StoreWriteError`` naming the path and the fix, the store
stays at its previous version (a reopen gives identical results), no file of the failed commit is
left behind, and the next write works. A failure after the version was published (the final
directory fsync, removing the temporary name, cleanup) leaves the new version in place.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import TYPE_CHECKING

import pytest

from langchain_vq import StoreWriteError
from langchain_vq import collection as collection_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.storage import FileOps
from tests.reliability._common import live_rows, open_store, vectors_for
from tests.reliability.faults import JournalingFileOps

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from langchain_vq import VQVectorStore

ERRORS = (errno.ENOSPC, errno.EACCES)


def _add(store: VQVectorStore, ids: list[str], tag: str) -> None:
    store.add_embeddings([f"{i} {tag}" for i in ids], vectors_for(ids, tag), [{"tag": tag}] * len(ids), ids)


def _merging_add(store: VQVectorStore) -> None:
    """On the "merging" base (a tier short of one segment) an add that merges every segment."""
    _add(store, [f"m{i}" for i in range(5)], "merge")
    assert len(store.collection.snapshot.views) == 1


OPS: dict[str, Callable[[VQVectorStore], object]] = {
    "add_and_train": lambda s: _add(s, [f"n{i}" for i in range(40)], "train"),
    "upsert": lambda s: _add(s, ["d1", "d2", "d3", "fresh"], "up"),
    "delete": lambda s: s.delete(["d4", "d5", "d60"]),
    "compact": lambda s: s.compact(),
    "merging_add": _merging_add,
}


def _files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != "_lock"}


def _observe(store: VQVectorStore) -> tuple[dict[str, str], list[list[str | None]]]:
    queries = vectors_for(["q1", "q2", "q3"])
    results = store.batch_similarity_search_by_vector(queries, k=5)
    return live_rows(store.collection), [[d.id for d, _ in r] for r in results]


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    small = open_store(root / "small")
    _add(small, [f"d{i}" for i in range(40)], "base")  # below the 64 rows that train the quantizer
    trained = open_store(root / "trained")
    _add(trained, [f"d{i}" for i in range(100)], "base")
    trained.delete(["d0", "d99"])
    merging = open_store(root / "merging")
    for batch in range(3):
        _add(merging, [f"d{batch}-{i}" for i in range(30)], "base")
    merging.delete(["d0-0"])
    assert len(merging.collection.snapshot.views) == collection_module.MERGE_POLICY.segments_per_tier - 1
    return {"small": root / "small", "trained": root / "trained", "merging": root / "merging"}


def run_io_error_trials(bases: dict[str, Path], work: Path, op_name: str, err: int) -> dict[str, int]:
    """Fail each fallible step of ``op_name`` in turn with ``err``; returns counts."""
    base = bases[{"add_and_train": "small", "merging_add": "merging"}.get(op_name, "trained")]
    op = OPS[op_name]
    # Dry run: how many fallible steps the operation takes, and the state it leads to.
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work)
    store = open_store(work)
    before = _observe(store)
    files_before = _files(work)
    journal = JournalingFileOps()
    store.collection.directory.fs = journal
    op(store)
    after = _observe(open_store(work))
    steps = journal.fallible_seen
    counts = {"trials": 0, "rejected": 0, "published": 0}
    for index in range(steps):
        shutil.rmtree(work)
        shutil.copytree(base, work)
        store = open_store(work)
        faulty = JournalingFileOps(fail_at=index, error=err)
        store.collection.directory.fs = faulty
        published = False
        try:
            op(store)
        except StoreWriteError as exc:
            message = str(exc)
            assert exc.errno == err
            assert str(faulty.failed.path) in message or str(work) in message, message
            assert "Fix:" in message, message
            published = any(s.kind == "link" for s in faulty.steps)
            if published:
                assert "visible" in message, message
        else:
            published = True  # only cleanup failed (logged, retried by the next cleanup)
            assert faulty.failed is not None and faulty.failed.kind in {"remove", "fsync_dir"}
        counts["trials"] += 1
        where = f"{op_name}, {errno.errorcode[err]} at step {index} ({faulty.failed})"
        reopened = open_store(work)
        assert reopened.verify() == [], where
        if published:
            counts["published"] += 1
            assert _observe(reopened) == after, where
            continue
        counts["rejected"] += 1
        assert _observe(reopened) == before, where
        assert _observe(store) == before, where  # the handle that failed is unchanged too
        assert _files(work) == files_before, f"{where}: files of the failed commit were left behind"
        store.collection.directory.fs = FileOps()  # the disk is fine again: the next write works
        op(store)
        assert _observe(store) == after, where
        assert _observe(open_store(work)) == after, where
    return counts


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: errno.errorcode[e])
@pytest.mark.parametrize("op_name", sorted(OPS))
def test_io_error_at_every_write_step(bases, tmp_path, monkeypatch, op_name, err) -> None:
    monkeypatch.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
    counts = run_io_error_trials(bases, tmp_path / "store", op_name, err)
    assert counts["rejected"] >= 5


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: errno.errorcode[e])
def test_io_error_while_creating_a_store(tmp_path, err) -> None:
    config = CollectionConfig()
    for index in range(20):
        path = tmp_path / f"s{index}" / "store"
        faulty = JournalingFileOps(fail_at=index, error=err)
        try:
            Collection(config, path, fs=faulty)
        except StoreWriteError as exc:
            assert "Fix:" in str(exc)
        else:
            assert faulty.failed is None or faulty.failed.kind in {"remove", "fsync_dir"}
            break
        Collection(config, path)  # an interrupted creation is completed by the next open
        assert Collection(config, path).snapshot.version == 0
    else:
        pytest.fail("creation never succeeded")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes files whatever their mode")
def test_read_only_store_directory_is_a_typed_error(tmp_path) -> None:
    store = open_store(tmp_path / "s")
    _add(store, ["a"], "x")
    for folder in [tmp_path / "s", *(tmp_path / "s").iterdir()]:
        if folder.is_dir():
            folder.chmod(0o555)
    try:
        reader = open_store(tmp_path / "s")
        assert [d.id for d in reader.get_by_ids(["a"])] == ["a"]
        with pytest.raises(StoreWriteError, match=r"Fix:|permissions"):
            _add(reader, ["b"], "x")
    finally:
        for folder in [tmp_path / "s", *(tmp_path / "s").iterdir()]:
            folder.chmod(0o755)
