"""Process crashes: a writer process SIGKILLed at random moments, again and again.

The writer (forked from the test process, so it starts in milliseconds) adds, upserts, deletes
and compacts (cleanup with no grace period, so files are removed too). Before each call it logs
the fingerprint of the state the call should produce, and after the call returns it logs "ack";
both lines are fsynced. After each kill the store must open, pass ``verify()``, every committed
manifest must parse, and the live rows must be the last acknowledged state or the one in flight.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from langchain_vq import collection as collection_module
from langchain_vq.merge_policy import MergePolicy
from langchain_vq.storage import StoreDirectory
from tests.reliability._common import digest, live_rows, open_store, vectors_for

if TYPE_CHECKING:
    from pathlib import Path


def _log(fh: object, **entry: object) -> None:
    fh.write(json.dumps(entry) + "\n")  # type: ignore[attr-defined]
    fh.flush()  # type: ignore[attr-defined]
    os.fsync(fh.fileno())  # type: ignore[attr-defined]


def writer_loop(path: Path, log_path: Path, seed: int) -> None:
    """Commit random changes forever, logging each intended and acknowledged state."""
    collection_module.CLEANUP_GRACE_SECONDS = 0.0
    rng = np.random.default_rng(seed)
    store = open_store(path)
    model = live_rows(store.collection)
    with log_path.open("a") as fh:
        _log(fh, start=digest(model))
        serial = 0
        while True:
            serial += 1
            new = dict(model)
            roll = rng.random()
            if roll < 0.1:
                kind = "compact"
            elif roll < 0.3 and len(model) > 10:
                kind, ids = (
                    "delete",
                    [str(x) for x in rng.choice(sorted(model), size=int(rng.integers(1, 10)))],
                )
                for x in ids:
                    new.pop(x, None)
            elif roll < 0.5 and model:
                kind = "upsert"
                ids = sorted({str(x) for x in rng.choice(sorted(model), size=int(rng.integers(1, 8)))})
            else:
                kind = "add"
                ids = [f"s{seed}-{serial}-{j}" for j in range(int(rng.integers(1, 40)))]
            if len(model) > 400:
                kind, ids = "delete", sorted(model)[:200]
                new = {k: v for k, v in model.items() if k not in set(ids)}
            tag = f"{seed}.{serial}"
            if kind in {"add", "upsert"}:
                new.update({x: f"{x} {tag}" for x in ids})
            _log(fh, begin=digest(new), kind=kind)
            if kind == "compact":
                store.compact()
            elif kind == "delete":
                store.delete(ids)
            else:
                texts = [f"{x} {tag}" for x in ids]
                store.add_embeddings(texts, vectors_for(ids, tag), [{"serial": serial}] * len(ids), ids)
            _log(fh, ack=digest(new))
            model = new


def allowed_states(log_path: Path) -> set[str]:
    """Fingerprints the store may hold: last acknowledged, plus the one in flight if any."""
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    allowed: set[str] = set()
    for entry in entries:
        if "start" in entry:
            allowed = {entry["start"]}
        elif "begin" in entry:
            allowed = allowed | {entry["begin"]}
        elif "ack" in entry:
            allowed = {entry["ack"]}
    return allowed


def check_store(path: Path, log_path: Path) -> int:
    """Open the store after a kill and check it; returns its live row count."""
    directory = StoreDirectory(path)
    for version in directory.versions():
        directory.read_manifest(version)  # every committed manifest is complete
    store = open_store(path)
    assert store.verify() == []
    rows = live_rows(store.collection)
    allowed = allowed_states(log_path)
    assert digest(rows) in allowed, f"state {digest(rows)} not in {allowed}"
    if rows:  # searching works and returns live rows
        found = store.similarity_search_by_vector(vectors_for(["probe"])[0].tolist(), k=3)
        assert {d.id for d in found} <= set(rows)
    return len(rows)


def run_kills(path: Path, log_path: Path, kills: int, seed: int) -> dict[str, int]:
    """Start the writer and SIGKILL it ``kills`` times at random moments; check after each."""
    rng = np.random.default_rng(seed)
    # pa.array() imports pandas on first use (0.5 s): done here, the forked writers inherit it
    # instead of each spending most of its life before its first commit on the import.
    pa.array(["warm"], pa.string())
    created = open_store(path)  # create it, so even the first kill leaves a store to check
    with log_path.open("a") as fh:  # and its state, for a kill before the writer logs its own
        _log(fh, start=digest(live_rows(created.collection)))
    counts = {"kills": 0, "acked_commits": 0}
    for round_ in range(kills):
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                writer_loop(path, log_path, seed * 100_000 + round_)
            except BaseException:  # noqa: BLE001 - report any writer failure through the exit code
                code = 3
            os._exit(code)
        time.sleep(float(rng.uniform(0.02, 0.5)))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"the writer died on its own (status {status})"
        check_store(path, log_path)
        counts["kills"] += 1
    counts["acked_commits"] = log_path.read_text().count('"ack"')
    # Leftovers of killed commits are unreferenced; a cleanup with no grace removes them all.
    collection_module.CLEANUP_GRACE_SECONDS = 0.0
    try:
        store = open_store(path)
        store.compact()
        store.compact()
    finally:
        collection_module.CLEANUP_GRACE_SECONDS = 60.0
    listed = {e.file for e in store.collection.snapshot.manifest.files()}
    on_disk = {
        f"{sub}/{name}"
        for sub in ("_segments", "_deletions", "_quantizers")
        for name in os.listdir(path / sub)
    }
    assert on_disk == listed, on_disk ^ listed
    assert os.listdir(path / "_versions") == [f"{store.collection.snapshot.version:020d}.json"]
    return counts


def test_sigkill_writer_short(tmp_path) -> None:
    counts = run_kills(tmp_path / "store", tmp_path / "log.jsonl", kills=25, seed=1)
    assert counts["acked_commits"] > 25


@pytest.mark.long
def test_sigkill_writer_long(tmp_path) -> None:
    counts = run_kills(tmp_path / "store", tmp_path / "log.jsonl", kills=300, seed=2)
    assert counts["kills"] == 300


def test_sigkill_during_merging_adds(tmp_path, monkeypatch) -> None:
    # Two segments per tier: nearly every add merges, often several tiers at once (the forked
    # writer inherits the policy). Kills land inside merges as often as anywhere else.
    monkeypatch.setattr(collection_module, "MERGE_POLICY", MergePolicy(segments_per_tier=2, floor_rows=8))
    counts = run_kills(tmp_path / "store", tmp_path / "log.jsonl", kills=15, seed=3)
    assert counts["acked_commits"] > 15
