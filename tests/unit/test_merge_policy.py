"""The tiered merge policy on sizes alone: segment counts, write amplification, deletions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langchain_vq.errors import InvalidInputError
from langchain_vq.merge_policy import MergePolicy, SegmentSize, plan_merges


def _apply(sizes: list[SegmentSize], groups: list[tuple[int, ...]]) -> tuple[list[SegmentSize], int]:
    """The segments after merging ``groups`` (as Collection.add does), and the rows rewritten."""
    merged = {i for group in groups for i in group}
    out = [s for i, s in enumerate(sizes) if i not in merged]
    written = 0
    for group in groups:
        live = sum(sizes[i].live for i in group)
        written += live
        if live:
            out.append(SegmentSize(live))
    return out, written


def _build(adds: list[int], policy: MergePolicy) -> tuple[list[SegmentSize], int]:
    sizes: list[SegmentSize] = []
    written = 0
    for rows in adds:
        sizes.append(SegmentSize(rows))
        groups = plan_merges(sizes, policy)
        assert len({i for g in groups for i in g}) == sum(len(g) for g in groups)  # each at most once
        sizes, more = _apply(sizes, groups)
        written += more
        assert plan_merges(sizes, policy) == [] or all(s.deleted for s in sizes)  # a stable result
    return sizes, written


def test_ten_adds_of_100k_leave_four_segments_and_rewrite_each_row_at_most_once() -> None:
    sizes, written = _build([100_000] * 10, MergePolicy())
    assert sorted(s.rows for s in sizes) == [100_000, 100_000, 400_000, 400_000]
    assert written == 800_000


@pytest.mark.parametrize("batch", [1, 37, 1000, 20_000])
def test_segment_count_grows_with_the_log_of_the_rows(batch: int) -> None:
    policy = MergePolicy(segments_per_tier=4, floor_rows=64, max_rows=1 << 30)
    counts = {}
    sizes: list[SegmentSize] = []
    total = 0
    rng = np.random.default_rng(batch)
    for _ in range(3000 if batch < 1000 else 400):
        rows = int(rng.integers(1, 2 * batch + 1))
        total += rows
        sizes.append(SegmentSize(rows))
        sizes, _ = _apply(sizes, plan_merges(sizes, policy))
        # At most (segments_per_tier - 1) per tier, and a row count fits below its tier's bound.
        assert len(sizes) <= 3 * (policy.tier(total) + 1)
        counts[total] = len(sizes)
    assert max(counts.values()) <= 3 * (math.log(total / 64, 4) + 2)


def test_each_row_is_rewritten_about_log_n_times() -> None:
    policy = MergePolicy(segments_per_tier=4, floor_rows=64, max_rows=1 << 30)
    rng = np.random.default_rng(0)
    adds = [int(r) for r in rng.integers(50, 150, size=4000)]
    _, written = _build(adds, policy)
    total = sum(adds)
    # Tier climbs above the floor (one rewrite each) plus the floor's own few rewrites.
    assert written / total <= math.log(total / 64, 4) + 2
    assert written / total >= 1  # merges did happen


def test_merges_never_exceed_max_rows_and_large_segments_stay() -> None:
    policy = MergePolicy(segments_per_tier=4, floor_rows=16, max_rows=1000)
    sizes, _ = _build([100] * 200, policy)
    assert sum(s.rows for s in sizes) == 20_000
    assert all(s.rows <= 1000 for s in sizes)
    small = [s for s in sizes if 2 * s.rows < 1000]
    assert len(small) <= 3 * (policy.tier(999) + 1)  # only the full ones accumulate


def test_a_cascade_is_one_group_so_no_row_is_written_twice() -> None:
    policy = MergePolicy(segments_per_tier=2, floor_rows=10, max_rows=1 << 20)
    sizes = [SegmentSize(40), SegmentSize(20), SegmentSize(10), SegmentSize(10)]
    # 10 + 10 -> 20 fills tier 1 (with the 20) -> 40 fills tier 2 (with the 40) -> 80.
    assert plan_merges(sizes, policy) == [(0, 1, 2, 3)]


def test_smallest_segments_of_a_full_tier_merge_first() -> None:
    policy = MergePolicy(segments_per_tier=3, floor_rows=10, max_rows=100)
    sizes = [SegmentSize(40), SegmentSize(12), SegmentSize(45), SegmentSize(15), SegmentSize(35)]
    # Tier 2 (30..89) holds 40, 45, 35: the 35 and 40 fit in 100, the 45 does not.
    assert plan_merges(sizes, policy) == [(0, 4)]


def test_deleted_rows_move_a_segment_down_a_tier() -> None:
    policy = MergePolicy(segments_per_tier=2, floor_rows=10, max_rows=1 << 20, max_deleted_fraction=1.0)
    intact = [SegmentSize(1000), SegmentSize(12)]
    assert plan_merges(intact, policy) == []
    shrunk = [SegmentSize(1000, deleted=988), SegmentSize(12)]
    assert plan_merges(shrunk, policy) == [(0, 1)]


def test_a_segment_with_many_deletions_is_rewritten_alone() -> None:
    policy = MergePolicy(segments_per_tier=4, floor_rows=10, max_rows=1 << 20, max_deleted_fraction=0.3)
    sizes = [SegmentSize(5000, deleted=1400), SegmentSize(5000, deleted=1600), SegmentSize(20)]
    assert plan_merges(sizes, policy) == [(1,)]
    (rewritten,), _ = _apply([sizes[1]], [(0,)])
    assert rewritten == SegmentSize(3400)


def test_nothing_to_do_for_empty_and_single_stores() -> None:
    assert plan_merges([]) == []
    assert plan_merges([SegmentSize(1 << 20)]) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("segments_per_tier", 1),
        ("segments_per_tier", True),
        ("floor_rows", 0),
        ("max_rows", 2.5),
        ("max_deleted_fraction", 0),
        ("max_deleted_fraction", 1.5),
        ("max_deleted_fraction", "0.3"),
    ],
)
def test_bad_knobs_are_typed_errors(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        MergePolicy(**{field: value})  # type: ignore[arg-type]
