"""Damage: truncation and byte changes in every kind of store file.

Each trial damages one file of a copy of a store, then, in a forked child (so a crash shows as a
signal instead of killing the test run), opens the store and searches it (plain, filtered, by id,
MMR). Allowed outcomes: a ``CorruptStoreError`` whose message names the damaged file, or working
search (damage to vector, code or text bytes that open does not read). ``verify()`` (and
``langchain-vq verify``, exit status 1) must detect every trial through sizes and checksums.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from typing import TYPE_CHECKING

import numpy as np
import pytest

from langchain_vq import CorruptStoreError, StoreError
from langchain_vq.cli import main as cli_main
from langchain_vq.storage import StoreDirectory
from tests.reliability._common import open_store, vectors_for

if TYPE_CHECKING:
    from pathlib import Path

KINDS = ("segment", "manifest", "deletions", "quantizer")
_TRIAL_TIMEOUT = 60.0


def build_store(path: Path) -> None:
    """A trained binary store with two segments, deletions and a quantizer state file."""
    store = open_store(path)
    for part in range(2):
        ids = [f"p{part}-{i}" for i in range(100)]
        metas = [{"part": part, "i": i, "name": f"n{i}"} for i in range(100)]
        store.add_embeddings([f"text {x}" for x in ids], vectors_for(ids), metas, ids)
    store.delete([f"p0-{i}" for i in range(0, 100, 7)] + [f"p1-{i}" for i in range(0, 100, 9)])


def files_of_kind(path: Path, kind: str) -> list[Path]:
    """The files of the current version of one kind."""
    directory = StoreDirectory(path)
    manifest = directory.read_manifest()
    if kind == "manifest":
        return [path / "_versions" / f"{manifest.version:020d}.json"]
    if kind == "quantizer":
        return [path / manifest.quantizer_state.file]  # type: ignore[union-attr]
    if kind == "deletions":
        return [path / s.deletions.file for s in manifest.segments if s.deletions]
    return [path / s.data.file for s in manifest.segments]


def damage(path: Path, rng: np.random.Generator) -> str:
    """Damage ``path`` in place; returns a description."""
    data = bytearray(path.read_bytes())
    how = int(rng.integers(4))
    if how == 0:
        cut = int(rng.integers(0, len(data)))
        path.write_bytes(bytes(data[:cut]))
        return f"truncated to {cut} of {len(data)} bytes"
    if how == 1:
        pos = int(rng.integers(len(data)))
        data[pos] ^= int(rng.integers(1, 256))
        desc = f"byte {pos} changed"
    elif how == 2:
        pos = int(rng.integers(len(data)))
        bit = int(rng.integers(8))
        data[pos] ^= 1 << bit
        desc = f"bit {bit} of byte {pos} flipped"
    else:
        start = int(rng.integers(len(data)))
        stop = min(len(data), start + int(rng.integers(2, 64)))
        data[start:stop] = rng.bytes(stop - start)
        desc = f"bytes {start}:{stop} replaced by random bytes"
        if data == bytearray(path.read_bytes()):
            data[start] ^= 1
    path.write_bytes(bytes(data))
    return desc


def _use_store(path: Path, result_file: Path) -> None:
    """In the child: open and search the store, write what happened as JSON."""
    outcome: dict[str, object]
    try:
        store = open_store(path)
        query = vectors_for(["query"])[0].tolist()
        store.similarity_search_by_vector(query, k=5)
        store.similarity_search_by_vector(query, k=5, filter={"part": 1})
        store.similarity_search_by_vector(query, k=500, filter={"name": {"$in": ["n3", "n4"]}})
        store.get_by_ids(["p0-1", "p1-50"])
        store.max_marginal_relevance_search_by_vector(query, k=3, fetch_k=10)
        outcome = {"result": "ok"}
    except CorruptStoreError as exc:
        outcome = {"result": "corrupt", "message": str(exc), "path": exc.path}
    except StoreError as exc:
        outcome = {"result": "store_error", "type": type(exc).__name__, "message": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - report whatever escaped
        outcome = {"result": "untyped", "type": type(exc).__name__, "message": str(exc)[:500]}
    result_file.write_text(json.dumps(outcome))


def run_in_child(path: Path, result_file: Path) -> dict[str, object]:
    """Fork, use the store in the child; returns its outcome or the signal that killed it."""
    result_file.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:
        try:
            _use_store(path, result_file)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"result": "signal", "signal": signal.Signals(os.WTERMSIG(status)).name}
    return json.loads(result_file.read_text())


def verify_problems(path: Path) -> list[str]:
    """What ``verify`` finds (a manifest that cannot be read counts as a problem)."""
    try:
        store = open_store(path)
    except CorruptStoreError as exc:
        return [str(exc)]
    return store.verify()


def run_damage_trials(base: Path, work: Path, trials_per_kind: int, seed: int) -> dict[str, dict[str, int]]:
    """Damage every kind of file ``trials_per_kind`` times; returns outcome counts per kind."""
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        tally = counts.setdefault(
            kind, {"trials": 0, "detected_by_verify": 0, "typed_error_on_use": 0, "ok": 0}
        )
        for trial in range(trials_per_kind):
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            candidates = files_of_kind(work, kind)
            target = candidates[trial % len(candidates)]
            desc = damage(target, rng)
            where = f"{kind} {target.name}: {desc}"
            outcome = run_in_child(work, work.parent / "outcome.json")
            tally["trials"] += 1
            assert outcome["result"] in {"ok", "corrupt"}, f"{where}: {outcome}"
            if outcome["result"] == "corrupt":
                assert str(target) in str(outcome["message"]), f"{where}: {outcome}"
                tally["typed_error_on_use"] += 1
            else:
                assert kind == "segment", f"{where}: damage went unnoticed on open"
                tally["ok"] += 1
            problems = verify_problems(work)
            assert any(str(target) in p for p in problems), f"{where}: verify found {problems}"
            tally["detected_by_verify"] += 1
            if trial % 5 == 0:
                assert cli_main(["verify", str(work)]) == 1, where
    return counts


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("damage") / "base"
    build_store(path)
    assert open_store(path).verify() == []
    assert cli_main(["verify", str(path)]) == 0
    return path


def test_damage_every_kind_of_file_short(base_store, tmp_path) -> None:
    counts = run_damage_trials(base_store, tmp_path / "work", trials_per_kind=15, seed=0)
    assert all(c["detected_by_verify"] == c["trials"] for c in counts.values())


@pytest.mark.long
def test_damage_every_kind_of_file_long(base_store, tmp_path) -> None:
    counts = run_damage_trials(base_store, tmp_path / "work", trials_per_kind=250, seed=1)
    assert all(c["detected_by_verify"] == c["trials"] for c in counts.values())


def test_open_validation_cost_on_a_million_rows(tmp_path) -> None:
    """Opening a 1M-row store (with the offsets checks) stays far below 100 ms."""
    import time

    import pyarrow as pa

    from langchain_vq.storage.segment import (
        build_segment,
        check_segment_table,
        read_arrow_file,
        serialize_table,
    )

    n, dim = 1_000_000, 8
    rng = np.random.default_rng(0)
    ids = [f"id-{i}" for i in range(n)]
    segment = build_segment("s", ids, ids, ['{"i": 1}'] * n, rng.random((n, dim), dtype=np.float32), None)
    path = tmp_path / "seg.arrow"
    path.write_bytes(serialize_table(segment.table).to_pybytes())
    read_arrow_file(path, None, n)  # warm the page cache, as a reopen would find it
    start = time.perf_counter()
    table = read_arrow_file(path, segment.table.schema, n)
    opened = time.perf_counter()
    check_segment_table(table, path)
    checked = time.perf_counter()
    assert isinstance(table, pa.Table)
    assert checked - start < 0.1, (opened - start, checked - opened)
