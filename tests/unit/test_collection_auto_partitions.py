"""Partitions "auto" (the default): a store gets lists on the add or compaction that makes it large.

The threshold (``_partitions.AUTO_PARTITION_ROWS``) and the list count are patched small here
(3,000 rows, 32 lists), so a store crosses after a few adds of seeded synthetic rows. Every
test runs for both quantizers with a partitioned scan (``partitioned_kind``).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq import calibration as calibration_module
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization import QUANTIZERS, BinaryQuantizer, ProductQuantizer, _partitions
from langchain_vq.quantization._partitions import PartitionedQuantizer
from langchain_vq.quantization.precision import float_rows
from langchain_vq.storage import StoreDirectory
from langchain_vq.synthetic import synthetic_embeddings
from tests.conftest import default_recall

if TYPE_CHECKING:
    from pathlib import Path

THRESHOLD = 3_000
LISTS = 32
ROWS = 6_000
DIM = 384


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores cross at 3,000 live rows and train 32 lists."""
    monkeypatch.setattr(_partitions, "AUTO_PARTITION_ROWS", THRESHOLD)
    monkeypatch.setattr(_partitions, "AUTO_PARTITIONS", LISTS)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_embeddings(ROWS, DIM, seed=0), synthetic_embeddings(50, DIM, seed=1)


def _add(collection: Collection, x: np.ndarray, start: int, stop: int) -> None:
    ids = [f"r{i}" for i in range(start, stop)]
    collection.add(ids, ids, [{"i": i} for i in range(start, stop)], collection.check_vectors(x[start:stop]))


def _ids(collection: Collection, queries: np.ndarray, m: int = 16) -> list[list[str]]:
    return [[r.id for r in rows] for rows in collection.search(queries, 10, rescore_multiplier=m)]


def _codes_by_id(collection: Collection) -> dict[str, bytes]:
    out = {}
    for view in collection.snapshot.views:
        codes = view.segment.codes
        assert codes is not None
        out.update(zip(view.segment.ids.to_pylist(), (bytes(c) for c in codes), strict=True))
    return out


def _check_every_row_listed(collection: Collection) -> PartitionedQuantizer:
    """Every segment carries each row's list: the one its stored vector is assigned to."""
    quantizer = collection.snapshot.quantizer
    assert isinstance(quantizer, PartitionedQuantizer) and quantizer.partitions == LISTS
    for view in collection.snapshot.views:
        stored = view.segment.stored_codes
        assert stored is not None and stored.lists is not None
        np.testing.assert_array_equal(stored.lists, quantizer.assign(float_rows(view.segment)))
    return quantizer


def test_the_add_crossing_the_threshold_lists_every_row_and_keeps_the_codes(
    tmp_path: Path, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, queries = data
    collection = Collection(CollectionConfig(quantization=partitioned_kind), tmp_path / "s")
    assert collection.auto_partitions
    for start in range(0, 2000, 1000):
        _add(collection, x, start, start + 1000)
    before = collection.snapshot.quantizer
    assert isinstance(before, QUANTIZERS[partitioned_kind]) and isinstance(before, PartitionedQuantizer)
    assert not before.partitioned and before.get_config()["partitions"] == "auto"
    assert all(v.segment.stored_codes.lists is None for v in collection.snapshot.views)  # type: ignore[union-attr]
    codes_before = _codes_by_id(collection)

    _add(collection, x, 2000, 3000)  # 3,000 live rows: crosses
    quantizer = _check_every_row_listed(collection)
    assert quantizer.get_config()["partitions"] == LISTS and 1 <= quantizer.nprobe <= LISTS  # type: ignore[operator]
    codes_after = _codes_by_id(collection)
    assert {i: codes_after[i] for i in codes_before} == codes_before  # no re-encoding
    assert collection.verify() == []

    _add(collection, x, 3000, 4000)  # later adds: lists at ingest, same quantizer
    assert collection.snapshot.quantizer is quantizer
    _check_every_row_listed(collection)
    answers = _ids(collection, queries)
    reopened = Collection(CollectionConfig(), tmp_path / "s")
    assert reopened.auto_partitions
    assert reopened.snapshot.quantizer.get_config() == quantizer.get_config()  # type: ignore[union-attr]
    assert _ids(reopened, queries) == answers


def test_recall_after_crossing_reaches_the_calibrated_target(
    partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """Through the vector store: the crossing add's commit calibrates the partitioned scan.

    The crossing add grows the store 1.5x, less than a recalibration's growth (2x): it is the
    new (partitioned) quantizer that makes the store measure again.
    """
    x, queries = data
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization=partitioned_kind)
    for start, stop in ((0, 2000), (2000, THRESHOLD)):
        ids = [str(i) for i in range(start, stop)]
        store.add_embeddings([f"t{i}" for i in range(start, stop)], x[start:stop], ids=ids)
        if stop == 2000:
            assert store.calibration is not None and store.calibration.rows == 2000
    quantizer = store.collection.snapshot.quantizer
    assert isinstance(quantizer, PartitionedQuantizer) and quantizer.partitions == LISTS
    calibration = store.calibration
    assert calibration is not None and calibration.rows == THRESHOLD and calibration.met
    assert calibration.version == store.collection.snapshot.version  # committed with the add
    assert default_recall(store, x[:THRESHOLD], queries) >= calibration.target


def test_lists_that_cap_recall_are_probed_more_in_the_crossing_commit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    partitioned_kind: str,
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    """Training chose one list of 4 (forced here) and multipliers stop at 64: the best list's
    ~750 rows hold more than the 640 candidates asked (so the scan is not widened to every
    list) but not the neighbours, no multiplier reaches the target, and the crossing commit's
    calibration probes the fewest lists that hold them, and saves that nprobe."""
    monkeypatch.setattr(_partitions, "choose_nprobe", lambda *args, **kwargs: 1)
    monkeypatch.setattr(_partitions, "AUTO_PARTITIONS", 4)
    monkeypatch.setattr(calibration_module, "DEFAULT_MULTIPLIERS", (1, 2, 4, 8, 16, 32, 64))
    x, queries = data
    path = tmp_path / "s"
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, quantization=partitioned_kind)
    for start, stop in ((0, 2000), (2000, THRESHOLD)):
        ids = [str(i) for i in range(start, stop)]
        store.add_embeddings([f"t{i}" for i in range(start, stop)], x[start:stop], ids=ids)
    quantizer = store.collection.snapshot.quantizer
    assert isinstance(quantizer, PartitionedQuantizer) and quantizer.partitions == 4
    assert 2 <= quantizer.nprobe <= 4  # type: ignore[operator]
    calibration = store.calibration
    assert calibration is not None and calibration.met and calibration.rows == THRESHOLD
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path)
    saved = reopened.collection.snapshot.quantizer
    assert isinstance(saved, PartitionedQuantizer) and saved.nprobe == quantizer.nprobe
    assert default_recall(reopened, x[:THRESHOLD], queries) >= calibration.target


def test_a_first_add_past_the_threshold_trains_with_lists(
    partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    collection = Collection(CollectionConfig(quantization=partitioned_kind))
    _add(collection, data[0], 0, ROWS)
    _check_every_row_listed(collection)


def test_explicit_zero_never_partitions(partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    collection = Collection(
        CollectionConfig(quantization=partitioned_kind, quantizer_options={"partitions": 0})
    )
    assert not collection.auto_partitions
    for start in range(0, ROWS, 2000):
        _add(collection, x, start, start + 2000)
    collection.compact()
    quantizer = collection.snapshot.quantizer
    assert quantizer is not None and not quantizer.partitioned
    assert quantizer.get_config()["partitions"] == 0
    assert all(v.segment.stored_codes.lists is None for v in collection.snapshot.views)  # type: ignore[union-attr]


def test_explicit_count_keeps_its_count(partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    collection = Collection(
        CollectionConfig(quantization=partitioned_kind, quantizer_options={"partitions": 8})
    )
    _add(collection, x, 0, ROWS)
    quantizer = collection.snapshot.quantizer
    assert quantizer is not None and quantizer.get_config()["partitions"] == 8


def test_compaction_lists_a_large_store_and_not_a_small_one(
    partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    collection = Collection(CollectionConfig(quantization=partitioned_kind))
    _add(collection, x, 0, 2500)
    collection.compact()
    assert not collection.snapshot.quantizer.partitioned  # type: ignore[union-attr]
    _add(collection, x, 2500, ROWS)
    first = collection.snapshot.quantizer
    assert first is not None and first.partitioned
    collection.delete([f"r{i}" for i in range(0, ROWS, 3)])
    collection.compact()  # retrained: new codebooks and new lists for the 4,000 live rows
    quantizer = _check_every_row_listed(collection)
    assert quantizer is not first
    collection.delete([f"r{i}" for i in range(ROWS) if i % 3])
    collection.add(["a"], ["a"], [None], collection.check_vectors(x[:1]))
    collection.compact()  # one live row: nothing to train on, exact search
    assert collection.snapshot.quantizer is None


@pytest.mark.parametrize("options", [{"nbits": 8}, {"fast_scan": False}])
def test_settings_without_a_partitioned_scan_stay_full_scans(
    options: dict[str, object], data: tuple[np.ndarray, np.ndarray]
) -> None:
    kind = "pq" if "nbits" in options else "binary"
    collection = Collection(CollectionConfig(quantization=kind, quantizer_options=options))
    _add(collection, data[0], 0, ROWS)
    quantizer = collection.snapshot.quantizer
    assert quantizer is not None and not quantizer.partitioned


def test_a_codes_only_store_keeps_the_full_scan(data: tuple[np.ndarray, np.ndarray]) -> None:
    """No stored vectors to assign its rows from."""
    collection = Collection(CollectionConfig(quantization="binary", rescore_precision="none"))
    _add(collection, data[0], 0, 2000)
    _add(collection, data[0], 2000, ROWS)
    assert not collection.snapshot.quantizer.partitioned  # type: ignore[union-attr]


@pytest.mark.parametrize("saved", ["without the keys", "partitions 0"])
def test_an_old_store_opens_as_before_and_becomes_auto_on_its_next_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray], saved: str
) -> None:
    """A store saved before "auto" answers as before, and its next add at the size lists it.

    Its quantizer config has no ``partitions`` (saved before partitions existed) or
    ``partitions: 0`` (the old default); its options in the manifest name none.
    """
    x, queries = data
    legacy = BinaryQuantizer.get_config

    def old_config(self: BinaryQuantizer) -> dict[str, object]:
        config = legacy(self)
        if saved == "partitions 0":
            config.update(partitions=0, nprobe=None)
        else:
            del config["partitions"], config["nprobe"]
        return config

    with monkeypatch.context() as patch:
        patch.setattr(BinaryQuantizer, "get_config", old_config)
        patch.setattr(_partitions, "AUTO_PARTITION_ROWS", 10**9)  # written by code without the option
        old = Collection(CollectionConfig(), tmp_path / "old")
        _add(old, x, 0, 2000)
        answers = _ids(old, queries)
        state = old.snapshot.manifest.quantizer_state  # type: ignore[union-attr]
    config, _ = StoreDirectory(tmp_path / "old").read_quantizer_state(state)  # type: ignore[arg-type]
    assert config.get("partitions", "absent") == ("absent" if saved == "without the keys" else 0)

    reopened = Collection(CollectionConfig(), tmp_path / "old")
    assert not reopened.snapshot.quantizer.partitioned  # type: ignore[union-attr]
    assert _ids(reopened, queries) == answers
    assert reopened.auto_partitions  # its options never named partitions: the default applies
    _add(reopened, x, 2000, 3500)
    _check_every_row_listed(reopened)


def _crash_in_child(path: Path, x: np.ndarray, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Fork a writer that SIGKILLs itself inside the crossing add (``where``), and wait for it."""
    pid = os.fork()
    if pid == 0:  # the writer
        try:
            calls = {"n": 0}
            original = getattr(StoreDirectory, where)

            def killing(self: StoreDirectory, *args: object, **kwargs: object) -> object:
                calls["n"] += 1
                if calls["n"] == 2 or where == "commit":  # a segment file written, or all of them
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(self, *args, **kwargs)

            monkeypatch.setattr(StoreDirectory, where, killing)
            _add(Collection(CollectionConfig(), path), x, 2000, 3000)
        finally:
            os._exit(3)  # not reached when killed
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("where", ["write_segment", "commit"])
def test_a_crash_during_the_crossing_add_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray], where: str
) -> None:
    x, queries = data
    path = tmp_path / "s"
    collection = Collection(CollectionConfig(quantization="binary"), path)
    for start in range(0, 2000, 1000):
        _add(collection, x, start, start + 1000)
    version, answers = collection.snapshot.version, _ids(collection, queries)

    _crash_in_child(path, x, monkeypatch, where)

    reopened = Collection(CollectionConfig(), path)
    assert reopened.snapshot.version == version
    assert reopened.verify() == []
    assert not reopened.snapshot.quantizer.partitioned  # type: ignore[union-attr]
    assert _ids(reopened, queries) == answers
    _add(reopened, x, 2000, 3000)  # the retried add crosses
    _check_every_row_listed(reopened)


@pytest.mark.parametrize(
    ("partitions", "nprobe", "words"),
    [
        ("sometimes", None, ["'sometimes'", "'auto'", "0"]),
        (-1, None, ["-1"]),
        (1.5, None, ["1.5"]),
        (True, None, ["True"]),
        ("auto", 4, ["nprobe=4", "partitions='auto'"]),
        (None, 4, ["nprobe=4"]),
    ],
)
def test_bad_partition_options_give_typed_errors(
    partitioned_kind: str, partitions: object, nprobe: object, words: list[str]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        QUANTIZERS[partitioned_kind](DIM, partitions=partitions, nprobe=nprobe)  # type: ignore[call-arg]
    for word in words:
        assert word in str(caught.value)


def test_auto_is_spelled_auto_or_none(partitioned_kind: str) -> None:
    for value in ("auto", "AUTO", None):
        quantizer = QUANTIZERS[partitioned_kind](DIM, partitions=value)  # type: ignore[call-arg]
        assert isinstance(quantizer, PartitionedQuantizer)
        assert quantizer.auto_partitions and not quantizer.partitioned
        assert quantizer.get_config()["partitions"] == "auto"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"partitions": "lots"}, "'lots' is not a partition option"),
        ({"nprobe": 3}, "without a number of partitions"),
    ],
)
def test_a_bad_option_fails_when_the_store_is_opened(
    tmp_path: Path, options: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Collection(CollectionConfig(quantizer_options=options), tmp_path / "s")
    with pytest.raises(InvalidInputError, match=match):
        VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization="pq", quantizer_options=options)
    assert not (tmp_path / "s").exists()  # nothing written


def test_with_partitions_refuses_what_it_cannot_do(data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0]
    partitioned = BinaryQuantizer(DIM, partitions=8).fit(x[:2000])
    with pytest.raises(ConfigurationError, match="partitions=8"):
        partitioned.with_partitions(x[:2000], 8)
    with pytest.raises(ConfigurationError, match="nbits"):
        ProductQuantizer(DIM, nbits=8).fit(x[:2000]).with_partitions(x[:2000], 8)
    plain = BinaryQuantizer(DIM).fit(x[:2000])
    with pytest.raises(InvalidInputError, match="39 rows per list"):
        plain.with_partitions(x[:100], 8)
    listed = plain.with_partitions(x[:2000], 8)
    assert listed.partitions == 8 and listed is not plain and not plain.partitioned
    np.testing.assert_array_equal(listed.encode(x[:50]), plain.encode(x[:50]))
