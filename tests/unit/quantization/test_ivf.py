"""Unit tests of the partitioned first stage (``_ivf``, ``_partitions``) of both quantizers with one.

``BinaryQuantizer(partitions=...)`` and 4-bit ``ProductQuantizer(partitions=...)`` share their
lists, probes and saved state (``_partitions.PartitionedQuantizer``), so each test of that stage
runs for both (the ``partitioned_kind`` fixture); an option only one of them has is tested for
that one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pytest

from langchain_vq.code_blocks import StoredCodes, pack_blocks, to_blocked
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization import (
    QUANTIZERS,
    BinaryQuantizer,
    ProductQuantizer,
    _ivf,
    quantizer_from_config,
)
from langchain_vq.quantization._fast_scan import NibbleFastScan, PQFastScan
from langchain_vq.quantization._ivf import (
    NPROBE_COVERAGE,
    PROJECTED_DIMS,
    ListProjection,
    assign_partitions,
    choose_nprobe,
    list_blocks,
    neighbour_list_ranks,
    project_lists,
    train_partitions,
)
from langchain_vq.quantization._partitions import PartitionedQuantizer
from langchain_vq.search.engine import exact_search
from langchain_vq.synthetic import synthetic_embeddings
from tests.conftest import PARTITIONED_KINDS

if TYPE_CHECKING:
    from collections.abc import Iterator

PARTITIONS = 64
#: Code candidates per result rescored with floats (``10 * m``) in the recall checks: binary's
#: 1-bit codes need more than PQ's 4-bit ones for recall@10 0.98 with every list.
MULTIPLIER = {"binary": 24, "pq": 16}


def new_quantizer(kind: str, dim: int, **options: Any) -> PartitionedQuantizer:
    """An unfitted ``kind`` quantizer (``"binary"`` or ``"pq"``) with ``options``."""
    quantizer = QUANTIZERS[kind](dim, **options)
    assert isinstance(quantizer, PartitionedQuantizer)
    return quantizer


def plain_twin(quantizer: PartitionedQuantizer) -> PartitionedQuantizer:
    """The same learned codes without partitions: the full fast scan."""
    state = {k: v for k, v in quantizer.get_state().items() if k != "partition_centroids"}
    plain = quantizer_from_config({**quantizer.get_config(), "partitions": 0, "nprobe": None}, state)
    assert isinstance(plain, PartitionedQuantizer) and not plain.partitioned
    return plain


def full_fast_scan(quantizer: PartitionedQuantizer, codes: StoredCodes) -> NibbleFastScan | PQFastScan:
    """The unpartitioned kernel over ``codes``, built here as each quantizer's full scan is."""
    if isinstance(quantizer, BinaryQuantizer):
        return NibbleFastScan(codes, quantizer.low_, quantizer.high_, quantizer.metric)
    assert isinstance(quantizer, ProductQuantizer)
    return PQFastScan(quantizer.centroids_, codes, quantizer.metric)


@contextlib.contextmanager
def probing(quantizer: PartitionedQuantizer, nprobe: int | None) -> Iterator[None]:
    """Search with ``nprobe`` lists inside the block, the chosen number after it."""
    chosen, quantizer.nprobe = quantizer.nprobe, nprobe
    try:
        yield
    finally:
        quantizer.nprobe = chosen


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """20k synthetic MiniLM-like rows and 100 queries, seeded."""
    return synthetic_embeddings(20_000, seed=0), synthetic_embeddings(100, seed=1)


@pytest.fixture(scope="module")
def partitioned(partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]) -> PartitionedQuantizer:
    return new_quantizer(partitioned_kind, 384, partitions=PARTITIONS).fit(data[0])


def rescored_recall(
    quantizer: PartitionedQuantizer, x: np.ndarray, q: np.ndarray, codes: StoredCodes, m: int
) -> float:
    """recall@10 against exact float search of the code top ``10 * m`` rescored with floats."""
    truth = exact_search(x, q, 10).rows
    _, cand = quantizer.search(q, codes, 10 * m, reuse=True)
    found = [cand[i][np.argsort(-(x[cand[i]] @ q[i]), kind="stable")[:10]] for i in range(len(q))]
    return float(np.mean([np.isin(truth[i], found[i]).mean() for i in range(len(q))]))


@pytest.mark.parametrize(
    ("kind", "dim", "options", "metric"),
    [
        pytest.param("binary", 384, {}, "ip", id="binary-384-ip"),
        pytest.param("binary", 97, {}, "ip", id="binary-97-ip"),
        pytest.param("binary", 40, {}, "l2", id="binary-40-l2"),
        pytest.param("pq", 384, {"m": None}, "ip", id="pq-384-None-ip"),
        pytest.param("pq", 97, {"m": 25}, "ip", id="pq-97-25-ip"),
        pytest.param("pq", 40, {"m": 7}, "l2", id="pq-40-7-l2"),
    ],
)
def test_every_list_probed_scores_as_the_full_fast_scan(
    kind: str, dim: int, options: dict[str, Any], metric: str
) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, dim)).astype(np.float32) + 0.3
    q = rng.normal(size=(7, dim)).astype(np.float32)
    quantizer = new_quantizer(kind, dim, metric=metric, partitions=16, **options).fit(x)
    codes = StoredCodes(quantizer.encode(x))
    full = full_fast_scan(quantizer, codes)
    ivf = quantizer._build_ivf(StoredCodes(codes.stored, lists=quantizer.assign(x)))  # as a store builds it
    full_scores, _ = full.search(q, 50)
    ivf_scores, ivf_rows = ivf.search(q, 50, nprobe=16)
    np.testing.assert_array_equal(ivf_scores, full_scores)  # same kernel, same codebooks, same tables
    # And they are the quantizer's asymmetric scores of the rows returned (within the tables' rounding).
    exact = np.take_along_axis(quantizer.score(q, codes.stored), ivf_rows, axis=1)
    np.testing.assert_allclose(ivf_scores, exact, atol=0.02 * np.abs(exact).max())


@pytest.mark.parametrize("k", [10, 100])
def test_every_list_probed_gives_the_full_scans_top_k(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray], k: int
) -> None:
    x, q = data
    codes = partitioned.encode(x)
    with probing(partitioned, PARTITIONS):
        got = partitioned.search(q, StoredCodes(codes, lists=partitioned.assign(x)), k, reuse=True)
    want = plain_twin(partitioned).search(q, StoredCodes(codes), k, reuse=True)
    np.testing.assert_array_equal(got[0], want[0])  # the same scores, place by place
    # The same rows too, ties at the k-th score included: both order ties by row (8-bit tables
    # tie often, and FAISS visits the lists in probe order, not row order).
    np.testing.assert_array_equal(got[1], want[1])
    assert all(len(set(r.tolist())) == k for r in got[1])  # k distinct rows


@pytest.mark.parametrize("nprobe", [8, 16])
def test_the_best_n_are_the_first_n_of_a_larger_count(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray], nprobe: int
) -> None:
    # What calibration's ranking from one scan rests on: at every count the same order, up to
    # the rows each query's lists hold (past them a query gets every list, a larger set).
    x, q = data
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    sizes = np.bincount(codes.lists, minlength=PARTITIONS)  # type: ignore[arg-type]
    best = np.argsort(-(q @ partitioned.partition_centroids_.T), axis=1, kind="stable")[:, :nprobe]
    held = int(sizes[best].sum(axis=1).min())  # the fewest rows a query's lists hold
    assert held > 1500
    with probing(partitioned, nprobe):
        scores, rows = partitioned.search(q, codes, held, reuse=True)
        # Best first, ties ordered by row; and many ties at these places (8-bit tables).
        assert (np.diff(scores, axis=1) <= 0).all()
        tied = scores[:, 1:] == scores[:, :-1]
        assert (rows[:, 1:][tied] > rows[:, :-1][tied]).all() and tied.sum() > 1000
        for n in (5, 21, 64, 333, 1000, 1500):
            small = partitioned.search(q, codes, n, reuse=True)
            np.testing.assert_array_equal(small[1], rows[:, :n])
            np.testing.assert_array_equal(small[0], scores[:, :n])


def test_ties_past_the_rows_fetched_are_fetched_again(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No rows fetched past k: every query's k-th row may have tied rows after it, so each is
    # searched again with twice the rows until they are all in hand; the same results.
    x, q = data
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    scan = partitioned._ivf_scans.get(codes, partitioned._build_ivf)
    want = [_ivf.probe(scan, q, k, 8) for k in (7, 300)]
    calls: list[int] = []  # the rows fetched by each kernel call
    search = scan.search

    def counted(queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(k)
        return search(queries, k, nprobe)

    monkeypatch.setattr(scan, "search", counted)
    monkeypatch.setattr(_ivf, "_TIE_ROWS", 0)
    monkeypatch.setattr(_ivf, "_TIE_FRACTION", 1 << 30)
    for k, (scores, rows) in zip((7, 300), want, strict=True):
        calls.clear()
        got = _ivf.probe(scan, q, k, 8)
        assert calls[:2] == [k, 2 * k]  # fetched again
        np.testing.assert_array_equal(np.sort(got[1], axis=1), np.sort(rows, axis=1))
        np.testing.assert_array_equal(got[0], scores)
        for i in (0, 1, 2):  # one query alone (its own path) keeps the same rows
            alone = _ivf.probe(scan, q[i : i + 1], k, 8)
            np.testing.assert_array_equal(np.sort(alone[1][0]), np.sort(rows[i]))


def test_a_probe_scans_only_its_lists(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    lists = partitioned.assign(x)
    codes = StoredCodes(partitioned.encode(x), lists=lists)
    with probing(partitioned, 2):
        _, rows = partitioned.search(q, codes, 20, reuse=True)
    best_two = np.argsort(-(q @ partitioned.partition_centroids_.T), axis=1, kind="stable")[:, :2]
    for i in range(len(q)):
        assert set(lists[rows[i]].tolist()) <= set(best_two[i].tolist())


def test_recall_against_exact_float_search_grows_with_nprobe(
    partitioned: PartitionedQuantizer, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    m = MULTIPLIER[partitioned_kind]
    lists = partitioned.assign(x)
    stored = partitioned.encode(x)
    recall_full = rescored_recall(plain_twin(partitioned), x, q, StoredCodes(stored), m)
    chosen = partitioned.nprobe
    assert chosen is not None and 1 <= chosen < PARTITIONS
    recalls = {}
    for nprobe in (2, 4, 8, 16, chosen, PARTITIONS):
        with probing(partitioned, nprobe):
            recalls[nprobe] = rescored_recall(partitioned, x, q, StoredCodes(stored, lists=lists), m)
    assert recalls[PARTITIONS] == recall_full  # every list: the full scan's candidates
    assert recall_full >= 0.98
    assert recalls[2] < recalls[4] < recalls[8] <= recalls[16] <= recalls[PARTITIONS]
    assert recalls[16] >= 0.95  # a quarter of the lists, on data harder than real sentences
    # The nprobe chosen at training (see the next test) holds the neighbours: the full scan's recall, nearly.
    assert recalls[chosen] >= recall_full - 0.01


def test_nprobe_is_chosen_at_training_by_the_share_of_neighbours_its_lists_hold(
    partitioned: PartitionedQuantizer, partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]
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
    fixed = new_quantizer(partitioned_kind, 384, partitions=PARTITIONS, nprobe=3).fit(x[:5000])
    assert fixed.nprobe == 3  # a given nprobe is kept


def test_codes_without_lists_are_scanned_in_full(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    codes = StoredCodes(partitioned.encode(x[:5000]))
    got = partitioned.search(q, codes, 30, reuse=True)
    want = plain_twin(partitioned).search(q, codes, 30, reuse=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_blocked_codes_with_lists(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    codes = partitioned.encode(x[:4099])
    lists = partitioned.assign(x[:4099])
    row_major = partitioned.search(q, StoredCodes(codes, lists=lists), 40, reuse=True)
    blocked = partitioned.search(q, StoredCodes(to_blocked(codes), blocked=True, lists=lists), 40, reuse=True)
    np.testing.assert_array_equal(row_major[1], blocked[1])


def test_probed_lists_short_of_k_fall_back_to_every_list(partitioned: PartitionedQuantizer) -> None:
    x = synthetic_embeddings(300, seed=5)
    q = synthetic_embeddings(4, seed=6)
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    with probing(partitioned, 1):
        scores, rows = partitioned.search(q, codes, 300, reuse=True)  # k = n: every row
    assert (rows >= 0).all()
    assert all(sorted(r.tolist()) == list(range(300)) for r in rows)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_a_short_query_falls_back_alone(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    sizes = np.bincount(codes.lists, minlength=PARTITIONS)  # type: ignore[arg-type]
    k = int(np.median(sizes))  # about half the queries' best list holds fewer rows
    with probing(partitioned, 1):
        batch = partitioned.search(q, codes, k, reuse=True)
        alone = [partitioned.search(q[i : i + 1], codes, k, reuse=True) for i in range(len(q))]
    best = partitioned.partition_centroids_ @ q.T  # [lists, queries]
    short = sizes[best.argmax(axis=0)] < k
    assert short.any() and (~short).any()
    for i in range(len(q)):
        np.testing.assert_array_equal(batch[1][i], alone[i][1][0])
        if not short[i]:  # kept its one list
            assert len(set(codes.lists[batch[1][i]].tolist())) == 1  # type: ignore[index]


def test_search_many_pools_partitioned_and_plain_arrays(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
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


def test_arrays_with_lists_are_searched_in_one_joined_index(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
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


def test_arrays_with_lists_are_joined_into_one_index(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """Several arrays with lists answer as one array of all their rows (a compacted segment)."""
    x, q = data
    quantizer = partitioned
    bounds = [(0, 9000), (9000, 9100), (9100, 15000), (15000, 20000)]  # one array under a block
    arrays = [StoredCodes(quantizer.encode(x[a:b]), lists=quantizer.assign(x[a:b])) for a, b in bounds]
    arrays[2] = StoredCodes(to_blocked(quantizer.encode(x[9100:15000])), blocked=True, lists=arrays[2].lists)
    merged = StoredCodes(quantizer.encode(x), lists=quantizer.assign(x))
    starts = np.array([a for a, _ in bounds])
    masks = [None, None, np.arange(5900) % 3 > 0, None]  # a dense filter on one array
    merged_mask = np.ones(len(x), bool)
    merged_mask[9100:15000] = masks[2]  # type: ignore[index]
    quantizer._ivf_scans.clear()  # the fixture's indexes of earlier tests' arrays
    for nprobe, masked in ((4, False), (quantizer.nprobe, True), (PARTITIONS, True)):
        # One array alone fetches k plus every hidden row, more than 4 lists hold, and then
        # scans every list: the masks are compared where the lists hold that many rows.
        with probing(quantizer, nprobe):
            kept = masks if masked else [None] * 4
            scores, which, rows = quantizer.search_many(q, arrays, 200, masks=kept, joined=True)
            if nprobe == 4:
                assert len(quantizer._ivf_scans) == 1  # one index over every array, not one per array
            merged_kept = [merged_mask if masked else None]
            want_scores, _, want_rows = quantizer.search_many(q, [merged], 200, masks=merged_kept)
        np.testing.assert_array_equal(scores, want_scores)
        got_rows = starts[which] + rows  # in the merged array's numbering
        above = scores > scores[:, -1:]  # rows tied at the k-th score may differ
        np.testing.assert_array_equal(got_rows[above], want_rows[above])
        assert not masked or merged_mask[got_rows].all()
    mixed = [*arrays[:3], StoredCodes(quantizer.encode(x[15000:]))]  # one array without lists
    got = quantizer.search_many(q, mixed, 50, joined=True)
    want = quantizer.search_many(q, mixed, 50, joined=False)  # mixed arrays are searched alone
    np.testing.assert_array_equal(got[0], want[0])


def test_state_round_trip_through_json_config(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    config = json.loads(json.dumps(partitioned.get_config()))
    assert config["partitions"] == PARTITIONS and config["nprobe"] == partitioned.nprobe
    state = partitioned.get_state()
    assert state["partition_centroids"].shape == (PARTITIONS, 384)
    restored = quantizer_from_config(config, state)
    assert isinstance(restored, type(partitioned)) and restored.nprobe == partitioned.nprobe
    np.testing.assert_array_equal(restored.assign(x), partitioned.assign(x))
    codes = StoredCodes(partitioned.encode(x[:6000]), lists=partitioned.assign(x[:6000]))
    got = restored.search(q, codes, 20, reuse=True)
    want = partitioned.search(q, codes, 20, reuse=True)
    np.testing.assert_array_equal(got[1], want[1])
    missing = {k: v for k, v in state.items() if k != "partition_centroids"}
    with pytest.raises(ConfigurationError, match="partition_centroids"):
        quantizer_from_config(config, missing)
    with pytest.raises(ConfigurationError, match="partition_centroids"):
        quantizer_from_config({**config, "partitions": 32, "nprobe": 4}, state)


def test_configs_saved_before_partitions_reopen_unpartitioned(partitioned_kind: str) -> None:
    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    old = new_quantizer(partitioned_kind, 16).fit(x)
    config = {k: v for k, v in old.get_config().items() if k not in ("partitions", "nprobe")}
    restored = quantizer_from_config(config, old.get_state())
    assert isinstance(restored, QUANTIZERS[partitioned_kind]) and isinstance(restored, PartitionedQuantizer)
    assert restored.partitions == 0 and restored.nprobe is None and not restored.partitioned


def test_training_is_seeded(partitioned_kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0][:5000]
    one = new_quantizer(partitioned_kind, 384, partitions=32).fit(x)
    two = new_quantizer(partitioned_kind, 384, partitions=32).fit(x)
    np.testing.assert_array_equal(one.partition_centroids_, two.partition_centroids_)
    lists = one.assign(x)
    assert lists.dtype == np.uint16 and lists.shape == (5000,)
    assert np.bincount(lists, minlength=32).min() > 0  # every list holds rows


def test_too_few_training_rows_for_the_lists(partitioned_kind: str) -> None:
    quantizer = new_quantizer(partitioned_kind, 16, partitions=10)
    assert quantizer.min_train_size == 390
    with pytest.raises(InvalidInputError, match="at least 390"):
        quantizer.fit(np.ones((389, 16), np.float32))


#: Bad partition options, the same error from both quantizers (``check_partition_options``).
_BAD_PARTITION_OPTIONS = [
    ({"partitions": -1}, "partitions must be"),
    ({"partitions": "8"}, "'8' is not a partition option; expected 'auto'"),
    ({"partitions": True}, "partitions must be"),
    ({"partitions": 70_000}, "partitions must be"),
    ({"nprobe": 4}, "without a number of partitions"),
    ({"partitions": 0, "nprobe": 4}, "without partitions"),
    ({"partitions": 8, "nprobe": 9}, "nprobe must be"),
    ({"partitions": 8, "nprobe": 0}, "nprobe must be"),
]


@pytest.mark.parametrize(
    ("kind", "options", "match"),
    [
        *[(kind, options, match) for kind in PARTITIONED_KINDS for options, match in _BAD_PARTITION_OPTIONS],
        ("binary", {"partitions": 8, "fast_scan": False}, "needs fast_scan=True"),  # binary's option
        ("pq", {"partitions": 8, "nbits": 8}, "needs nbits=4"),  # PQ's option
    ],
)
def test_bad_options_are_typed_errors(kind: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        new_quantizer(kind, 16, **options)


def test_assign_needs_partitions_and_lists_must_fit(
    partitioned: PartitionedQuantizer, partitioned_kind: str
) -> None:
    x = synthetic_embeddings(200, seed=2)
    with pytest.raises(ConfigurationError, match="partitions > 0"):
        new_quantizer(partitioned_kind, 384).fit(x).assign(x)
    codes = partitioned.encode(x)
    for lists in (np.zeros(199, np.uint16), np.full(200, PARTITIONS, np.uint16)):
        with pytest.raises(InvalidInputError, match="one list in"):
            partitioned.search(x[:2], StoredCodes(codes, lists=lists), 5, reuse=True)


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


# -- lists trained and assigned on principal axes ---------------------------------------------------
PROJECTED = 256  # the fewest lists trained and assigned on principal axes (_ivf.MIN_PROJECTED_LISTS)


@pytest.fixture(scope="module")
def projected(data: tuple[np.ndarray, np.ndarray]) -> BinaryQuantizer:
    """A binary quantizer whose 256 lists are trained and assigned on principal axes (20k rows)."""
    quantizer = BinaryQuantizer(384, partitions=PROJECTED).fit(data[0])
    assert quantizer.partition_projection_ is not None
    return quantizer


def scanned_for(
    x: np.ndarray, q: np.ndarray, centroids: np.ndarray, lists: np.ndarray, coverage: float
) -> float:
    """Mean share of the rows in the fewest best lists holding ``coverage`` of the queries' exact top 10."""
    truth = exact_search(x, q, 10).rows
    order = np.argsort(-(q @ centroids.T), axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(len(q))[:, None], order] = np.arange(centroids.shape[0])[None, :]
    ranks = np.sort(rank[np.arange(len(q))[:, None], lists[truth].astype(np.int64)].ravel())
    nprobe = int(ranks[int(np.ceil(coverage * ranks.size)) - 1]) + 1
    sizes = np.bincount(lists, minlength=centroids.shape[0])
    return float(sizes[order[:, :nprobe]].sum(axis=1).mean() / sizes.sum())


def full_kmeans(x: np.ndarray, partitions: int) -> np.ndarray:
    """The full-vector spherical k-means ``train_partitions`` runs below 256 lists."""
    kmeans = faiss.Kmeans(
        x.shape[1],
        partitions,
        niter=5,
        seed=1234,
        spherical=True,
        max_points_per_centroid=64,
        min_points_per_centroid=1,
    )
    kmeans.train(np.ascontiguousarray(x))
    return kmeans.centroids


def test_projected_lists_hold_the_neighbours_as_full_kmeans_lists_do(
    projected: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    # Tolerance: 5% more rows scanned than a full k-means with every centroid scored. These
    # seeded rows: 6.5% / 5.0% fewer at coverage 0.99 / 0.997; assigning on 8 axes instead of
    # 64 scans 16% more at 0.997, so the check can fail. 1,000 queries: at 0.997 the tail of
    # 100 queries' neighbours is three rows, and noise.
    x, q = data[0], synthetic_embeddings(1000, seed=1)
    full = full_kmeans(x, PROJECTED)
    full_lists = assign_partitions(full, x, "ip", "flat")
    centroids = projected.partition_centroids_
    lists = projected.assign(x)
    exact = assign_partitions(centroids, x, "ip", "flat")
    assert 0.7 < float((lists == exact).mean()) < 1.0  # an approximation, and a close one
    for coverage in (0.99, 0.997):
        want = scanned_for(x, q, full, full_lists, coverage)
        assert scanned_for(x, q, centroids, lists, coverage) <= 1.05 * want
    few_axes = ListProjection(projected.partition_projection_.axes[:, :8])  # type: ignore[union-attr]
    poor = assign_partitions(centroids, x, "ip", few_axes)
    assert scanned_for(x, q, centroids, poor, 0.997) > 1.05 * scanned_for(x, q, full, full_lists, 0.997)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_projected_assignment_is_the_best_centroid_on_the_axes(metric: str) -> None:
    rng = np.random.default_rng(3)
    x = synthetic_embeddings(12_000, dim=96, seed=4) * (1.0 if metric == "ip" else 3.0)
    quantizer = BinaryQuantizer(96, metric=metric, partitions=PROJECTED).fit(x)
    projection = quantizer.partition_projection_
    assert projection is not None and projection.axes.shape == (96, PROJECTED_DIMS)
    centroids = quantizer.partition_centroids_
    # The axes fit() saved are the ones training assigned on (choose_nprobe), derived alike.
    derived = project_lists(centroids, metric)
    assert derived is not None
    np.testing.assert_array_equal(derived.axes, projection.axes)
    rows = x[rng.choice(len(x), 3000, replace=False)]
    np.testing.assert_array_equal(assign_partitions(centroids, rows, metric), quantizer.assign(rows))
    # Independently: full scores with every centroid's spread off the axes dropped.
    axes = projection.axes.astype(np.float64)
    on_axes = (centroids - centroids.mean(axis=0)) @ axes @ axes.T
    scores = rows @ on_axes.T
    if metric == "l2":
        scores -= 0.5 * (centroids.astype(np.float64) ** 2).sum(axis=1)
    agree = float((quantizer.assign(rows) == scores.argmax(axis=1)).mean())
    assert agree > 0.998  # float32 against float64 rounding may split near-ties


def test_projected_training_is_seeded_and_lists_hold_rows(data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0][:15_000]
    one, two = train_partitions(x, PROJECTED, "ip"), train_partitions(x, PROJECTED, "ip")
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, rtol=1e-5)  # spherical: unit centroids
    assert np.bincount(assign_partitions(one, x, "ip"), minlength=PROJECTED).min() > 0


def test_few_lists_are_assigned_by_every_centroid(
    partitioned: PartitionedQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x = data[0][:2000]
    assert partitioned.partition_projection_ is None and "partition_projection" not in partitioned.get_state()
    np.testing.assert_array_equal(
        partitioned.assign(x), np.argmax(x @ partitioned.partition_centroids_.T, axis=1)
    )


def test_state_saved_before_projections_assigns_by_every_centroid(
    projected: BinaryQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x = data[0][:3000]
    state = projected.get_state()
    assert state["partition_projection"].shape == (384, PROJECTED_DIMS)
    config = json.loads(json.dumps(projected.get_config()))
    restored = quantizer_from_config(config, state)
    assert isinstance(restored, BinaryQuantizer)
    np.testing.assert_array_equal(restored.assign(x), projected.assign(x))
    # A state saved before lists were projected: its rows were assigned by the nearest centroid.
    old = {k: v for k, v in state.items() if k != "partition_projection"}
    flat = quantizer_from_config(config, old)
    assert isinstance(flat, BinaryQuantizer) and flat.partition_projection_ is None
    np.testing.assert_array_equal(flat.assign(x), np.argmax(x @ projected.partition_centroids_.T, axis=1))
    assert "partition_projection" not in flat.get_state()  # saved again as it was
    assert flat.fit(data[0]).partition_projection_ is not None  # refitting projects the new lists


@pytest.mark.parametrize(
    "axes",
    [
        pytest.param(np.zeros((383, PROJECTED_DIMS), np.float32), id="other-dim"),
        pytest.param(np.zeros(384, np.float32), id="one-axis-flat"),
        pytest.param(np.full((384, PROJECTED_DIMS), np.nan, np.float32), id="not-finite"),
    ],
)
def test_damaged_projection_is_a_typed_error(projected: BinaryQuantizer, axes: np.ndarray) -> None:
    state = {**projected.get_state(), "partition_projection": axes}
    with pytest.raises(ConfigurationError, match="partition_projection"):
        quantizer_from_config(projected.get_config(), state)


def test_lists_given_to_an_auto_quantizer_are_assigned_on_their_axes(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    # with_partitions (a store crossing the "auto" threshold) saves the axes choose_nprobe used.
    x = data[0]
    given = BinaryQuantizer(384).fit(x).with_partitions(x, PROJECTED)
    assert given.partition_projection_ is not None
    assert "partition_projection" in given.get_state()
    derived = project_lists(given.partition_centroids_, "ip")
    assert derived is not None
    np.testing.assert_array_equal(given.partition_projection_.axes, derived.axes)
    np.testing.assert_array_equal(
        given.assign(x[:2000]), assign_partitions(given.partition_centroids_, x[:2000], "ip")
    )


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_neighbour_list_ranks_are_each_neighbours_place_among_its_querys_lists(metric: str) -> None:
    """Against a brute force: every list sorted per query, the exact top 10 found by numpy."""
    x = synthetic_embeddings(6000, dim=96, seed=7) * (1.0 if metric == "ip" else 2.0)
    centroids = train_partitions(x, PROJECTED, metric)
    ranks = neighbour_list_ranks(x, centroids, metric)
    picks = np.random.default_rng(0).choice(len(x), 500, replace=False)  # the function's own queries
    q = x[picks].astype(np.float64)
    if metric == "ip":
        scores, list_scores = q @ x.T, q @ centroids.T
    else:
        scores = -((q**2).sum(1)[:, None] - 2 * q @ x.T + (x.astype(np.float64) ** 2).sum(1)[None, :])
        list_scores = -((q[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    scores[np.arange(len(picks)), picks] = -np.inf  # a query is not its own neighbour
    truth = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    lists = assign_partitions(centroids, x, metric)
    place = np.argsort(np.argsort(-list_scores, axis=1, kind="stable"), axis=1)  # each list's rank
    expected = place[np.arange(len(picks))[:, None], lists[truth].astype(np.int64)].ravel()
    assert ranks.shape == expected.shape
    assert float((ranks == expected).mean()) > 0.999  # float32 against float64 may split near-ties
    chosen = int(np.sort(expected)[int(np.ceil(NPROBE_COVERAGE * expected.size)) - 1]) + 1
    assert abs(choose_nprobe(x, centroids, metric) - chosen) <= 1


@pytest.mark.parametrize("k", [10, 40, 700])
def test_one_query_takes_its_own_kernel_variant_with_the_same_rows_and_scores(
    partitioned: PartitionedQuantizer,
    data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    k: int,
) -> None:
    # A single query runs FAISS's implem 11, a batch the automatic choice; every query alone
    # gets the rows and scores (bit for bit) of the automatic choice, and of its batch.
    x, q = data
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    scan = partitioned._ivf_scans.get(codes, partitioned._build_ivf)
    used: list[int] = []
    search = scan._index.search

    def recorded(*args: Any, **kwargs: Any) -> Any:
        used.append(scan._index.implem)
        return search(*args, **kwargs)

    monkeypatch.setattr(scan._index, "search", recorded)
    batch = _ivf.probe(scan, q[:24], k, 8)
    alone = [_ivf.probe(scan, q[i : i + 1], k, 8) for i in range(24)]
    assert set(used) == {0, _ivf._SINGLE_QUERY_IMPLEM} and _ivf._SINGLE_QUERY_IMPLEM != 0
    monkeypatch.setattr(_ivf, "_SINGLE_QUERY_IMPLEM", 0)
    automatic = [_ivf.probe(scan, q[i : i + 1], k, 8) for i in range(24)]
    for i, (got, want) in enumerate(zip(alone, automatic, strict=True)):
        assert got[0].tobytes() == want[0].tobytes() == batch[0][i : i + 1].tobytes()
        np.testing.assert_array_equal(np.sort(got[1]), np.sort(want[1]))
        np.testing.assert_array_equal(np.sort(got[1][0]), np.sort(batch[1][i]))
