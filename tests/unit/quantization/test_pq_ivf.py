"""Unit tests of the partitioned first stage of 4-bit PQ: ``ProductQuantizer(partitions=...)``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from langchain_vq.code_blocks import StoredCodes, to_blocked
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization import ProductQuantizer, quantizer_from_config
from langchain_vq.quantization._fast_scan import PQFastScan
from langchain_vq.quantization._ivf import IVFFastScan
from langchain_vq.search.engine import exact_search
from langchain_vq.synthetic import synthetic_embeddings

PARTITIONS = 64


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """20k synthetic MiniLM-like rows and 100 queries, seeded."""
    return synthetic_embeddings(20_000, seed=0), synthetic_embeddings(100, seed=1)


@pytest.fixture(scope="module")
def partitioned(data: tuple[np.ndarray, np.ndarray]) -> ProductQuantizer:
    return ProductQuantizer(384, partitions=PARTITIONS).fit(data[0])


def plain_twin(quantizer: ProductQuantizer) -> ProductQuantizer:
    """The same codebooks without partitions: the full fast scan."""
    state = {k: v for k, v in quantizer.get_state().items() if k != "partition_centroids"}
    return ProductQuantizer(quantizer.dim, metric=quantizer.metric, m=quantizer.m).set_state(state)


def rescored_recall(
    quantizer: ProductQuantizer, x: np.ndarray, q: np.ndarray, codes: StoredCodes, m: int
) -> float:
    """recall@10 against exact float search of the code top ``10 * m`` rescored with floats."""
    truth = exact_search(x, q, 10).rows
    _, cand = quantizer.search(q, codes, 10 * m, reuse=True)
    found = [cand[i][np.argsort(-(x[cand[i]] @ q[i]), kind="stable")[:10]] for i in range(len(q))]
    return float(np.mean([np.isin(truth[i], found[i]).mean() for i in range(len(q))]))


@pytest.mark.parametrize(("dim", "m", "metric"), [(384, None, "ip"), (97, 25, "ip"), (40, 7, "l2")])
def test_every_list_probed_scores_as_the_full_fast_scan(dim: int, m: int | None, metric: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, dim)).astype(np.float32) + 0.3
    q = rng.normal(size=(7, dim)).astype(np.float32)
    quantizer = ProductQuantizer(dim, metric=metric, m=m, partitions=16).fit(x)  # type: ignore[arg-type]
    codes = StoredCodes(quantizer.encode(x))
    full = PQFastScan(quantizer.centroids_, codes, metric)
    ivf = IVFFastScan(
        codes, quantizer.assign(x), quantizer.partition_centroids_, quantizer.centroids_, metric
    )
    full_scores, _ = full.search(q, 50)
    ivf_scores, ivf_rows = ivf.search(q, 50, nprobe=16)
    np.testing.assert_array_equal(ivf_scores, full_scores)  # same kernel, same codebooks, same tables
    # And they are the quantizer's asymmetric scores of the rows returned (within the tables' rounding).
    exact = np.take_along_axis(quantizer.score(q, codes.stored), ivf_rows, axis=1)
    np.testing.assert_allclose(ivf_scores, exact, atol=0.02 * np.abs(exact).max())


@pytest.mark.parametrize("k", [10, 100])
def test_every_list_probed_gives_the_full_scans_top_k(
    partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray], k: int
) -> None:
    x, q = data
    codes = partitioned.encode(x)
    chosen, partitioned.nprobe = partitioned.nprobe, PARTITIONS
    try:
        got = partitioned.search(q, StoredCodes(codes, lists=partitioned.assign(x)), k, reuse=True)
    finally:
        partitioned.nprobe = chosen
    want = plain_twin(partitioned).search(q, StoredCodes(codes), k, reuse=True)
    np.testing.assert_array_equal(got[0], want[0])  # the same scores, place by place
    # The same rows above the k-th score; at it, rows the full scan scores the same (8-bit
    # tables tie often, and the lists are visited in probe order, not row order).
    all_scores, all_rows = PQFastScan(partitioned.centroids_, StoredCodes(codes), "ip").search(q, len(x))
    full = np.empty_like(all_scores)
    np.put_along_axis(full, all_rows, all_scores, axis=1)  # [nq, n] every row's kernel score
    above = got[0] > got[0][:, -1:]
    np.testing.assert_array_equal(got[1][above], want[1][above])
    np.testing.assert_array_equal(np.take_along_axis(full, got[1], axis=1), got[0])
    assert all(len(set(r.tolist())) == k for r in got[1])  # k distinct rows


def test_a_probe_scans_only_its_lists(
    partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    lists = partitioned.assign(x)
    codes = StoredCodes(partitioned.encode(x), lists=lists)
    chosen, partitioned.nprobe = partitioned.nprobe, 2
    try:
        _, rows = partitioned.search(q, codes, 20, reuse=True)
    finally:
        partitioned.nprobe = chosen
    best_two = np.argsort(-(q @ partitioned.partition_centroids_.T), axis=1, kind="stable")[:, :2]
    for i in range(len(q)):
        assert set(lists[rows[i]].tolist()) <= set(best_two[i].tolist())


def test_recall_against_exact_float_search_grows_with_nprobe(
    partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    lists = partitioned.assign(x)
    stored = partitioned.encode(x)
    recall_full = rescored_recall(plain_twin(partitioned), x, q, StoredCodes(stored), 16)
    chosen = partitioned.nprobe
    assert chosen is not None and 1 <= chosen < PARTITIONS
    recalls = {}
    for nprobe in (2, 4, 16, chosen, PARTITIONS):
        partitioned.nprobe = nprobe
        recalls[nprobe] = rescored_recall(partitioned, x, q, StoredCodes(stored, lists=lists), 16)
    partitioned.nprobe = chosen
    assert recalls[PARTITIONS] == recall_full  # every list: the full scan's candidates
    assert recall_full >= 0.98
    assert recalls[2] < recalls[4] <= recalls[16] <= recalls[PARTITIONS]
    assert recalls[chosen] >= recall_full - 0.01  # the nprobe chosen at training holds the neighbours


def test_codes_without_lists_are_scanned_in_full(
    partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    codes = StoredCodes(partitioned.encode(x[:5000]))
    got = partitioned.search(q, codes, 30, reuse=True)
    want = plain_twin(partitioned).search(q, codes, 30, reuse=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_blocked_codes_with_lists(partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    codes = partitioned.encode(x[:4099])
    lists = partitioned.assign(x[:4099])
    row_major = partitioned.search(q, StoredCodes(codes, lists=lists), 40, reuse=True)
    blocked = partitioned.search(q, StoredCodes(to_blocked(codes), blocked=True, lists=lists), 40, reuse=True)
    np.testing.assert_array_equal(row_major[1], blocked[1])


def test_probed_lists_short_of_k_fall_back_to_every_list(partitioned: ProductQuantizer) -> None:
    x = synthetic_embeddings(300, seed=5)
    q = synthetic_embeddings(4, seed=6)
    codes = StoredCodes(partitioned.encode(x), lists=partitioned.assign(x))
    chosen, partitioned.nprobe = partitioned.nprobe, 1
    try:
        scores, rows = partitioned.search(q, codes, 300, reuse=True)  # k = n: every row
    finally:
        partitioned.nprobe = chosen
    assert all(sorted(r.tolist()) == list(range(300)) for r in rows)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_search_many_pools_partitioned_and_plain_arrays(
    partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray]
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
    partitioned: ProductQuantizer, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    config = json.loads(json.dumps(partitioned.get_config()))
    assert config["partitions"] == PARTITIONS and config["nprobe"] == partitioned.nprobe
    state = partitioned.get_state()
    assert state["partition_centroids"].shape == (PARTITIONS, 384)
    restored = quantizer_from_config(config, state)
    assert isinstance(restored, ProductQuantizer) and restored.nprobe == partitioned.nprobe
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


def test_configs_saved_before_partitions_reopen_unpartitioned() -> None:
    old = ProductQuantizer(16, m=4).fit(np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32))
    config = {k: v for k, v in old.get_config().items() if k not in ("partitions", "nprobe")}
    restored = quantizer_from_config(config, old.get_state())
    assert isinstance(restored, ProductQuantizer)
    assert restored.partitions == 0 and restored.nprobe is None and not restored.partitioned


def test_training_is_seeded_and_needs_rows_for_the_lists(data: tuple[np.ndarray, np.ndarray]) -> None:
    x = data[0][:5000]
    one = ProductQuantizer(384, partitions=32).fit(x)
    two = ProductQuantizer(384, partitions=32).fit(x)
    np.testing.assert_array_equal(one.partition_centroids_, two.partition_centroids_)
    lists = one.assign(x)
    assert lists.dtype == np.uint16 and lists.shape == (5000,)
    assert np.bincount(lists, minlength=32).min() > 0  # every list holds rows
    small = ProductQuantizer(16, m=4, partitions=10)
    assert small.min_train_size == 390
    with pytest.raises(InvalidInputError, match="at least 390"):
        small.fit(np.ones((389, 16), np.float32))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"partitions": -1}, "partitions must be"),
        ({"partitions": "8"}, "partitions must be"),
        ({"partitions": True}, "partitions must be"),
        ({"partitions": 70_000}, "partitions must be"),
        ({"partitions": 8, "nbits": 8}, "needs nbits=4"),
        ({"nprobe": 4}, "without partitions"),
        ({"partitions": 8, "nprobe": 9}, "nprobe must be"),
        ({"partitions": 8, "nprobe": 0}, "nprobe must be"),
    ],
)
def test_bad_options_are_typed_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        ProductQuantizer(16, m=4, **options)  # type: ignore[arg-type]


def test_assign_needs_partitions_and_lists_must_fit(partitioned: ProductQuantizer) -> None:
    x = synthetic_embeddings(200, seed=2)
    with pytest.raises(ConfigurationError, match="partitions > 0"):
        ProductQuantizer(384).fit(x).assign(x)
    codes = partitioned.encode(x)
    for lists in (np.zeros(199, np.uint16), np.full(200, PARTITIONS, np.uint16)):
        with pytest.raises(InvalidInputError, match="one list in"):
            partitioned.search(x[:2], StoredCodes(codes, lists=lists), 5, reuse=True)


def test_arrays_with_lists_are_joined_into_one_index(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Several arrays with lists answer as one array of all their rows (a compacted segment)."""
    x, q = data
    quantizer = ProductQuantizer(384, partitions=PARTITIONS).fit(x)
    bounds = [(0, 9000), (9000, 9100), (9100, 15000), (15000, 20000)]  # one array under a block
    arrays = [StoredCodes(quantizer.encode(x[a:b]), lists=quantizer.assign(x[a:b])) for a, b in bounds]
    arrays[2] = StoredCodes(to_blocked(quantizer.encode(x[9100:15000])), blocked=True, lists=arrays[2].lists)
    merged = StoredCodes(quantizer.encode(x), lists=quantizer.assign(x))
    starts = np.array([a for a, _ in bounds])
    masks = [None, None, np.arange(5900) % 3 > 0, None]  # a dense filter on one array
    merged_mask = np.ones(len(x), bool)
    merged_mask[9100:15000] = masks[2]  # type: ignore[index]
    for nprobe, masked in ((4, False), (quantizer.nprobe, True), (PARTITIONS, True)):
        # One array alone fetches k plus every hidden row, more than 4 lists hold, and then
        # scans every list: the masks are compared where the lists hold that many rows.
        quantizer.nprobe = nprobe
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
