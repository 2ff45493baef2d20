"""Power loss: every crash point of a journaled workload, with unsynced writes lost or torn.

A workload (create, adds that train the binary quantizer, upserts, deletes, compactions with
cleanup) runs once through :class:`JournalingFileOps`. For every step of its journal, and several
random outcomes of each, :func:`crash_image` writes what a power loss there could leave on disk.
Each image must open, pass ``verify()``, hold exactly the last acknowledged commit or the one in
flight (never a mix), and accept the next write.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pytest

from langchain_vq import collection as collection_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.merge_policy import MergePolicy
from langchain_vq.storage import StoreDirectory
from tests.reliability._common import digest, live_rows, vectors_for
from tests.reliability.faults import JournalingFileOps, Step, crash_image

if TYPE_CHECKING:
    from pathlib import Path

CONFIG = CollectionConfig(metric="cosine", quantization="binary")


@dataclass
class Journal:
    root: Path
    steps: list[Step]
    states: list[dict[str, str]]  # rows after acknowledged commit i (0: the empty store)
    acks: list[int] = field(default_factory=list)  # step index of each "ack:i" mark
    begins: list[int] = field(default_factory=list)  # step index of each "begin:i" mark


def _add(col: Collection, ids: list[str], tag: str) -> None:
    texts = [f"{i} {tag}" for i in ids]
    metas = [{"tag": tag} for _ in ids]
    col.add(ids, texts, metas, col.check_vectors(vectors_for(ids, tag)))


def run_workload(root: Path, seed: int, n_ops: int, monkeypatch: pytest.MonkeyPatch) -> Journal:
    """Run a seeded random workload on a new store under ``root``; return its journal."""
    monkeypatch.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    fs = JournalingFileOps()
    model: dict[str, str] = {}
    states = [{}]
    fs.mark("begin:0")
    col = Collection(CONFIG, root / "store", fs=fs)
    fs.mark("ack:0")
    next_id = 0
    for i in range(1, n_ops + 1):
        kind = "add" if len(model) < 20 else rng.choice(["add", "add", "upsert", "delete", "compact"])
        fs.mark(f"begin:{i}")
        if kind == "add":
            n = int(rng.integers(5, 40))
            ids = [f"d{next_id + j}" for j in range(n)]
            next_id += n
            _add(col, ids, f"v{i}")
            model.update({x: f"{x} v{i}" for x in ids})
        elif kind == "upsert":
            ids = [str(x) for x in rng.choice(sorted(model), size=min(8, len(model)), replace=False)]
            ids += [f"d{next_id}"]
            next_id += 1
            _add(col, ids, f"v{i}")
            model.update({x: f"{x} v{i}" for x in ids})
        elif kind == "delete":
            ids = [str(x) for x in rng.choice(sorted(model), size=min(6, len(model)), replace=False)]
            col.delete([*ids, "never-added"])
            for x in ids:
                del model[x]
        else:
            col.compact()
        fs.mark(f"ack:{i}")
        states.append(dict(model))
        assert live_rows(col) == model, (seed, i, kind)
    journal = Journal(root, fs.steps, states)
    for index, step in enumerate(fs.steps):
        if step.kind == "mark":
            (journal.acks if step.label.startswith("ack:") else journal.begins).append(index)
    return journal


def crash_points(journal: Journal) -> list[int]:
    """Every distinct prefix length that ends on a file operation (marks change nothing)."""
    return [i + 1 for i, step in enumerate(journal.steps) if step.kind != "mark"] + [0]


def check_crash_point(
    journal: Journal, upto: int, image: Path, rng: np.random.Generator, mode: str, *, write_after: bool
) -> str:
    """Build one crash image and check it; returns "absent", "old" or "new" (which state it held)."""
    shutil.rmtree(image, ignore_errors=True)
    crash_image(journal.root, journal.steps, upto, image, rng, mode)  # type: ignore[arg-type]
    acked = sum(1 for a in journal.acks if a < upto)  # commits acknowledged before the crash
    in_flight = sum(1 for b in journal.begins if b < upto) > acked
    where = f"crash after step {upto} ({journal.steps[upto - 1] if upto else 'start'}), mode {mode}"
    store = image / "store"
    if not StoreDirectory(store).exists():
        assert acked == 0, f"{where}: the store vanished after its creation was acknowledged"
        return "absent"
    col = Collection(CONFIG, store)
    problems = col.verify()
    assert problems == [], f"{where}: {problems}"
    rows = live_rows(col)
    old = journal.states[acked - 1] if acked else {}
    new = journal.states[acked] if in_flight and acked < len(journal.states) else None
    if rows == old:
        outcome = "old"
    elif new is not None and rows == new:
        outcome = "new"
    else:
        msg = f"{where}: rows {digest(rows)} are neither the acknowledged state nor the one in flight"
        raise AssertionError(msg)
    if write_after:
        expected = dict(rows)
        victim = sorted(expected)[:1]
        col.delete(victim)
        _add(col, ["after-crash"], "after")
        for x in victim:
            del expected[x]
        expected["after-crash"] = "after-crash after"
        reopened = Collection(CONFIG, store)
        assert reopened.verify() == [], where
        assert live_rows(reopened) == expected, where
    return outcome


def run_power_losses(
    journal: Journal, image: Path, *, random_variants: int, seed: int, write_every: int = 4
) -> dict[str, int]:
    """Check every crash point of ``journal``; returns counts of outcomes."""
    rng = np.random.default_rng(seed)
    counts = {"images": 0, "absent": 0, "old": 0, "new": 0}
    for n, upto in enumerate(crash_points(journal)):
        for mode in ["nothing", "everything"] + ["random"] * random_variants:
            outcome = check_crash_point(journal, upto, image, rng, mode, write_after=n % write_every == 0)
            counts["images"] += 1
            counts[outcome] += 1
    return counts


def test_power_loss_at_every_step_short(tmp_path, monkeypatch) -> None:
    journal = run_workload(tmp_path / "live", seed=1, n_ops=10, monkeypatch=monkeypatch)
    assert any(s.kind == "remove" for s in journal.steps)  # compaction cleanup was exercised
    counts = run_power_losses(journal, tmp_path / "image", random_variants=2, seed=1)
    assert counts["images"] > 400
    assert counts["new"] > 0 and counts["old"] > 0


def test_power_loss_during_merging_adds(tmp_path, monkeypatch) -> None:
    # Two segments per tier: most adds merge segments in their commit (a cascade, often).
    monkeypatch.setattr(collection_module, "MERGE_POLICY", MergePolicy(segments_per_tier=2, floor_rows=8))
    journal = run_workload(tmp_path / "live", seed=7, n_ops=8, monkeypatch=monkeypatch)
    merged = Collection(CONFIG, journal.root / "store").snapshot.views
    assert len(merged) < 8  # eight commits, most of them adds: merges happened
    counts = run_power_losses(journal, tmp_path / "image", random_variants=1, seed=7)
    assert counts["new"] > 0 and counts["old"] > 0


@pytest.mark.long
@pytest.mark.parametrize("seed", range(2, 6))
def test_power_loss_at_every_step_long(tmp_path, monkeypatch, seed) -> None:
    journal = run_workload(tmp_path / "live", seed=seed, n_ops=25, monkeypatch=monkeypatch)
    counts = run_power_losses(journal, tmp_path / "image", random_variants=8, seed=seed, write_every=2)
    assert counts["images"] > 1000
