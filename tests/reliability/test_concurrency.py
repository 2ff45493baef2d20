# ruff: noqa: PT017, C901 - failures are collected across processes and threads
"""Concurrency: reader processes while one writer commits; a second writer; threads sharing a store.

Readers (separate processes, forked) loop: ``refresh()``, count rows, search. Every (version,
row count) pair a reader sees must be exactly what the writer committed as that version: readers
see complete versions only, never an error, even while compaction removes superseded files
with no grace period (readers retry when cleanup races their open).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import StoreLockedError, VQVectorStore
from langchain_vq import collection as collection_module
from tests.reliability._common import live_rows, open_store, vectors_for

if TYPE_CHECKING:
    from pathlib import Path


def _fork(target: object, *args: object) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            target(*args)  # type: ignore[operator]
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def reader_loop(path: Path, out: Path, until: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = open_store(path)
    seen: set[tuple[int, int]] = set()
    searches = 0
    errors: list[str] = []
    while time.time() < until:
        try:
            store.refresh()
            snapshot = store.collection.snapshot
            count = snapshot.live_rows
            seen.add((snapshot.version, count))
            query = rng.standard_normal(16).astype(np.float32).tolist()
            found = store.similarity_search_by_vector(query, k=5)
            if len(found) != min(5, count):
                errors.append(f"version {snapshot.version}: {len(found)} results for {count} rows")
            searches += 1
        except Exception as exc:  # noqa: BLE001 - every error is a failure, recorded
            errors.append(f"{type(exc).__name__}: {exc}")
    out.write_text(json.dumps({"seen": sorted(seen), "searches": searches, "errors": errors[:20]}))


def writer_loop(path: Path, out: Path, until: float, seed: int) -> None:
    collection_module.CLEANUP_GRACE_SECONDS = 0.0  # cleanup removes superseded files at once
    rng = np.random.default_rng(seed)
    store = open_store(path, lock_timeout=30)
    committed = {store.collection.snapshot.version: len(store)}
    serial = 0
    while time.time() < until:
        serial += 1
        roll = rng.random()
        ids = sorted(live_rows(store.collection))
        if roll < 0.1:
            store.compact()
        elif roll < 0.35 and len(ids) > 20:
            store.delete([str(x) for x in rng.choice(ids, size=10, replace=False)])
        else:
            new = [f"w{serial}-{j}" for j in range(int(rng.integers(1, 30)))]
            store.add_embeddings(new, vectors_for(new), [{"s": serial}] * len(new), new)
        committed[store.collection.snapshot.version] = len(store)
        out.write_text(json.dumps(committed))  # rewritten after each commit: always complete
        time.sleep(0.005)


def run_concurrency(path: Path, work: Path, readers: int, seconds: float) -> dict[str, float]:
    """One writer and ``readers`` reader processes for ``seconds``; returns totals."""
    store = open_store(path)
    ids = [f"init-{i}" for i in range(100)]
    store.add_embeddings(ids, vectors_for(ids), None, ids)
    start = time.time()
    until = start + seconds
    writer_out = work / "writer.json"
    pids = [_fork(writer_loop, path, writer_out, until, 0)]
    pids += [_fork(reader_loop, path, work / f"reader{r}.json", until, r) for r in range(readers)]
    # Meanwhile this process is a second writer: without waiting it gets StoreLockedError or the
    # lock; with a timeout it waits. Its commits are recorded like the writer's.
    mine: dict[int, int] = {}
    locked = 0
    impatient = open_store(path, lock_timeout=0)
    patient = open_store(path, lock_timeout=30)
    n = 0
    while time.time() < until - 0.5:
        n += 1
        other = impatient if n % 2 else patient
        try:
            other.add_embeddings([f"p{n}"], vectors_for([f"p{n}"]), None, [f"p{n}"])
            mine[other.collection.snapshot.version] = len(other)
        except StoreLockedError as exc:
            assert other is impatient, exc
            assert "locked by another writer" in str(exc)
            locked += 1
        time.sleep(0.05)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"process {pid} failed: {status}"
    committed = {int(k): v for k, v in json.loads(writer_out.read_text()).items()}
    committed.update(mine)
    observations = searches = 0
    for r in range(readers):
        report = json.loads((work / f"reader{r}.json").read_text())
        assert report["errors"] == [], report["errors"]
        for version, count in report["seen"]:
            assert version in committed, f"reader saw version {version}, never committed"
            assert committed[version] == count, (
                f"version {version}: {count} rows, committed {committed[version]}"
            )
            observations += 1
        searches += report["searches"]
    assert open_store(path).verify() == []
    return {
        "reader_minutes": readers * (time.time() - start) / 60,
        "searches": searches,
        "versions_committed": len(committed),
        "distinct_versions_seen": observations,
        "second_writer_locked_errors": locked,
        "second_writer_commits": len(mine),
    }


def test_readers_see_complete_versions_short(tmp_path) -> None:
    totals = run_concurrency(tmp_path / "store", tmp_path, readers=3, seconds=8)
    assert totals["searches"] > 100
    assert totals["versions_committed"] > 20


@pytest.mark.long
def test_readers_see_complete_versions_long(tmp_path) -> None:
    totals = run_concurrency(tmp_path / "store", tmp_path, readers=4, seconds=60)
    assert totals["reader_minutes"] >= 4


def test_threads_share_one_store(tmp_path) -> None:
    store = open_store(tmp_path / "store")
    errors: list[BaseException] = []
    stop = threading.Event()
    expected: dict[str, str] = {}
    guard = threading.Lock()

    def writer(w: int) -> None:
        try:
            for batch in range(15):
                ids = [f"t{w}-{batch}-{j}" for j in range(5)]
                store.add_embeddings([f"{x} text" for x in ids], vectors_for(ids), None, ids)
                with guard:
                    expected.update({x: f"{x} text" for x in ids})
                if batch % 3 == 2:
                    store.delete([ids[0]])
                    with guard:
                        del expected[ids[0]]
                if w == 0 and batch == 7:
                    store.compact()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                n = len(store)
                found = store.similarity_search_by_vector(vectors_for(["q"])[0].tolist(), k=4)
                assert len(found) <= 4
                assert (n == 0) or found
                store.get_by_ids(["t0-0-1", "t1-3-2"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    stop.set()
    for t in threads[2:]:
        t.join()
    assert errors == []
    assert live_rows(store.collection) == expected
    assert store.verify() == []
    assert live_rows(open_store(tmp_path / "store").collection) == expected


def test_reopening_without_settings_survives_cleanup_removing_the_listed_version(
    tmp_path, monkeypatch
) -> None:
    """A reader that lists version N, then finds N's manifest removed by a compaction's cleanup,
    opens the newer version instead, settings included (they are read with that manifest)."""
    monkeypatch.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
    path = tmp_path / "store"
    writer = open_store(path, quantization="int8")
    for n in range(3):
        ids = [f"r{n}-{j}" for j in range(200)]
        writer.add_embeddings(ids, vectors_for(ids), None, ids)
    stale = writer.collection.snapshot.version
    writer.compact()  # commits stale + 1 and removes the manifest of `stale`
    directory = writer.collection.directory
    assert directory is not None
    assert stale not in directory.versions()

    real = type(directory).latest_version
    calls = []

    def listed_before_cleanup(self: object) -> int:  # the first listing predates the compaction
        calls.append(1)
        return stale if len(calls) == 1 else real(self)  # type: ignore[arg-type]

    monkeypatch.setattr(type(directory), "latest_version", listed_before_cleanup)
    reader = VQVectorStore(DeterministicFakeEmbedding(size=16), path=path)  # no settings given
    assert len(calls) >= 2  # it did meet the removed manifest and retried
    assert reader.collection.snapshot.version == stale + 1
    assert reader.collection.quantization == "int8"  # read from the store, not the default
    assert len(reader) == 600
