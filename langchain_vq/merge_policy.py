"""Which segments an add merges: a tiered policy, as Lucene's ``TieredMergePolicy`` or an LSM tree.

Every segment costs each query some Python work and row gathers (and, with a filter or without
fast scan, its own code-scan call: unfiltered fast-scan queries scan all segments in one joined
index), so a store built by many adds is slower than the same rows in one segment; merging
everything on every add would rewrite the whole store each time. Tiers bound both. Segments are
grouped by live rows into tiers a factor ``segments_per_tier`` apart; a tier holding that many
segments is merged into one segment of the next tier. So a store of ``n`` live rows holds fewer
than ``segments_per_tier`` segments per tier, ``O(log n)`` segments in all, and each row is
rewritten once per tier it climbs, ``O(log n)`` times.

Deleted rows count against a segment twice: its tier is decided by its live rows (a segment that
lost half its rows drops a tier and merges with smaller ones), and a segment whose deleted share
exceeds ``max_deleted_fraction`` is rewritten without them even when its tier is not full.

This module is pure (sizes in, groups of indices out), so the policy is tested without files;
``Collection.add`` applies it inside the add's commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langchain_vq.errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class SegmentSize:
    """What the policy knows of a segment: its rows, deleted ones included, and how many are deleted."""

    rows: int
    deleted: int = 0

    @property
    def live(self) -> int:
        """Rows not deleted."""
        return self.rows - self.deleted


@dataclass(frozen=True)
class MergePolicy:
    """The knobs of tiered merging; the defaults favour search speed over write amplification.

    Args:
        segments_per_tier: Segments a tier may hold before they are merged, and the size ratio
            between tiers. Lower means fewer segments per query and more rewrites per row: with
            4, ten adds of 100k rows leave 4 segments and rewrite each row at most twice; with
            10 (Lucene's default) they leave 10 and rewrite each row at most once.
        floor_rows: Segments below this many live rows all count as the lowest tier, so a
            stream of tiny adds is gathered into one small segment instead of a tier per power
            of ``segments_per_tier``. The rows of that small segment are rewritten about
            ``floor_rows / (3 * rows per add)`` times before it leaves the floor (1024: a few
            times for adds of 100 rows, 2 MB per add at worst for adds of one 384-dim row).
        max_rows: No merge produces a segment above this many rows; segments with at least
            half of it are left alone unless deletions shrink them (beyond this size the
            per-segment cost of a query is small next to its scan).
        max_deleted_fraction: A segment with a larger share of deleted rows is rewritten
            without them by the next add, reclaiming their disk space and scan time.
    """

    segments_per_tier: int = 4
    floor_rows: int = 1024
    max_rows: int = 1 << 20
    max_deleted_fraction: float = 0.3

    def __post_init__(self) -> None:
        """Check the knobs: a factor below 2 would never shrink a tier."""
        for name, low in (("segments_per_tier", 2), ("floor_rows", 1), ("max_rows", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                msg = (
                    f"MergePolicy {name} must be an integer >= {low}, got {value!r}. "
                    f"Pass e.g. {name}={low * 4}."
                )
                raise InvalidInputError(msg)
        fraction = self.max_deleted_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            msg = (
                f"MergePolicy max_deleted_fraction must be a number in (0, 1], got {fraction!r}. "
                "Pass e.g. 0.3 (1 keeps deleted rows until their tier merges)."
            )
            raise InvalidInputError(msg)

    def tier(self, live: int) -> int:
        """The tier of a segment of ``live`` rows: 0 below ``floor_rows``, then one per factor."""
        tier, bound = 0, self.floor_rows
        while live >= bound:
            tier += 1
            bound *= self.segments_per_tier
        return tier

    def mergeable(self, live: int) -> bool:
        """Whether a segment of ``live`` rows may join a tier merge (not at half of ``max_rows``)."""
        return 2 * live < self.max_rows


DEFAULT_POLICY = MergePolicy()


@dataclass(frozen=True)
class _Pending:
    live: int
    members: tuple[int, ...]  # indices of the input segments this (planned) segment holds


def plan_merges(sizes: Sequence[SegmentSize], policy: MergePolicy = DEFAULT_POLICY) -> list[tuple[int, ...]]:
    """Groups of segment indices to merge, each into one segment; segments in no group stay.

    Tier merges cascade (a merge that fills the next tier merges on), but the result lists
    each input segment at most once: a cascade becomes one larger group, so no row is written
    twice by one call. The lowest full tier merges first, its smallest segments first, as many
    as fit in ``max_rows``. Then every segment left alone with more than
    ``max_deleted_fraction`` of its rows deleted is a group of its own (rewritten without them).

    Args:
        sizes: The segments of a version, in order.
        policy: The knobs; the defaults when omitted.

    Returns:
        Groups of indices into ``sizes``, each ascending, ordered by their first index.
    """
    pending = [_Pending(s.live, (i,)) for i, s in enumerate(sizes)]
    while True:
        tiers: dict[int, list[_Pending]] = {}
        for item in pending:
            if policy.mergeable(item.live):
                tiers.setdefault(policy.tier(item.live), []).append(item)
        full = [t for t, items in tiers.items() if len(items) >= policy.segments_per_tier]
        if not full:
            break
        group: list[_Pending] = []
        total = 0
        for item in sorted(tiers[min(full)], key=lambda p: (p.live, p.members)):
            if total + item.live > policy.max_rows:
                break
            group.append(item)
            total += item.live
        # Two mergeable segments always fit (each is under half of max_rows), so a full tier
        # always loses at least one segment: the loop ends.
        chosen = {id(item) for item in group}
        merged = _Pending(total, tuple(sorted(i for item in group for i in item.members)))
        pending = [item for item in pending if id(item) not in chosen] + [merged]
    groups = [item.members for item in pending if len(item.members) > 1]
    for item in pending:
        if len(item.members) == 1:
            size = sizes[item.members[0]]
            if size.deleted > policy.max_deleted_fraction * size.rows:
                groups.append(item.members)
    return sorted(groups)
