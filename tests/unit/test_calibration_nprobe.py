"""Lists that cap recall after the commit that trained them: a later calibration probes more.

A partitioned store's ``nprobe`` is chosen at training on the training sample's neighbours
(``_ivf.choose_nprobe``). A calibration that cannot meet its goal because the probed lists do not
hold the neighbours commits a copy of the quantizer with more ``nprobe`` (``StagedChange``), at
the crossing add and at any later calibration; one whose codes just need more candidates keeps
its lists. Sizes are patched small (3,000 rows cross, 4 or 32 lists) on seeded synthetic rows.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq import calibration as calibration_module
from langchain_vq.collection import Collection, CollectionConfig, StagedChange
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization import BinaryQuantizer, _partitions
from langchain_vq.quantization._partitions import PartitionedQuantizer
from langchain_vq.storage import StoreDirectory
from langchain_vq.synthetic import synthetic_embeddings
from tests.conftest import default_recall

if TYPE_CHECKING:
    from pathlib import Path

THRESHOLD = 3_000
DIM = 384


@pytest.fixture(autouse=True)
def small_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores cross at 3,000 live rows into 4 lists; multipliers stop at 64.

    The best list's ~750 rows hold more than the 640 candidates asked, so a query's scan is never
    widened to every list, and one probed list really caps recall.
    """
    monkeypatch.setattr(_partitions, "AUTO_PARTITION_ROWS", THRESHOLD)
    monkeypatch.setattr(_partitions, "AUTO_PARTITIONS", 4)
    monkeypatch.setattr(calibration_module, "DEFAULT_MULTIPLIERS", (1, 2, 4, 8, 16, 32, 64))


@pytest.fixture
def one_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training probes 1 list (forced), as if ``choose_nprobe`` had measured too few neighbours."""
    monkeypatch.setattr(_partitions, "choose_nprobe", lambda *args, **kwargs: 1)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_embeddings(6_000, DIM, seed=0), synthetic_embeddings(50, DIM, seed=1)


def _store(path: Path | None, **kwargs: object) -> VQVectorStore:
    return VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, **kwargs)  # type: ignore[arg-type]


def _add(store: VQVectorStore, x: np.ndarray, start: int, stop: int) -> None:
    ids = [str(i) for i in range(start, stop)]
    store.add_embeddings([f"t{i}" for i in ids], x[start:stop], ids=ids)


def _quantizer(store: VQVectorStore) -> PartitionedQuantizer:
    quantizer = store.collection.snapshot.quantizer
    assert isinstance(quantizer, PartitionedQuantizer) and quantizer.partitioned
    return quantizer


def _built_for_a_low_target(path: Path, x: np.ndarray, kind: str = "binary") -> VQVectorStore:
    """A store that crossed with a calibration for recall 0.5: met at 1 list of 4, so nprobe stays 1."""
    store = _store(path, quantization=kind, recall_target=0.5)
    _add(store, x, 0, 2000)
    _add(store, x, 2000, THRESHOLD)
    assert _quantizer(store).nprobe == 1
    assert store.calibration is not None and store.calibration.met
    return store


@pytest.mark.usefixtures("one_list")
@pytest.mark.parametrize("kind", ["binary", "pq"])
def test_a_later_calibration_whose_lists_cap_recall_commits_more_nprobe(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    """The store is reopened for recall 0.99: its next add calibrates on the saved quantizer, whose
    one probed list holds too few neighbours for any multiplier. Before the fix it served the
    largest multiplier, unmet, at nprobe 1."""
    x, queries = data
    path = tmp_path / "s"
    built = _built_for_a_low_target(path, x, kind)
    before = _quantizer(built)
    state_before = built.collection.snapshot.manifest.quantizer_state  # type: ignore[union-attr]

    store = _store(path, recall_target=0.99)
    _add(store, x, THRESHOLD, 3500)
    calibration = store.calibration
    assert calibration is not None and calibration.rows == 3500 and calibration.met
    quantizer = _quantizer(store)
    assert 1 < quantizer.nprobe <= 4  # type: ignore[operator]
    assert quantizer.get_config() == {**before.get_config(), "nprobe": quantizer.nprobe}
    manifest = store.collection.snapshot.manifest
    assert manifest is not None and manifest.quantizer_state != state_before  # written with the commit
    assert calibration.version == manifest.version
    assert before.nprobe == 1  # the old version's quantizer is never changed in place: no mix

    reopened = _store(path)
    assert _quantizer(reopened).nprobe == quantizer.nprobe
    assert reopened.rescore_multiplier == store.rescore_multiplier
    assert default_recall(reopened, x[:3500], queries) >= calibration.target
    assert reopened.verify() == []


@pytest.mark.usefixtures("one_list")
def test_calibrate_commits_more_nprobe_on_the_newest_version(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, queries = data
    path = tmp_path / "s"
    built = _built_for_a_low_target(path, x)
    version = built.collection.snapshot.version
    store = _store(path, recall_target=0.99)
    calibration = store.calibrate()
    assert calibration is not None and calibration.met and calibration.version == version + 1
    assert store.collection.snapshot.version == version + 1
    assert _quantizer(store).nprobe > 1  # type: ignore[operator]
    reopened = _store(path)
    assert reopened.calibration == calibration
    assert _quantizer(reopened).nprobe == _quantizer(store).nprobe
    assert default_recall(reopened, x[:THRESHOLD], queries) >= calibration.target
    # Nothing due: no measurement, no commit.
    assert store.calibrate(force=False) == calibration
    assert store.collection.snapshot.version == version + 1


def test_a_user_nprobe_is_never_raised(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    x, _ = data
    path = tmp_path / "s"
    store = _store(path, recall_target=0.99, quantizer_options={"partitions": 4, "nprobe": 1})
    with caplog.at_level(logging.WARNING, logger="langchain_vq.vectorstore"):
        _add(store, x, 0, 2000)
        _add(store, x, 2000, 4000)  # 2x: a later calibration, on the saved quantizer
    assert "is not reached" in caplog.text
    assert store.calibration is not None and store.calibration.rows == 4000 and not store.calibration.met
    assert _quantizer(store).nprobe == 1
    # Reopened without options, the store's own (with nprobe) still say "the user's".
    reopened = _store(path)
    reopened.calibrate()
    assert _quantizer(reopened).nprobe == 1


def test_codes_that_need_more_candidates_keep_their_lists(
    monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """Multipliers stop at 2, far too few for binary codes, while the lists training chose hold
    the neighbours: the unmet calibration does not probe more lists (the guard before doubled
    nprobe whenever the crossing calibration missed, to every list here)."""
    monkeypatch.setattr(_partitions, "AUTO_PARTITIONS", 32)
    monkeypatch.setattr(calibration_module, "DEFAULT_MULTIPLIERS", (1, 2))
    chosen = []
    choose = _partitions.choose_nprobe

    def recorded(*args: object, **kwargs: object) -> int:
        chosen.append(choose(*args, **kwargs))  # type: ignore[arg-type]
        return chosen[-1]

    monkeypatch.setattr(_partitions, "choose_nprobe", recorded)
    x, _ = data
    store = _store(None)
    _add(store, x, 0, 2000)
    _add(store, x, 2000, THRESHOLD)
    quantizer = _quantizer(store)
    assert store.calibration is not None and not store.calibration.met
    assert len(chosen) == 1 and quantizer.nprobe == chosen[0] < 32


@pytest.mark.usefixtures("one_list")
def test_a_crash_between_the_state_write_and_the_commit_leaves_the_old_nprobe(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, queries = data
    path = tmp_path / "s"
    built = _built_for_a_low_target(path, x)
    version, state = built.collection.snapshot.version, built.collection.snapshot.manifest.quantizer_state  # type: ignore[union-attr]
    answers = [[r.id for r in rows] for rows in built.collection.search(queries, 10, rescore_multiplier=8)]
    pid = os.fork()
    if pid == 0:  # the writer: killed once the new quantizer state is on disk, before the commit
        try:
            written = {"n": 0}
            write_state = StoreDirectory.write_quantizer_state
            commit = StoreDirectory.commit

            def counting(self: StoreDirectory, *args: object, **kwargs: object) -> object:
                written["n"] += 1
                return write_state(self, *args, **kwargs)  # type: ignore[arg-type]

            def killing(self: StoreDirectory, *args: object, **kwargs: object) -> object:
                if written["n"]:
                    os.kill(os.getpid(), signal.SIGKILL)
                return commit(self, *args, **kwargs)  # type: ignore[arg-type]

            StoreDirectory.write_quantizer_state = counting  # type: ignore[method-assign]
            StoreDirectory.commit = killing  # type: ignore[method-assign]
            _add(_store(path, recall_target=0.99), x, THRESHOLD, 3500)
        finally:
            os._exit(3)  # not reached when killed
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    reopened = _store(path)
    snapshot = reopened.collection.snapshot
    assert snapshot.version == version and snapshot.manifest.quantizer_state == state  # type: ignore[union-attr]
    assert _quantizer(reopened).nprobe == 1 and reopened.verify() == []
    assert [
        [r.id for r in rows] for rows in reopened.collection.search(queries, 10, rescore_multiplier=8)
    ] == answers
    retried = _store(path, recall_target=0.99)
    _add(retried, x, THRESHOLD, 3500)  # the retried add commits the new nprobe
    assert _quantizer(retried).nprobe > 1  # type: ignore[operator]


def test_a_hook_may_only_replace_nprobe(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    collection = Collection(CollectionConfig(quantizer_options={"partitions": 4}), tmp_path / "s")
    vectors = collection.check_vectors(x[:2000])
    ids = [str(i) for i in range(2000)]
    collection.add(ids, ids, [None] * 2000, vectors)
    quantizer = collection.snapshot.quantizer
    assert isinstance(quantizer, PartitionedQuantizer)
    version = collection.snapshot.version
    other = BinaryQuantizer(DIM, partitions=4, nprobe=2).fit(x[2000:4000])  # other lists
    for bad in (other, BinaryQuantizer(DIM, partitions=0).fit(x[:2000])):
        with pytest.raises(ConfigurationError, match="with_nprobe"):
            collection.update_settings(settings_for=lambda _c, _s, q=bad: StagedChange({"a": 1}, q))
        assert collection.snapshot.version == version
    assert collection.update_settings(settings_for=lambda _c, _s: None) is False
    assert collection.snapshot.version == version
    with pytest.raises(InvalidInputError, match="exactly one"):
        collection.update_settings({"a": 1}, settings_for=lambda _c, _s: None)

    chosen = quantizer.nprobe
    wider = quantizer.with_nprobe(3 if chosen != 3 else 4)
    assert collection.update_settings(settings_for=lambda _c, staged: StagedChange({"a": 1}, wider))
    assert collection.snapshot.settings["a"] == 1
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    saved = reopened.snapshot.quantizer
    assert isinstance(saved, PartitionedQuantizer) and saved.nprobe == wider.nprobe != chosen
    assert quantizer.nprobe == chosen
    np.testing.assert_array_equal(saved.partition_centroids_, quantizer.partition_centroids_)


def test_with_nprobe_copies_and_list_ranks_bound_what_a_search_returns(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    """Rows a search at any multiplier returns lie in lists of rank below nprobe."""
    x, queries = data
    collection = Collection(CollectionConfig(quantizer_options={"partitions": 8, "nprobe": 3}))
    ids = [str(i) for i in range(4000)]
    collection.add(ids, ids, [None] * 4000, collection.check_vectors(x[:4000]))
    q = collection.check_vectors(queries)
    found = collection.search_keys(q, 10, rescore_multiplier=30)  # 300 candidates, lists of ~500
    ranks = collection.list_ranks(q, found)
    assert ranks.shape == found.shape and ((ranks >= 0) & (ranks < 3)).all()
    truth = collection.search_keys(q, 10, exact=True)
    truth_ranks = collection.list_ranks(q, truth)
    assert (truth_ranks >= 3).any()  # some neighbours lie outside: they are what the lists cap
    quantizer = collection.snapshot.quantizer
    assert isinstance(quantizer, PartitionedQuantizer)
    copy = quantizer.with_nprobe(8)
    assert copy.nprobe == 8 and quantizer.nprobe == 3 and copy is not quantizer
    with pytest.raises(InvalidInputError, match="nprobe"):
        quantizer.with_nprobe(9)
    with pytest.raises(ConfigurationError, match="partitions > 0"):
        BinaryQuantizer(DIM, partitions=0).fit(x[:2000]).with_nprobe(1)
