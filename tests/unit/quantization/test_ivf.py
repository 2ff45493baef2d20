"""Unit tests of the partitioned first stage: ``BinaryQuantizer(partitions=...)`` and ``_ivf``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from langchain_vq.code_blocks import StoredCodes, pack_blocks, to_blocked
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization import BinaryQuantizer, quantizer_from_config
from langchain_vq.quantization._fast_scan import NibbleFastScan
from langchain_vq.quantization._ivf import (
    NPROBE_COVERAGE,
    choose_nprobe,
    list_blocks,
    neighbour_list_ranks,
)
from langchain_vq.search.engine import exact_search
from langchain_vq.synthetic import synthetic_embeddings

PARTITIONS = 64


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """20k synthetic MiniLM-like rows and 100 queries, seeded."""
    return synthetic_embeddings(20_000, seed=0), synthetic_embeddings(100, seed=1)


@pytest.fixture(scope="module")
def partitioned(data: tuple[np.ndarray, np.ndarray]) -> BinaryQuantizer:
    return BinaryQuantizer(384, partitions=PARTITIONS).fit(data[0])


def rescored_recall(
    quantizer: BinaryQuantizer, x: np.ndarray, q: np.ndarray, codes: StoredCodes, m: int
) -> float:
    """recall@10 against exact float search of the code top ``10 * m`` rescored with floats."""
    truth = exact_search(x, q, 10).rows
    _, cand = quantizer.search(q, codes, 10 * m, reuse=True)
    found = [cand[i][np.argsort(-(x[cand[i]] @ q[i]), kind="stable")[:10]] for i in range(len(q))]
    return float(np.mean([np.isin(truth[i], found[i]).mean() for i in range(len(q))]))


@pytest.mark.parametrize(("dim", "metric"), [(384, "ip"), (97, "ip"), (40, "l2")])
def test_every_list_probed_scores_as_the_full_fast_scan(dim: int, metric: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, dim)).astype(np.float32) + 0.3
    q = rng.normal(size=(7, dim)).astype(np.float32)
    quantizer = BinaryQuantizer(dim, metric=metric, partitions=16).fit(x)  # type: ignore[arg-type]
    codes = StoredCodes(quantizer.encode(x))
    full = NibbleFastScan(codes, quantizer.low_, quantizer.high_, metric)
    ivf = quantizer._build_ivf(StoredCodes(codes.stored, lists=quantizer.assign(x)))  # as a store builds it
    full_scores, _ = full.search(q, 50)
    ivf_scores, ivf_rows = ivf.search(q, 50, nprobe=16)
    np.testing.assert_array_equal(ivf_scores, full_scores)  # same kernel, same 8-bit tables
    # And they are the quantizer's asymmetric scores of the rows returned (within the tables' rounding).
    exact = np.take_along_axis(quantizer.score(q, codes.stored), ivf_rows, axis=1)
    np.testing.assert_allclose(ivf_scores, exact, atol=0.02 * np.abs(exact).max())


def test_a_probe_scans_only_its_lists(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    lists = partitioned.assign(x)
    codes = StoredCodes(partitioned.encode(x), lists=lists)
    chosen, partitioned.nprobe = partitioned.nprobe, 2
    try:
        _, rows = partitioned.search(q, codes, 20, reuse=True)
    finally:
        partitioned.nprobe = chosen
    cent = partitioned.partition_centroids_
    best_two = np.argsort(-(q @ cent.T), axis=1, kind="stable")[:, :2]
    for i in range(len(q)):
        assert set(lists[rows[i]].tolist()) <= set(best_two[i].tolist())


def test_recall_against_exact_float_search_grows_with_nprobe(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    lists = partitioned.assign(x)
    stored = partitioned.encode(x)
    full = BinaryQuantizer(384).fit(x)  # same bit levels (same data): the unpartitioned scan
    recall_full = rescored_recall(full, x, q, StoredCodes(stored), 24)
    recalls = {}
    chosen = partitioned.nprobe
    for nprobe in (4, 8, 16, PARTITIONS):
        partitioned.nprobe = nprobe
        recalls[nprobe] = rescored_recall(partitioned, x, q, StoredCodes(stored, lists=lists), 24)
    partitioned.nprobe = chosen
    assert recalls[PARTITIONS] == pytest.approx(recall_full, abs=0.005)  # every list: the full scan
    assert recall_full >= 0.98
    assert recalls[4] < recalls[8] <= recalls[16] <= recalls[PARTITIONS]
    assert recalls[16] >= 0.95  # a quarter of the lists, on data harder than real sentences


def test_codes_without_lists_are_scanned_in_full(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    codes = partitioned.encode(x[:5000])
    plain = BinaryQuantizer(384).set_state(
        {k: v for k, v in partitioned.get_state().items() if k != "partition_centroids"}
    )
    got = partitioned.search(q, StoredCodes(codes), 30, reuse=True)
    want = plain.search(q, StoredCodes(codes), 30, reuse=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_blocked_codes_with_lists(partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    codes = partitioned.encode(x[:4099])
    lists = partitioned.assign(x[:4099])
    row_major = partitioned.search(q, StoredCodes(codes, lists=lists), 40, reuse=True)
    blocked = partitioned.search(q, StoredCodes(to_blocked(codes), blocked=True, lists=lists), 40, reuse=True)
    np.testing.assert_array_equal(row_major[1], blocked[1])


def test_probed_lists_short_of_k_fall_back_to_every_list(partitioned: BinaryQuantizer) -> None:
    x = synthetic_embeddings(300, seed=5)
    q = synthetic_embeddings(4, seed=6)
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    chosen, partitioned.nprobe = partitioned.nprobe, 1
    try:
        scores, rows = partitioned.search(q, codes, 300, reuse=True)  # k = n: every row
    finally:
        partitioned.nprobe = chosen
    assert (rows >= 0).all()
    assert all(sorted(r.tolist()) == list(range(300)) for r in rows)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_search_many_pools_partitioned_and_plain_arrays(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    a, b = x[:8000], x[8000:12000]
    with_lists = StoredCodes(partitioned.encode(a), lists=partitioned.assign(a))
    without = StoredCodes(partitioned.encode(b))  # an older segment: no lists
    mask = np.ones(8000, bool)
    mask[::3] = False
    scores, arrays, rows = partitioned.search_many(q, [with_lists, without], 50, masks=[mask, None])
    assert (arrays >= 0).all()
    assert not (~mask[rows[arrays == 0]]).any()
    assert (np.diff(scores, axis=1) <= 0).all()
    assert (arrays == 1).any() and (arrays == 0).any()


def test_state_round_trip_through_json_config(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    config = json.loads(json.dumps(partitioned.get_config()))
    assert config["partitions"] == PARTITIONS and config["nprobe"] == partitioned.nprobe
    state = partitioned.get_state()
    assert state["partition_centroids"].shape == (PARTITIONS, 384)
    restored = quantizer_from_config(config, state)
    assert isinstance(restored, BinaryQuantizer)
    np.testing.assert_array_equal(restored.assign(x), partitioned.assign(x))
    codes = partitioned.encode(x[:6000])
    lists = partitioned.assign(x[:6000])
    got = restored.search(q, StoredCodes(codes, lists=lists), 20, reuse=True)
    want = partitioned.search(q, StoredCodes(codes, lists=lists), 20, reuse=True)
    np.testing.assert_array_equal(got[1], want[1])
    missing = {k: v for k, v in state.items() if k != "partition_centroids"}
    with pytest.raises(ConfigurationError, match="partition_centroids"):
        quantizer_from_config(config, missing)
    with pytest.raises(ConfigurationError, match="partition_centroids"):
        quantizer_from_config({**config, "partitions": 32, "nprobe": 4}, state)


def test_configs_saved_before_partitions_reopen_unpartitioned() -> None:
    old = BinaryQuantizer(16).fit(np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32))
    config = {k: v for k, v in old.get_config().items() if k not in ("partitions", "nprobe")}
    restored = quantizer_from_config(config, old.get_state())
    assert isinstance(restored, BinaryQuantizer)
    assert restored.partitions == 0 and restored.nprobe is None


def test_training_is_seeded(data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0][:5000]
    one = BinaryQuantizer(384, partitions=32).fit(x)
    two = BinaryQuantizer(384, partitions=32).fit(x)
    np.testing.assert_array_equal(one.partition_centroids_, two.partition_centroids_)
    lists = one.assign(x)
    assert lists.dtype == np.uint16 and lists.shape == (5000,)
    assert np.bincount(lists, minlength=32).min() > 0  # every list holds rows


def test_too_few_training_rows_for_the_lists() -> None:
    quantizer = BinaryQuantizer(16, partitions=10)
    assert quantizer.min_train_size == 390
    with pytest.raises(InvalidInputError, match="at least 390"):
        quantizer.fit(np.ones((389, 16), np.float32))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"partitions": -1}, "partitions must be"),
        ({"partitions": "8"}, "partitions must be"),
        ({"partitions": True}, "partitions must be"),
        ({"partitions": 70_000}, "partitions must be"),
        ({"partitions": 8, "fast_scan": False}, "needs fast_scan=True"),
        ({"nprobe": 4}, "without partitions"),
        ({"partitions": 8, "nprobe": 9}, "nprobe must be"),
        ({"partitions": 8, "nprobe": 0}, "nprobe must be"),
    ],
)
def test_bad_options_are_typed_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        BinaryQuantizer(16, **options)  # type: ignore[arg-type]


def test_assign_needs_partitions_and_lists_must_fit(partitioned: BinaryQuantizer) -> None:
    x = synthetic_embeddings(200, seed=2)
    with pytest.raises(ConfigurationError, match="partitions > 0"):
        BinaryQuantizer(384).fit(x).assign(x)
    codes = partitioned.encode(x)
    for lists in (np.zeros(199, np.uint16), np.full(200, PARTITIONS, np.uint16)):
        with pytest.raises(InvalidInputError, match="one list in"):
            partitioned.search(x[:2], StoredCodes(codes, lists=lists), 5, reuse=True)


def test_nprobe_is_chosen_at_training_by_the_share_of_neighbours_its_lists_hold(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x = data[0]
    cent = partitioned.partition_centroids_
    assert partitioned.nprobe == choose_nprobe(x, cent, "ip")  # fit chose it on its training rows
    ranks = neighbour_list_ranks(x, cent, "ip")  # the smallest nprobe holding the share
    assert np.mean(ranks < partitioned.nprobe) >= NPROBE_COVERAGE > np.mean(ranks < partitioned.nprobe - 1)
    assert choose_nprobe(x, cent, "ip", coverage=0.0) == 1
    assert choose_nprobe(x, cent, "ip", coverage=1.01) == PARTITIONS  # never met: every list
    ladder = [choose_nprobe(x, cent, "ip", coverage=c) for c in (0.5, 0.9, 0.99, 0.999)]
    assert ladder == sorted(ladder) and ladder[0] < ladder[-1]
    # Recall against exact float search at the chosen nprobe is that of the full scan, nearly.
    lists = partitioned.assign(x)
    q = data[1]
    codes = partitioned.encode(x)
    full = rescored_recall(BinaryQuantizer(384).fit(x), x, q, StoredCodes(codes), 24)
    assert rescored_recall(partitioned, x, q, StoredCodes(codes, lists=lists), 24) >= full - 0.01
    fixed = BinaryQuantizer(384, partitions=PARTITIONS, nprobe=3).fit(x[:5000])
    assert fixed.nprobe == 3  # a given nprobe is kept


def test_a_short_query_falls_back_alone(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    sizes = np.bincount(codes.lists, minlength=PARTITIONS)  # type: ignore[arg-type]
    k = int(np.median(sizes))  # about half the queries' best list holds fewer rows
    chosen, partitioned.nprobe = partitioned.nprobe, 1
    try:
        batch = partitioned.search(q, codes, k, reuse=True)
        alone = [partitioned.search(q[i : i + 1], codes, k, reuse=True) for i in range(len(q))]
    finally:
        partitioned.nprobe = chosen
    best = partitioned.partition_centroids_ @ q.T  # [lists, queries]
    short = sizes[best.argmax(axis=0)] < k
    assert short.any() and (~short).any()
    for i in range(len(q)):
        np.testing.assert_array_equal(batch[1][i], alone[i][1][0])
        if not short[i]:  # kept its one list
            assert len(set(codes.lists[batch[1][i]].tolist())) == 1  # type: ignore[index]


def test_list_blocks_packs_each_list_as_packing_it_alone() -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, size=(1000, 6), dtype=np.uint8)
    lists = rng.integers(0, 9, size=1000).astype(np.uint16)
    lists[lists == 4] = 5  # an empty list in the middle
    rows, counts, blocks = list_blocks(codes, lists, 10)
    assert counts.tolist() == np.bincount(lists, minlength=10).tolist()
    start = 0
    for list_no in range(10):
        want_rows = np.flatnonzero(lists == list_no)  # row order within a list
        got_rows = rows[counts[:list_no].sum() : counts[: list_no + 1].sum()]
        np.testing.assert_array_equal(got_rows, want_rows)
        want = pack_blocks(codes[want_rows]) if want_rows.size else np.empty(0, np.uint8)
        np.testing.assert_array_equal(blocks[start : start + want.size], want)
        start += want.size
    assert start == blocks.size


def test_arrays_with_lists_are_searched_in_one_joined_index(
    partitioned: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    x = x[:9000]
    lists = partitioned.assign(x)
    splits = [0, 3001, 8000, 9000]  # none a multiple of 32
    arrays = [
        StoredCodes(to_blocked(partitioned.encode(x[a:b])), blocked=True, lists=lists[a:b])
        for a, b in itertools.pairwise(splits)
    ]
    whole = StoredCodes(partitioned.encode(x), lists=lists)
    partitioned._ivf_scans.clear()
    for k in (10, 25, 300):
        scores, where, rows = partitioned.search_many(q, arrays, k, joined=True)
        assert len(partitioned._ivf_scans) == 1  # the joined index only, no index per array
        want_scores, want_rows = partitioned.search(q, whole, k, reuse=True)
        np.testing.assert_array_equal(np.asarray(splits)[where] + rows, want_rows)
        np.testing.assert_array_equal(scores, want_scores)
        partitioned._ivf_scans.clear()
