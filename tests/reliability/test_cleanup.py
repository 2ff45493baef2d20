"""Cleanup never removes a file that a reader of an older version still needs.

Readers pin nothing on disk: an opened version's segments are memory-mapped (POSIX keeps them
alive after unlink) and its small files are read into memory; the window between reading a
manifest and opening its files is covered by a grace period that starts when the version is
superseded, and a reader that loses the race anyway retries with the newest version.
"""

from __future__ import annotations

import os
import time

from langchain_vq import collection as collection_module
from langchain_vq.storage.directory import VERSIONS, version_file_name
from tests.reliability._common import live_rows, open_store, vectors_for


def _add(store, ids, tag="x") -> None:
    store.add_embeddings([f"{i} {tag}" for i in ids], vectors_for(ids, tag), None, ids)


def _files(store) -> set[str]:
    return {e.file for e in store.collection.snapshot.manifest.files()}


def test_superseded_version_survives_the_grace_period(tmp_path) -> None:
    writer = open_store(tmp_path / "s")
    _add(writer, [f"a{i}" for i in range(100)])
    writer.delete(["a1"])
    old_version = writer.collection.snapshot.version
    old_files = _files(writer)
    writer.compact()  # default grace: the version just superseded and its files stay
    for name in old_files:
        assert (tmp_path / "s" / name).exists()
    assert (tmp_path / "s" / VERSIONS / version_file_name(old_version)).exists()
    # Once its successor is older than the grace period, the next cleanup removes them.
    successor = tmp_path / "s" / VERSIONS / version_file_name(old_version + 1)
    past = time.time() - collection_module.CLEANUP_GRACE_SECONDS - 1
    for path in (tmp_path / "s").rglob("*"):
        os.utime(path, (past, past))
    assert successor.exists()
    _add(writer, ["b"])
    writer.compact()
    for name in old_files:
        assert not (tmp_path / "s" / name).exists()
    assert not (tmp_path / "s" / VERSIONS / version_file_name(old_version)).exists()
    assert writer.verify() == []


def test_reader_of_an_old_version_keeps_working_after_its_files_are_removed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
    writer = open_store(tmp_path / "s")
    _add(writer, [f"a{i}" for i in range(100)])
    reader = open_store(tmp_path / "s")
    before = live_rows(reader.collection)
    results = [d.id for d in reader.similarity_search_by_vector(vectors_for(["q"])[0].tolist(), k=5)]
    old_files = _files(reader)
    writer.delete([f"a{i}" for i in range(50)])
    writer.compact()
    writer.compact()
    assert not any((tmp_path / "s" / f).exists() for f in old_files)  # no grace: all gone
    # The reader's version is still whole: mapped segments outlive unlink.
    assert live_rows(reader.collection) == before
    assert [d.id for d in reader.similarity_search_by_vector(vectors_for(["q"])[0].tolist(), k=5)] == results
    assert len(reader.get_by_ids(["a1", "a99"])) == 2
    assert reader.refresh() is True
    assert len(reader) == 50


def test_reader_that_loses_the_race_with_cleanup_retries(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
    writer = open_store(tmp_path / "s")
    _add(writer, [f"a{i}" for i in range(100)])
    reader = open_store(tmp_path / "s")
    _add(writer, ["b1"])  # version v+1, which the reader is about to open
    directory = reader.collection.directory
    original = directory.read_manifest
    raced = []

    def read_then_race(version=None):
        manifest = original(version)
        if not raced:  # between reading the manifest and opening its files, the writer compacts
            raced.append(manifest.version)
            writer.compact()
        return manifest

    monkeypatch.setattr(directory, "read_manifest", read_then_race)
    assert reader.refresh() is True
    assert raced
    assert reader.collection.snapshot.version > raced[0]
    assert live_rows(reader.collection) == live_rows(writer.collection)


def test_leftovers_of_failed_commits_are_removed_by_cleanup(tmp_path, monkeypatch) -> None:
    writer = open_store(tmp_path / "s")
    _add(writer, [f"a{i}" for i in range(100)])
    orphan = tmp_path / "s" / "_segments" / ("f" * 32 + ".arrow")
    orphan.write_bytes(b"left by a killed writer")
    tmp = tmp_path / "s" / VERSIONS / ".tmp-0123.json"
    tmp.write_bytes(b"{")
    writer.compact()
    assert orphan.exists() and tmp.exists()  # younger than the grace period: maybe a commit in flight
    monkeypatch.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
    writer.compact()
    assert not orphan.exists() and not tmp.exists()
    assert writer.verify() == []


def test_batched_adds_leave_about_one_copy_of_the_store_on_disk(tmp_path) -> None:
    """Merges supersede segments; the add that commits one removes the files superseded longer
    ago than the grace period, so a store built by many adds does not keep every rewrite."""
    writer = open_store(tmp_path / "s")
    folder = tmp_path / "s" / "_segments"
    for batch in range(12):  # the tiered policy merges every few adds
        _add(writer, [f"b{batch}-{i}" for i in range(300)])
        past = time.time() - collection_module.CLEANUP_GRACE_SECONDS - 1
        for path in (tmp_path / "s").rglob("*"):  # everything so far is past the grace period
            os.utime(path, (past, past))
    listed = {
        e.file.split("/", 1)[1] for e in writer.collection.snapshot.manifest.files() if "_segments/" in e.file
    }
    on_disk = set(os.listdir(folder))
    assert len(writer.collection.snapshot.views) < 12  # merges happened
    # Only the newest version's segments and those of the version it superseded remain.
    assert listed <= on_disk
    superseded = on_disk - listed
    assert len(superseded) <= 4, superseded
    assert len(live_rows(writer.collection)) == 12 * 300
    assert writer.verify() == []
