"""Runtime calibration: the smallest ``rescore_multiplier`` reaching a recall target on a store.

The store (``vectorstore.py``) uses this module, and only this one of the measuring modules:
with no ``rescore_multiplier`` given, it keeps a :class:`Calibration` in the manifest's settings,
measured on the version an add or ``compact()`` is about to commit and committed with it
(:func:`needs_calibration` says when). Offline evaluation (``langchain_vq.evaluation.settings``)
reuses :func:`query_set` and :func:`measure_recall`, so both measure recall one way.

How recall is measured
    Against exact float search over the same live rows, through
    :meth:`~langchain_vq.collection.Collection.search_keys`. Queries are either given (held-back
    query vectors) or sampled from the stored rows (uniformly, seeded). A sampled query is itself
    a stored row, its own exact nearest neighbour, found by every quantizer: that would inflate
    recall. So its own row is **excluded on both sides**: the exact top k is taken over the other
    rows, and the two-stage search runs with that row masked out, so it scans exactly the
    ``k * rescore_multiplier`` candidates a new query would get. Recall@k is the mean fraction of
    the exact top k found (:func:`langchain_vq.evaluation.recall_at_k`); queries with fewer than
    k other rows count the rows that exist.

How sure the choice is
    A sampled stored row, its own row excluded, is a query like any other: on 400k synthetic rows
    (4-bit PQ, 4 segments) 6,000 sampled rows and 6,000 held-out queries had the same recall@10,
    0.9900 and 0.9899 at m=57. But recall on 200 queries is an estimate (per-query recall has a
    standard deviation of about 0.03 near 0.99, so a standard error of about 0.0023), and the
    choice is the smallest multiplier where that estimate reaches the goal: it sits on the
    sample's own error. With the old rule (goal ``target + 0.003``, and a multiplier decided
    "met" after 50 queries) 16-20% of such calibrations chose a multiplier whose recall on
    held-out queries was below 0.99, for PQ and binary alike (replayed on resampled query sets,
    :data:`DEFAULT_CONFIDENCE_Z`); binary's 1M run passed by where its grid fell. So the
    store's calibration (``z``) takes a multiplier only when the one-sided lower bound
    ``mean - z * standard error`` (:data:`DEFAULT_CONFIDENCE_Z`) reaches the target too, and a
    multiplier is only ever decided "met" on every query. Replayed again in session 11 (500
    resampled calibrations on 200k synthetic binary rows, ``benchmarks/
    measure_calibration_policy.py --replay``): 1.0% of choices below 0.99 held out. Every
    store calibration walks both ways from the last answer, so one that was high by its
    sample's noise comes down at the next. More queries only when the decision is borderline
    (``max_sample``) halves the error but costs an exact pass per doubling: off by default
    (:data:`DEFAULT_MAX_SAMPLE` has the measurements).

Pooling across a store's calibrations
    Each choice still rests on its own 200 queries, and a build calibrates several times: at
    1M rows by adds of 100k one chose m=67 at 400k (held-out recall 0.9896) and the next 144 at
    800k where about 95 sufficed. So a store's calibration with a comparable previous one
    (:func:`comparable`) chooses on its sample with :data:`POOLED_Z` and serves the geometric
    mean of that choice and the previous calibration's prediction (:func:`pooled`): two
    independent estimates in log m, at no extra exact truth. Replayed over whole builds
    (``benchmarks/replay_calibration_builds.py``: 1,000 resampled builds of 400k synthetic and
    197k real rows) it dipped below 0.99 held out at 0.22% / 0.08% of calibrations against
    0.63% / 0.40%, never between them, and served 74.5 against 82.9 at 400k synthetic rows
    (26.1 against 23.2 at 197k real ones, whose need barely grows); :data:`POOLED_Z` has the
    alternatives measured.

Cost
    One exact search per query measured, then one two-stage search per query for each multiplier
    measured; the walk from ``start`` measures one to three multipliers, and the store's
    refinement (``refine=1``) one more when the walk crossed the goal between two steps. The
    multipliers up to ``RANKED_REACH * start`` come from one code scan per query instead
    (``_Measurer``), when the quantizer ranks its candidates by one score. With ``early_stop``
    (the store's choice) a multiplier whose recall is clearly below the goal after 50 queries is
    decided there (one clearly above is measured on every query: 50 lucky queries chose too few
    candidates). The exact search runs for every query in one pass when a multiplier first
    needs it (each pass decodes every stored row, and the chosen multiplier needs them all),
    and once more for the added queries each time ``max_sample`` doubles them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.collection import ROW_KEY_SHIFT, Collection
from langchain_vq.errors import InvalidInputError
from langchain_vq.evaluation.metrics import recall_at_k
from langchain_vq.validation import check_fraction, check_int, check_k, check_share

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

    from langchain_vq.collection import Snapshot

#: Multipliers calibration chooses from. Binary codes at 1M synthetic rows needed 128 for
#: recall@10 0.99 (``benchmarks/bench_search.py``), so the range goes well past that.
DEFAULT_MULTIPLIERS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Recall@k the store reaches by default, and the ``k`` it is measured at.
DEFAULT_TARGET = 0.99
DEFAULT_K = 10
#: Stored rows sampled as queries by a store's calibration.
DEFAULT_SAMPLE = 200
#: The most sampled queries a store's calibration measures a borderline multiplier on
#: (sequential sampling, ``calibrate_multiplier(max_sample=...)``); equal to
#: :data:`DEFAULT_SAMPLE`, it is off. Measured (``benchmarks/measure_calibration_policy.py``,
#: ``results/calibration_policy_replay_200k.json``: 500 resampled calibrations on per-query
#: recall curves of 4,000 held-out queries, 200k synthetic binary rows, held-out need m=40):
#: 200 queries chose mean m=55.3 with 1.0% of choices below 0.99 held out; doubling to 400
#: when borderline, m=51.0 and 0.2%, but 392 exact queries per calibration on average (1.96
#: passes); to 800, m=48.2, 0.2%, 767 queries (2.9 passes). The decision is borderline in
#: nearly every calibration, so the queries' exact top 10 (most of a calibration's cost: one
#: pass decodes every stored row) doubles or quadruples for 8-13% fewer candidates; at 400k
#: rows by 40k adds, 800 took 24.9 s of calibration against 11.1 s (same multipliers from 200k
#: on). Ingest at 1M is already over its budget, so the store stays at 200 until exact truth
#: is cheaper (e.g. kept across calibrations from the adds' float32 rows).
DEFAULT_MAX_SAMPLE = DEFAULT_SAMPLE
#: Added to the target by the store's calibration: the recall of a few hundred sampled queries
#: is itself an estimate (its standard error near 0.99 is about 0.002).
DEFAULT_MARGIN = 0.003
#: The store's calibration chooses a multiplier only if ``mean - z * standard error`` of its
#: recall over the sampled queries reaches the target (a one-sided lower bound). Chosen by
#: replaying the store's walk and bisection on 500 resampled 200-query sets of one 400k-row
#: synthetic store per quantizer (40k adds; walk from m=51, ranked up to 4x): the share of
#: calibrations whose multiplier had recall@10 below 0.99 on held-out queries (PQ: 6,000;
#: binary: 1,000) was 12.8% (PQ) / 15.8% (binary) with the margin alone, 4.4% / 4.8% at
#: z=2.33, 2.8% / 3.0% at 2.6 and 2.0% / 2.2% at 3, for mean multipliers 67 / 63 (margin
#: alone), 73 / 69, 76 / 72 and 79 / 75; the rule before (early "met", ranked to 2x): 15.8% /
#: 20.0% at 79 / 71. A 1M store built by adds calibrates four times, so 3 keeps the chance of a
#: dip below 0.99 at one of them near 8%, at the candidates of the rule before for PQ and 5%
#: more for binary. :data:`DEFAULT_MARGIN` stays the least added. Since session 12 a store uses
#: it only where it has nothing to pool with (its first calibration, a new quantizer); its
#: later calibrations use :data:`POOLED_Z`.
DEFAULT_CONFIDENCE_Z = 3.0
#: A store's calibration that has a comparable previous one (same quantizer and target, both met,
#: at least 1.5x fewer rows) pools the two (:func:`pooled`): its own sample chooses with this
#: ``z`` instead of :data:`DEFAULT_CONFIDENCE_Z`, and the multiplier served is the geometric
#: mean of that choice and the previous multiplier grown by ``(rows / previous rows) **``
#: :data:`POOL_GROWTH`. Two independent 200-query choices averaged in log m are less noisy than
#: one, so less of a lower bound is needed. Replayed on whole builds (``benchmarks/
#: replay_calibration_builds.py``, 1,000 resampled builds each, per-query curves of 3,000
#: held-out queries after every add, ``results/calibration_builds_*.json``): 400k synthetic
#: binary rows by 40k adds, calibrations below 0.99 held out 0.22% (today's z=3 alone: 0.63%),
#: adds between them 0% (0.07%), builds with any dip 0.9% (2.5%), multiplier served at 400k
#: 73.2 (82.9; held-out needs 54); 197k real sentences by 20k adds, 0.08% (0.40%), 0% (0%), 0.3%
#: (1.6%), at 197k 26.0 (23.2; needs 15). z=1.5 dipped 0.37% at calibrations (synthetic).
POOLED_Z = 2.0
#: The least growth exponent :func:`pooled` predicts with (the store's own last one when larger,
#: at most 1): the multiplier a store needs grows about as
#: ``rows ** 0.4`` on synthetic rows (held-out need 22, 27, 36, 50 at 40k, 80k, 160k, 320k) and
#: about ``rows ** 0.1`` on real sentences (11-15 from 20k to 197k). A prediction that grows too
#: slowly pulls every choice low: 0.25 dipped at 2.4% of the 320k calibrations (synthetic), 0 at
#: 63%; 0.5 served 6% more at 400k for no fewer dips.
POOL_GROWTH = 0.4
#: Measurement and prediction further apart than this factor are not pooled: the measurement is
#: served (the store changed, or the last answer was wrong). In the replayed builds none of the
#: pooled calibrations was that far apart; at 2, 3.1% of real-sentence ones were (a first
#: calibration at z=3 high over m=11-15), and serving their z=2 measurement alone dipped in
#: 0.67% of calibrations instead of 0.08%.
POOL_SPREAD = 3.0
#: Multipliers up to this times ``start`` are measured from one code scan (ranked), so the
#: bisection reaches the integer there. 2 left a store that needed more than twice its last
#: multiplier on the 1.5x grid (PQ, 800k rows: 128, where 96 measured 0.992 for a goal of
#: 0.993: the answer lay between them); the scan for 4x
#: the candidates cost 3.2 ms per query against 3.0 ms for 2x (400k PQ rows, one thread).
RANKED_REACH = 4
#: With ``early_stop``: queries per chunk, and queries measured before a decision.
_CHUNK = 50
EARLY_STOP_MIN = 50
#: The store measures again once its live rows have grown by this factor since the last
#: calibration (recall at a fixed multiplier falls as rows are added; between two, the multiplier
#: grows with the rows, :meth:`Calibration.multiplier_for`). Each measurement scans every row,
#: so growing a store to n rows costs measurements over about ``n * g / (g - 1)`` rows: 2n at
#: 2, 3n at 1.5; the price is a multiplier up to 2x the one measured just before the next.
RECALIBRATE_GROWTH = 2.0
#: The lowest growth exponent :meth:`Calibration.multiplier_for` uses between calibrations. The
#: exponent is measured from a store's last two calibrations (the multiplier grows as
#: ``rows ** exponent``) and clamped to ``[GROWTH_FLOOR, 1]``: each multiplier measured on 200
#: sampled queries is uncertain by about 10% (recall near 0.99 moves little per step), so over
#: one doubling the exponent is uncertain by about 0.2 (binary, 400k synthetic rows by 40k: the
#: same m=34 measured at 80k and 160k rows, exponent 0). Replayed on that store's held-out
#: recall after every add (``benchmarks/measure_default_recall.py --floors``), 0.75 is the
#: lowest floor that kept recall@10 >= 0.99 between calibrations for binary and 4-bit PQ
#: (0.6: 0.9897 binary, 0.9887 PQ); it serves 4-5% fewer candidates than linear growth there.
GROWTH_FLOOR = 0.75
#: Two calibrations this close in rows (e.g. ``compact()`` after a few adds) say too little
#: about growth: the exponent measured before is kept.
_GROWTH_SPAN = 1.5
#: Bisection steps the store's calibration takes between the largest step that misses the goal
#: and the smallest that meets it: 1 tries the midpoint (96 between 64 and 128, so a grid of
#: 1.5x steps). PQ at 1M synthetic rows met the goal only at 128 on the power-of-two walk, with
#: recall 0.999 against a goal of 0.993; every candidate rescored costs query time.
DEFAULT_REFINE = 1


@dataclass(frozen=True)
class Calibration:
    """The smallest ``rescore_multiplier`` reaching ``target + margin`` recall@k, and what was measured.

    Attributes:
        multiplier: The multiplier to use: the smallest measured one with recall >=
            ``target + margin``, or the largest measured one when none reached it (then
            ``met`` is False); for a store, pooled with its previous calibration (``measured``).
        target: The recall@k asked for.
        met: Whether ``multiplier`` reached ``target + margin`` (capped at 1).
        k: Results per query the recall was measured at.
        recall_by_multiplier: Measured recall@k per multiplier, in increasing order.
        queries: Number of queries measured.
        query_source: ``"stored"`` (sampled stored rows, each excluding itself) or ``"given"``.
        quantization: The store's quantization (``"none"`` means exact search; recall is 1).
        rows: Live rows of the store when measured.
        version: Store version the calibration was measured on (committed with).
        seed: Seed of the query sample.
        margin: Added to ``target`` when choosing, for the sampling error of the measurement.
        grows: Whether searches grow the multiplier with the rows added since
            (:meth:`multiplier_for`). Calibrations saved before that rule have False, so a
            store written then answers as it did until it is calibrated again.
        growth: The exponent of that growth: the multiplier grows as ``rows ** growth``
            (:func:`with_growth` measures it from the store's last two calibrations). 1 (linear)
            until two exist, and for calibrations saved before it was measured.
        z: A multiplier met the goal only if ``recall - z * standard error >= target`` too (a
            one-sided lower bound, :data:`DEFAULT_CONFIDENCE_Z`); 0 for calibrations saved
            before that rule, and for the margin alone.
        error_by_multiplier: The standard error of each measured recall (per-query recall's
            standard deviation over the root of the queries measured); empty when saved before.
        measured: When pooled with the store's previous calibration (:func:`pooled`), the
            multiplier this calibration's own queries chose (``multiplier`` is then the pooled
            one, which need not meet the goal on these queries alone); 0 when not pooled.
        trend: The growth exponent measured from this calibration and the previous one,
            unclamped (:func:`with_growth`; :func:`pooled` predicts the next one with it); None
            when not measured.
    """

    multiplier: int
    target: float
    met: bool
    k: int
    recall_by_multiplier: dict[int, float]
    queries: int
    query_source: str
    quantization: str
    rows: int
    version: int
    seed: int = 0
    margin: float = 0.0
    grows: bool = True
    growth: float = 1.0
    z: float = 0.0
    error_by_multiplier: dict[int, float] = field(default_factory=dict)
    measured: int = 0
    trend: float | None = None

    @property
    def goal(self) -> float:
        """The recall the multiplier was chosen for: ``target + margin``, at most 1."""
        return min(1.0, self.target + self.margin)

    def meets(self, multiplier: int) -> bool:
        """Whether the recall measured at ``multiplier`` met the goal: the choosing rule, reapplied."""
        return _meets(
            self.recall_by_multiplier[multiplier],
            self.error_by_multiplier.get(multiplier, 0.0),
            self.target,
            self.goal,
            self.z,
        )

    def multiplier_for(self, rows: int) -> int:
        """The multiplier to search ``rows`` live rows with: ``multiplier``, grown with the rows since.

        Recall at a fixed multiplier falls as rows are added (1M synthetic rows added by 100k:
        recall@10 0.9945 at m=64 on 500k rows, 0.976 on 800k), so between two calibrations (up
        to :data:`RECALIBRATE_GROWTH` times the rows measured) the multiplier grows as
        ``(rows / self.rows) ** growth``. Linear growth (1) is the safe guess; the multiplier
        the store needs grows more slowly once it is large (binary, the same store: 31, 64, 77,
        92 at 100k, 200k, 400k, 800k rows), hence the measured :attr:`growth`. Never beyond the
        largest default multiplier, nor below the one measured.
        """
        if not self.grows or rows <= self.rows or self.rows <= 0:
            return self.multiplier
        if self.growth == 1.0:  # the linear rule as first written: the same rounding
            grown = math.ceil(self.multiplier * rows / self.rows)
        else:
            grown = math.ceil(self.multiplier * (rows / self.rows) ** self.growth)
        return max(self.multiplier, min(grown, DEFAULT_MULTIPLIERS[-1]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (multiplier keys as strings), e.g. for the manifest."""
        out = asdict(self)
        out["recall_by_multiplier"] = {str(m): r for m, r in self.recall_by_multiplier.items()}
        out["error_by_multiplier"] = {str(m): e for m, e in self.error_by_multiplier.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`.

        One saved without ``margin`` has margin 0, without ``grows`` False, without ``growth``
        1 (linear), without ``z`` 0 and no standard errors, without ``measured`` 0 (not
        pooled): older stores answer as when they
        were written (the multiplier is saved; these only say how it was chosen).
        """
        values = {"grows": False, **data}
        values["recall_by_multiplier"] = {int(m): float(r) for m, r in data["recall_by_multiplier"].items()}
        values["error_by_multiplier"] = {
            int(m): float(e) for m, e in data.get("error_by_multiplier", {}).items()
        }
        return cls(**values)


def pooled_exponent(trend: float | None) -> float:
    """The exponent :func:`pooled` predicts with: the store's last ``trend``, within ``[POOL_GROWTH, 1]``."""
    return POOL_GROWTH if trend is None else min(1.0, max(POOL_GROWTH, trend))


def pooled_multiplier(measured: int, previous: int, span: float, trend: float | None = None) -> int:
    """The geometric mean of ``measured`` and ``previous * span ** pooled_exponent(trend)``, rounded up.

    ``measured`` alone when the two differ by more than :data:`POOL_SPREAD`: the store changed
    (or the previous answer was wrong), so the prediction says nothing.
    """
    predicted = math.log(previous) + pooled_exponent(trend) * math.log(span)
    if abs(math.log(measured) - predicted) > math.log(POOL_SPREAD):
        return measured
    value = math.exp(0.5 * math.log(measured) + 0.5 * predicted)
    return max(1, min(math.ceil(value - 1e-9), DEFAULT_MULTIPLIERS[-1]))


def comparable(previous: Calibration | None, rows: int, target: float) -> bool:
    """Whether a calibration on ``rows`` rows may pool with ``previous`` (:func:`pooled`).

    Only one met for the same target on the same quantizer (the caller knows whether the
    quantizer is new) at most ``1 / 1.5`` of the rows: a calibration close in rows, or on
    other rows (``compact()``), says nothing new about growth.
    """
    return (
        previous is not None
        and previous.met
        and previous.target == target
        and previous.rows > 0
        and rows >= _GROWTH_SPAN * previous.rows
    )


def pooled(calibration: Calibration, previous: Calibration | None) -> Calibration:
    """``calibration`` with its multiplier pooled with the ``previous`` one's prediction (:data:`POOLED_Z`).

    Each calibration's choice rests on 200 sampled queries: at 1M rows by adds of 100k, one
    chose m=67 at 400k (held-out recall 0.9896), the next 144 at 800k where about 95 sufficed.
    The previous calibration predicts this one as ``previous.multiplier * (rows / previous.rows)
    ** g``, ``g`` the growth measured between the previous two (``previous.trend``) within
    ``[POOL_GROWTH, 1]`` (:func:`pooled_exponent`); the multiplier served is the geometric
    mean of prediction and measurement, and :attr:`Calibration.measured` keeps the measured one.
    Unchanged when this calibration did not meet its goal or the two are not :func:`comparable`.
    """
    if previous is None or not calibration.met:
        return calibration
    if not comparable(previous, calibration.rows, calibration.target):
        return calibration
    span = calibration.rows / previous.rows
    multiplier = pooled_multiplier(calibration.multiplier, previous.multiplier, span, previous.trend)
    return replace(calibration, multiplier=multiplier, measured=calibration.multiplier)


def with_growth(
    calibration: Calibration, previous: Calibration | None, *, floor: float = GROWTH_FLOOR
) -> Calibration:
    """``calibration`` with the growth exponent measured from it and the store's ``previous`` one.

    The exponent is ``log(m2 / m1) / log(r2 / r1)`` between the two (multipliers ``m``, live
    rows ``r``), clamped to ``[floor, 1]``. Without a previous calibration, or when either did
    not meet its goal (a multiplier that is only the largest tried says nothing about growth),
    it is 1 (linear). Two calibrations less than 1.5x apart in rows (``compact()``, a forced
    recalibration) keep the previous exponent: their ratio is mostly measurement noise. So does
    a multiplier that grew faster than the rows (exponent above 1): the multiplier a store needs
    grows more slowly than its rows (binary, 1M synthetic rows by 100k: 31, 64, 77, 92 at 100k,
    200k, 400k, 800k), so such a jump is one noisy measurement (session 10's 1M build: 96 at
    400k, then 256 at 800k where 128 held 0.9955 held out), and clamping it to 1 grew that noise
    linearly to 320 at 1M; the jump itself is served, grown by the exponent measured before.
    """
    floor = check_fraction(floor, "floor", example="0.5 (1 keeps the linear rule)")
    growth = 1.0
    if previous is not None and previous.met and calibration.met and previous.rows > 0:
        span = calibration.rows / previous.rows
        ratio = math.log(calibration.multiplier / previous.multiplier)
        measured = ratio / math.log(span) if span > 1 else 0.0
        # Too close in rows, or a jump faster than the rows: noise, not growth; keep the last.
        growth = max(floor, measured) if span >= _GROWTH_SPAN and measured <= 1.0 else previous.growth
        if span >= _GROWTH_SPAN:
            return replace(calibration, growth=growth, trend=measured)
    return replace(calibration, growth=growth)


@dataclass(frozen=True)
class QuerySet:
    """Query vectors and, for sampled stored rows, the row key each query is (-1 otherwise)."""

    vectors: npt.NDArray[np.float32]  # [n, dim]
    keys: npt.NDArray[np.int64] | None  # [n] or None for given queries
    source: str  # "stored" or "given"


def calibrate_multiplier(
    store: Any,
    *,
    target: float = DEFAULT_TARGET,
    margin: float = 0.0,
    z: float = 0.0,
    k: int = DEFAULT_K,
    sample: int = DEFAULT_SAMPLE,
    max_sample: int | None = None,
    multipliers: Sequence[int] | None = None,
    queries: npt.ArrayLike | None = None,
    seed: int = 0,
    stop_at_target: bool = True,
    early_stop: bool = False,
    start: int | None = None,
    descend: bool = True,
    refine: int = 0,
    snapshot: Snapshot | None = None,
) -> Calibration:
    """The smallest ``rescore_multiplier`` whose recall@k on the store's data reaches ``target + margin``.

    With ``z``, also ``recall - z * standard error >= target`` (see the module docstring).
    Recall is measured with rescoring on (the multiplier means nothing without it), against
    exact float search over the same live rows. See the module docstring for how sampled queries
    exclude their own row.

    Args:
        store: A ``VQVectorStore`` or its ``Collection``.
        target: Recall@k to reach, in (0, 1].
        margin: Added to ``target`` (capped at 1) for the sampling error of the measurement.
        z: Standard errors of the measured recall that must lie above ``target`` too (0: the
            margin alone; the store uses :data:`DEFAULT_CONFIDENCE_Z`).
        k: Results per query.
        sample: Stored rows sampled as queries when ``queries`` is None (all rows if fewer).
        max_sample: With ``z`` and sampled queries, the most queries a borderline multiplier
            may be measured on (sequential sampling: its mean meets the goal but its lower
            bound misses the target, and would reach it on ``max_sample`` queries at the same
            mean and deviation; the queries double, each time one more exact pass). None
            measures ``sample`` queries only; the store uses :data:`DEFAULT_MAX_SAMPLE`.
        multipliers: The multipliers the answer is chosen from (default
            :data:`DEFAULT_MULTIPLIERS`).
        queries: Held-back query vectors ``[n, dim]`` to use instead of sampling stored rows.
        seed: Seed of the sample.
        stop_at_target: Stop as soon as the smallest multiplier reaching the goal is known
            (the cheap choice at build time); False measures every multiplier.
        early_stop: Measure each multiplier on chunks of the queries (in random order) and
            stop once at least ``EARLY_STOP_MIN`` queries put the recall more than two
            standard errors below the goal; the store's choice, since a clear miss then costs
            50 two-stage searches instead of all. A multiplier that meets the goal is measured
            on every query either way. Without it, every query is measured.
        start: With ``stop_at_target``, the multiplier to measure first (e.g. the last
            calibration's): walk down while the goal is still met, or up until it is. Recall
            grows with the multiplier, so this finds the same multiplier as a sweep from the
            smallest, in one to three measurements when the store changed little.
        descend: With ``start``, whether to walk down from it. The store always does: a
            store that only grew needs no fewer candidates than before, but its last answer may
            be high by its sample's noise, and walking up only kept it (session 10's 1M build).
        refine: Bisection steps between the largest measured multiplier that misses the goal
            and the chosen one, over the integers between them (1: their midpoint, 2: a quarter
            step, ...); the answer may then lie between ``multipliers``. Multipliers measured
            from one code scan (see ``_Measurer``) bisect down to the integer. 0 (the default) chooses
            from ``multipliers`` only; the store uses :data:`DEFAULT_REFINE`. A ``start`` that
            lies between two ``multipliers`` (an earlier refined answer) is walked from as a
            step; one outside their range is not.
        snapshot: The version to measure (default the current one; a writer passes the version
            it is about to commit).

    Returns:
        The :class:`Calibration`.

    Raises:
        InvalidInputError: The store is empty, or an argument is out of range.
        DimensionMismatchError: ``queries`` have another dimension than the store.
    """
    collection = as_collection(store)
    check_args(target, k, sample)
    check_share(margin, "margin", below=1.0, example="0.003")
    z = check_z(z)
    refine = check_int(refine, "refine", minimum=0, fix="Use 0 to choose from multipliers only, or 1-3.")
    steps = check_multipliers(DEFAULT_MULTIPLIERS if multipliers is None else multipliers)
    if refine and start is not None and start not in steps and steps[0] < start < steps[-1]:
        steps = tuple(sorted({*steps, check_int(start, "start")}))  # an earlier refined answer
    snapshot = collection.snapshot if snapshot is None else snapshot
    check_not_empty(snapshot)
    goal = min(1.0, target + margin)
    pool = sample
    if max_sample is not None and queries is None and z:
        fix = "Use None to measure sample queries only."
        pool = max(sample, check_int(max_sample, "max_sample", fix=fix))
    qs = query_set(collection, queries, pool, seed, snapshot=snapshot)
    if early_stop or pool > sample:  # in random order, so each prefix is itself a uniform sample
        order = np.random.default_rng(seed).permutation(qs.vectors.shape[0])
        qs = QuerySet(qs.vectors[order], None if qs.keys is None else qs.keys[order], qs.source)
    # A walk from ``start`` measures it, the next steps up and a bisection: all ranked in one scan.
    ceiling = RANKED_REACH * start if stop_at_target and start is not None else None
    measured = _Measurer(
        collection,
        qs,
        k,
        goal,
        early_stop=early_stop,
        snapshot=snapshot,
        ceiling=ceiling,
        target=target,
        z=z,
        sample=sample if pool > sample else None,
    )
    chosen = _walk(steps, measured.meets, start, descend=descend, sweep=not stop_at_target)
    if chosen is not None and refine:
        # Ranked multipliers cost no search: bisect down to the integer, not one step.
        ranked = measured.ceiling is not None and chosen <= measured.ceiling
        chosen = _refine(chosen, measured, chosen.bit_length() if ranked else refine)
    return Calibration(
        multiplier=chosen if chosen is not None else steps[-1],
        target=float(target),
        met=chosen is not None,
        k=k,
        recall_by_multiplier=dict(sorted(measured.recall_by.items())),
        error_by_multiplier=dict(sorted(measured.error_by.items())),
        queries=measured.active,
        query_source=qs.source,
        quantization=collection.quantization,
        rows=snapshot.live_rows,
        version=snapshot.version,
        seed=seed,
        margin=float(margin),
        z=z,
    )


class _Measurer:
    """Recall@k per multiplier on one query set; the exact top k computed once per query, as needed.

    With a ``ceiling``, multipliers up to it are measured from one code scan per query: its best
    ``k * ceiling`` candidates in code-score order, whose first ``k * m`` are the candidates the
    search pools at multiplier ``m`` (when the quantizer ``ranks_candidates_by_one_score``). A
    true neighbour is found at ``m`` exactly when it is among them or in a segment the search
    scans exactly at ``m``: rescoring keeps every true top-k row it is given, since fewer than
    ``k`` rows score above it. So recall comes out as a search at ``m`` measures it, and a walk
    that measures three multipliers costs one scan instead of three searches.

    A multiplier meets the goal when its recall does and, with ``z``, when ``recall - z *
    standard error`` reaches ``target`` too (:func:`_meets`); ``met`` keeps each answer, which
    the bisection reads.
    """

    def __init__(
        self,
        collection: Collection,
        qs: QuerySet,
        k: int,
        goal: float,
        *,
        early_stop: bool,
        snapshot: Snapshot,
        ceiling: int | None = None,
        target: float | None = None,
        z: float = 0.0,
        sample: int | None = None,
    ) -> None:
        self.collection, self.qs, self.k, self.goal = collection, qs, k, goal
        self.target, self.z = goal if target is None else target, z
        self.early_stop, self.snapshot = early_stop, snapshot
        self.truth: list[list[int]] = []  # exact top k of every query, once one is needed
        self.recall_by: dict[int, float] = {}
        self.error_by: dict[int, float] = {}  # standard error of each recall measured
        self.met: dict[int, bool] = {}
        live = np.array([v.live_count for v in snapshot.views], dtype=np.int64)
        self.small = 0 if ceiling is None else int(live[live <= k * ceiling].sum())
        self.ceiling: int | None = None
        if ceiling and k * ceiling < snapshot.live_rows:
            # Ranked when the one scan (k * ceiling candidates, the rows of segments read exactly
            # at some multiplier, a query's own row) orders them as searches pool them: for a
            # partitioned store, within the rows its probed lists hold (``ranked_candidates``).
            fetched = k * ceiling + self.small + 1
            self.ceiling = ceiling if fetched <= collection.ranked_candidates(snapshot) else None
        self.candidates: dict[int, npt.NDArray[np.int64]] = {}  # per chunk, from ``_found_by_rank``
        # Sequential sampling: the first ``sample`` queries of ``qs`` are measured; a borderline
        # multiplier doubles them, up to all of ``qs`` (``limit``). Chunks keep fixed bounds.
        total = qs.vectors.shape[0]
        self.limit = total
        self.active = total if sample is None else min(sample, total)
        self.bounds = [*range(0, self.active, _CHUNK), self.active]
        self.per_query: dict[int, list[float | None]] = {}  # per multiplier, in query order
        self.exact_passes = 0

    def meets(self, multiplier: int) -> bool:
        """Measure ``multiplier``; whether its recall reaches the goal.

        A borderline answer (the mean meets the goal, its lower bound misses the target but
        would reach it on all of ``qs`` at the same mean and deviation) doubles the queries
        measured, for this multiplier and every one measured after it.
        """
        if self.k * multiplier >= self.snapshot.live_rows:
            # As many candidates as rows: the engine scans every segment exactly (recall 1).
            self.recall_by[multiplier], self.error_by[multiplier] = 1.0, 0.0
            self.met[multiplier] = True
            return True
        per_query = self.per_query.setdefault(multiplier, [])
        while True:
            stopped = self._measure_more(multiplier, per_query)
            values = [r for r in per_query if r is not None]
            recall = float(np.mean(values)) if values else 1.0
            error = _standard_error(values, self.k) if values else 0.0
            met = _meets(recall, error, self.target, self.goal, self.z)
            if met or stopped or not self._extend(recall, error, len(values)):
                break
        self.recall_by[multiplier], self.error_by[multiplier] = recall, error
        self.met[multiplier] = met
        return met

    def _measure_more(self, multiplier: int, per_query: list[float | None]) -> bool:
        """Measure ``multiplier`` on the active queries not measured yet; whether it stopped early."""
        for begin, end in zip(self.bounds, self.bounds[1:], strict=False):
            if begin < len(per_query):
                continue
            chunk = QuerySet(
                self.qs.vectors[begin:end],
                None if self.qs.keys is None else self.qs.keys[begin:end],
                self.qs.source,
            )
            self._truth_to(self.active)
            if self.ceiling is not None and multiplier <= self.ceiling:
                found = self._found_by_rank(begin, chunk, multiplier)
            else:
                found = approx_keys(
                    self.collection, chunk, self.k, multiplier=multiplier, snapshot=self.snapshot
                )
            truth = self.truth[begin:end]
            per_query += [
                recall_at_k([f], [t], self.k) if t else None for f, t in zip(found, truth, strict=True)
            ]
            values = [r for r in per_query if r is not None]
            # Only a clear miss stops early: a multiplier that meets the goal on 50 queries that
            # happen to be easy would be chosen with too few candidates (measured: 400k PQ rows,
            # 56 -> 0.989 on 200 queries, 57 -> 0.998 on its first 50, chosen).
            if (
                self.early_stop
                and end < self.active
                and values
                and float(np.mean(values)) < self.goal
                and _decided(values, self.goal, self.k)
            ):
                return True
        return False

    def _extend(self, recall: float, error: float, measured: int) -> bool:
        """Double the active queries when more could decide a borderline multiplier; whether it did.

        Borderline: the mean meets the goal, and with all ``limit`` queries at the same mean and
        deviation the lower bound would reach the target. A clear miss, or one more queries
        cannot save, costs nothing more.
        """
        if self.active >= self.limit or recall < self.goal or not self.z or measured == 0:
            return False
        deviation = error * math.sqrt(measured)
        if recall - self.z * deviation / math.sqrt(self.limit) < self.target:
            return False
        grown = min(2 * self.active, self.limit)
        self.bounds = [*self.bounds[:-1], *range(self.active, grown, _CHUNK), grown]
        self.active = grown
        return True

    def _truth_to(self, end: int) -> None:
        """The exact top k of the first ``end`` queries, computed in one pass for those missing."""
        if len(self.truth) < end:
            self.truth += self._exact(len(self.truth), end)

    def _found_by_rank(self, begin: int, chunk: QuerySet, multiplier: int) -> list[list[int]]:
        """The true neighbours of the chunk's queries that a search at ``multiplier`` finds.

        All the chunk's queries at once, as arrays: a loop over them cost 40 us of Python per
        query and multiplier (0.24 s of a 1M-row build's calibrations).
        """
        views = self.snapshot.views
        live = np.array([v.live_count for v in views], dtype=np.int64)
        if begin not in self.candidates:
            assert self.ceiling is not None  # noqa: S101 - callers check
            # Rows of segments read exactly at some multiplier up to the ceiling are dropped from
            # the ranking there: fetch that many more (``small``), so k * m others always remain.
            self.candidates[begin] = self.collection.candidate_keys(
                chunk.vectors, self.k * self.ceiling + self.small, exclude=chunk.keys, snapshot=self.snapshot
            )
        candidates = self.candidates[begin]  # [queries, fetched], -1: none
        n = self.k * multiplier
        # Segments the search reads exactly at this multiplier: no codes, or no more live rows
        # than candidates (engine.search_segments); a query's own row is not live for it.
        no_codes = np.array([v.segment.stored_codes is None for v in views], dtype=bool)
        has_vectors = np.array([v.segment.has_vectors for v in views], dtype=bool)
        exact = np.tile(no_codes | (has_vectors & (live <= n)), (candidates.shape[0], 1))
        if chunk.keys is not None:
            queries = np.flatnonzero(chunk.keys >= 0)
            own = chunk.keys[queries] >> ROW_KEY_SHIFT
            exact[queries, own] = no_codes[own] | (has_vectors[own] & (live[own] - 1 <= n))
        # The pool: the first n candidates of segments scanned, in rank order.
        filled = candidates >= 0
        pooled = filled & ~np.take_along_axis(exact, np.where(filled, candidates >> ROW_KEY_SHIFT, 0), axis=1)
        pooled &= np.cumsum(pooled, axis=1) <= n
        truths = self.truth[begin : begin + candidates.shape[0]]
        truth = np.full((len(truths), max(map(len, truths), default=0)), -1, dtype=np.int64)
        for i, row in enumerate(truths):
            truth[i, : len(row)] = row
        known = truth >= 0
        in_exact = np.take_along_axis(exact, np.where(known, truth >> ROW_KEY_SHIFT, 0), axis=1)
        in_pool = ((truth[:, :, None] == candidates[:, None, :]) & pooled[:, None, :]).any(axis=2)
        found = known & (in_exact | in_pool)
        return [row[kept].tolist() for row, kept in zip(truth, found, strict=True)]

    def _exact(self, begin: int, end: int) -> list[list[int]]:
        """Exact top k of queries ``begin:end``, in one pass.

        Each exact pass decodes every stored row (float16, int8) once, whatever the number of
        queries, and the chosen multiplier is measured on every active query (only a clear miss
        stops early), so one pass serves the whole calibration, and one more each time a
        borderline multiplier doubles the queries (200k float16 rows: a pass costs about 0.33 s
        CPU plus about 2.3 ms per query, one thread).
        """
        self.exact_passes += 1
        keys = None if self.qs.keys is None else self.qs.keys[begin:end]
        part = QuerySet(self.qs.vectors[begin:end], keys, self.qs.source)
        return exact_keys(self.collection, part, self.k, snapshot=self.snapshot)


def _walk(
    steps: tuple[int, ...], meets: Callable[[int], bool], start: int | None, *, descend: bool, sweep: bool
) -> int | None:
    """The smallest step that meets the goal (None if none measured does); see ``calibrate_multiplier``."""
    if sweep:
        met = [m for m in steps if meets(m)]
        return met[0] if met else None
    at = steps.index(start) if start in steps else 0
    if meets(steps[at]):
        while descend and at > 0 and meets(steps[at - 1]):  # walk down while still met
            at -= 1
        return steps[at]
    while at + 1 < len(steps):  # walk up until met
        at += 1
        if meets(steps[at]):
            return steps[at]
    return None


def _refine(chosen: int, measured: _Measurer, levels: int) -> int:
    """Bisect between ``chosen`` and the largest measured multiplier below it that missed the goal.

    Recall grows with the multiplier, so each step halves the interval that holds the smallest
    multiplier meeting the goal. Nothing to do when no smaller multiplier was measured (the
    walk did not go below ``chosen``) or no integer lies between them.
    """
    missed = [m for m, met in measured.met.items() if m < chosen and not met]
    if not missed:
        return chosen
    low, high = max(missed), chosen
    for _ in range(levels):
        middle = (low + high) // 2
        if middle <= low:
            break
        if measured.meets(middle):
            high = middle
        else:
            low = middle
    return high


def _decided(per_query: list[float], goal: float, k: int) -> bool:
    """Whether the recall of these queries is clearly above or below ``goal`` (two standard errors).

    All queries perfect is decided as met. The calibration acts only on a clear miss: deciding
    "met" on 50 queries chose too few candidates when they happened to be easy.
    """
    if len(per_query) < EARLY_STOP_MIN:
        return False
    return abs(float(np.mean(per_query)) - goal) > 2 * _standard_error(per_query, k)


def _standard_error(per_query: list[float], k: int) -> float:
    """The standard error of the mean of per-query recalls.

    The deviation used is at least the smallest one possible at this mean recall (every miss in a
    different query, so a fraction ``(1 - mean) * k`` of the queries at ``1 - 1/k``): a sample
    with few misses must not look more certain than its misses allow.
    """
    mean = float(np.mean(per_query))
    imperfect = min(1.0, (1.0 - mean) * k)
    floor = float(np.sqrt(imperfect * (1.0 - imperfect))) / k
    return max(float(np.std(per_query)), floor) / float(np.sqrt(len(per_query)))


def _meets(recall: float, error: float, target: float, goal: float, z: float) -> bool:
    """The choosing rule: ``recall >= goal`` and ``recall - z * error >= target``."""
    return recall >= goal and recall - z * error >= target


def needs_calibration(
    previous: Calibration | None, current: Snapshot, staged: Snapshot, target: float
) -> bool:
    """Whether a store maintaining a calibration for ``target`` measures on ``staged`` before committing it.

    Yes when the staged version has a quantizer and: there is no calibration for this target,
    the quantizer is new (first trained, or retrained by ``compact()``: new codes), or the live
    rows have grown by :data:`RECALIBRATE_GROWTH` since the last measurement. Deletes and
    small adds reuse the last one; an untrained store searches exactly and needs none.
    """
    if staged.quantizer is None or staged.live_rows == 0:
        return False
    if previous is None or previous.target != target:
        return True
    if staged.quantizer is not current.quantizer:
        return True
    return staged.live_rows >= RECALIBRATE_GROWTH * previous.rows


# -- measuring, shared with offline evaluation -------------------------------------------------
def query_set(
    collection: Collection,
    queries: npt.ArrayLike | None,
    sample: int,
    seed: int,
    *,
    snapshot: Snapshot | None = None,
) -> QuerySet:
    """Given query vectors (checked), or ``sample`` stored rows drawn uniformly with their keys."""
    if queries is not None:
        vectors = collection.check_vectors(queries, "query vectors")
        if vectors.shape[0] == 0:
            msg = "Got 0 query vectors; pass at least one, or leave queries out to sample stored rows."
            raise InvalidInputError(msg)
        return QuerySet(vectors, None, "given")
    keys, vectors = collection.sample_rows(sample, seed=seed, snapshot=snapshot)
    return QuerySet(vectors, keys, "stored")


def exact_keys(
    collection: Collection, qs: QuerySet, k: int, *, snapshot: Snapshot | None = None
) -> list[list[int]]:
    """Exact top-k row keys per query (a sampled query's own row excluded)."""
    keys = collection.search_keys(qs.vectors, k, exact=True, exclude=qs.keys, snapshot=snapshot)
    return [[key for key in row if key >= 0] for row in keys.tolist()]


def approx_keys(
    collection: Collection,
    qs: QuerySet,
    k: int,
    *,
    rescore: bool = True,
    multiplier: int = 1,
    snapshot: Snapshot | None = None,
) -> list[list[int]]:
    """Top-k row keys of the store's two-stage search (a sampled query's own row masked out)."""
    keys = collection.search_keys(
        qs.vectors, k, rescore=rescore, rescore_multiplier=multiplier, exclude=qs.keys, snapshot=snapshot
    )
    return [[key for key in row if key >= 0] for row in keys.tolist()]


def measure_recall(
    collection: Collection,
    qs: QuerySet,
    truth: list[list[int]],
    k: int,
    *,
    rescore: bool = True,
    multiplier: int = 1,
    snapshot: Snapshot | None = None,
) -> float:
    """Recall@k of the two-stage search against ``truth`` (:func:`exact_keys`)."""
    found = approx_keys(collection, qs, k, rescore=rescore, multiplier=multiplier, snapshot=snapshot)
    return recall(found, truth, k)


def recall(found: list[list[int]], truth: list[list[int]], k: int) -> float:
    """Recall@k over the queries that have at least one other row (1.0 if none has)."""
    pairs = [(f, t) for f, t in zip(found, truth, strict=True) if t]
    if not pairs:
        return 1.0
    return float(recall_at_k([f for f, _ in pairs], [t for _, t in pairs], k))


# -- argument checks, shared with offline evaluation -------------------------------------------
def as_collection(store: Any) -> Collection:
    """The ``Collection`` of a store (or the collection itself), or a typed error."""
    collection = getattr(store, "collection", store)
    if not isinstance(collection, Collection):
        msg = f"Expected a VQVectorStore or a Collection, got {type(store).__name__}."
        raise InvalidInputError(msg)
    return collection


def check_args(target: float, k: int, sample: int) -> None:
    """Check the target, ``k`` and the sample size."""
    check_fraction(target, "target")
    check_k(k)
    check_int(sample, "sample", fix="It counts the stored rows sampled as queries.")


def check_z(z: float) -> float:
    """The number of standard errors, checked: a finite number >= 0."""
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z) or z < 0:
        msg = (
            f"z must be a finite number >= 0 (standard errors of the measured recall), got {z!r}; "
            "use 0 for the margin alone, or about 2."
        )
        raise InvalidInputError(msg)
    return float(z)


def check_multipliers(multipliers: Sequence[int]) -> tuple[int, ...]:
    """The multipliers, checked, deduplicated and sorted."""
    values = list(multipliers)
    if not values:
        msg = "multipliers is empty; pass at least one rescore_multiplier, e.g. [1, 2, 4, 8]."
        raise InvalidInputError(msg)
    return tuple(sorted({check_int(m, f"multipliers[{i}]") for i, m in enumerate(values)}))


def check_not_empty(snapshot: Snapshot) -> None:
    """A typed error when the version has no live rows."""
    if snapshot.live_rows == 0:
        msg = "The store is empty: add documents before measuring recall."
        raise InvalidInputError(msg)
