"""Measure recall and latency of search settings on a store's own data, and pick settings.

Two entry points, both pure functions of a store (or its :class:`~langchain_vq.collection.Collection`):

* :func:`calibrate_multiplier` finds the smallest ``rescore_multiplier`` whose recall@k against
  exact float search reaches a target. The store calls it for ``recall_target=`` /
  ``rescore_multiplier="auto"``; its :class:`Calibration` is JSON-serializable for the manifest.
* :func:`evaluate_settings` measures recall@k and single-query latency for every requested
  quantization x ``rescore_multiplier`` (plus codes-only search without rescoring) and recommends
  a setting; a mode's sweep ends at the first multiplier with recall 1.0. ``langchain-vq eval``
  prints its table.

How recall is measured
    Queries are either given (held-back query vectors: the honest choice when you have them) or
    sampled from the stored rows (uniformly, seeded). A sampled query is itself a stored row, and
    would be its own exact nearest neighbour, found by every quantizer: that would inflate recall.
    So its own row is **excluded on both sides**: the exact top-k is computed over the other rows
    (top ``k + 1`` minus itself), and the approximate search runs with that single row masked out
    (the engine's pre-filter), so it scans exactly the ``k * rescore_multiplier`` candidates a new
    query would get. This costs one search call per sampled query; given queries are searched in
    batches. Recall@k is the mean fraction of the exact top k found in the returned top k
    (:func:`langchain_vq.evaluation.recall_at_k`); queries with fewer than k other rows count the
    rows that exist.

How latency is measured
    Single queries (one vector per call, the way a retriever issues them) through the search
    engine the store uses (code scan, float rescoring from the store's memory-mapped segments,
    merge), timed with ``time.perf_counter`` after a short warm-up. It excludes embedding the
    query text and reading the text and metadata of the ``k`` results. ``p50_ms``/``p95_ms`` are
    over ``timed`` queries; they depend on the machine's load.

Other quantizations than the store's
    are measured on a temporary **in-memory** collection built from the store's live float vectors
    (a seeded uniform sample of at most ``max_rows`` rows when the store is larger), with the
    default options of that quantization. Its floats are in RAM, so its latencies do not include
    page-cache misses, and a smaller sample gives somewhat higher recall than the full store
    would. Each result row says what it was measured on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.evaluation import recall_at_k
from langchain_vq.quantization import normalize_quantization
from langchain_vq.search import search_segments
from langchain_vq.validation import check_fraction, check_int, check_k

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from langchain_vq.collection import Snapshot

#: Multipliers tried by default. Binary codes at 1M rows needed 128 for recall@10 0.99 (synthetic
#: MiniLM-like vectors, ``benchmarks/bench_search.py``), so the sweep goes well past that.
DEFAULT_MULTIPLIERS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Recall@k that settings must reach by default.
DEFAULT_TARGET = 0.99
#: Stored rows sampled as queries by default.
DEFAULT_SAMPLE = 500
#: Largest corpus copied into memory to measure a quantization other than the store's own.
DEFAULT_MAX_ROWS = 250_000
#: Single queries timed per setting by default.
DEFAULT_TIMED = 100
_WARMUP = 3
_QUERY_CHUNK = 256  # queries per exact-search call (bounds the [queries, rows] score block)
_KEY_SHIFT = 40  # global row key = segment index << 40 | row offset


@dataclass(frozen=True)
class Calibration:
    """The smallest ``rescore_multiplier`` reaching ``target`` recall@k, and what was measured.

    Attributes:
        multiplier: The multiplier to use: the smallest measured one with recall >= target, or
            the largest measured one when none reached it (then ``met`` is False).
        target: The recall@k asked for.
        met: Whether ``multiplier`` reached the target.
        k: Results per query the recall was measured at.
        recall_by_multiplier: Measured recall@k per multiplier, in the order measured.
        queries: Number of queries measured.
        query_source: ``"stored"`` (sampled stored rows, each excluding itself) or ``"given"``.
        quantization: The store's quantization (``"none"`` means exact search; recall is 1).
        rows: Live rows of the store when measured.
        version: Store version the calibration was measured on.
        seed: Seed of the query sample.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (multiplier keys as strings), e.g. for the manifest."""
        out = asdict(self)
        out["recall_by_multiplier"] = {str(m): r for m, r in self.recall_by_multiplier.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["recall_by_multiplier"] = {int(m): float(r) for m, r in data["recall_by_multiplier"].items()}
        return cls(**values)


@dataclass(frozen=True)
class SettingResult:
    """Recall and latency of one search setting.

    Attributes:
        quantization: ``"binary"``, ``"int8"``, ``"pq"`` or ``"none"`` (exact float search).
        rescore: Whether code candidates were rescored with the float vectors.
        rescore_multiplier: Candidates per result (``k * rescore_multiplier``); None without
            rescoring (the codes' own top k is returned).
        recall: Recall@k against exact float search.
        p50_ms: Median single-query latency in milliseconds.
        p95_ms: 95th-percentile single-query latency in milliseconds.
        code_bytes: Bytes per vector of the codes kept in RAM (0 for exact search).
        rows: Corpus rows searched.
        measured_on: ``"store"``, or a description of the in-memory sample used.
    """

    quantization: str
    rescore: bool
    rescore_multiplier: int | None
    recall: float
    p50_ms: float
    p95_ms: float
    code_bytes: int
    rows: int
    measured_on: str

    @property
    def label(self) -> str:
        """Short name, e.g. ``binary m=8`` or ``pq codes only``."""
        if self.quantization == "none":
            return "exact float"
        if self.rescore and self.rescore_multiplier is None:
            return f"{self.quantization} (untrained: exact)"
        if not self.rescore:
            return f"{self.quantization} codes only"
        return f"{self.quantization} m={self.rescore_multiplier}"


@dataclass(frozen=True)
class Evaluation:
    """The table of :func:`evaluate_settings` and its recommendation.

    Attributes:
        k: Results per query.
        target: Recall@k the recommendation must reach.
        queries: Queries measured (per corpus).
        query_source: ``"stored"`` or ``"given"``.
        store_quantization: The store's own quantization.
        store_rows: Live rows of the store.
        results: One row per setting measured.
        smallest: The store's own quantization at the smallest multiplier reaching the target
            (None when none did).
        fastest: The setting with the lowest p50 latency among those reaching the target, over
            every quantization measured (None when none did).
        recommendation: One or two sentences saying what to set.
        notes: Conditions of the measurement worth knowing.
    """

    k: int
    target: float
    queries: int
    query_source: str
    store_quantization: str
    store_rows: int
    results: list[SettingResult]
    smallest: SettingResult | None
    fastest: SettingResult | None
    recommendation: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict."""
        out = asdict(self)
        for key in ("smallest", "fastest"):
            value = getattr(self, key)
            out[key] = None if value is None else {**asdict(value), "label": value.label}
        out["results"] = [{**asdict(r), "label": r.label} for r in self.results]
        return out

    def format_table(self) -> str:
        """The results as an aligned text table followed by the recommendation."""
        header = ("setting", f"recall@{self.k}", "p50 ms", "p95 ms", "bytes/vec", "measured on")
        body = [
            (
                r.label + (" *" if r.recall >= self.target else ""),
                f"{r.recall:.4f}",
                f"{r.p50_ms:.2f}",
                f"{r.p95_ms:.2f}",
                str(r.code_bytes),
                r.measured_on,
            )
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        right = {1, 2, 3, 4}

        def fmt(row: Sequence[str]) -> str:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        lines = [fmt(header), fmt(["-" * w for w in widths]), *(fmt(row) for row in body)]
        lines += ["", f"* reaches recall@{self.k} >= {self.target:g}", "", self.recommendation]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- public functions --------------------------------------------------------------------------
def calibrate_multiplier(
    store: Any,
    *,
    target: float = DEFAULT_TARGET,
    k: int = 10,
    sample: int = DEFAULT_SAMPLE,
    multipliers: Sequence[int] = DEFAULT_MULTIPLIERS,
    queries: npt.ArrayLike | None = None,
    seed: int = 0,
    stop_at_target: bool = True,
    start: int | None = None,
) -> Calibration:
    """The smallest ``rescore_multiplier`` whose recall@k on the store's data reaches ``target``.

    Recall is measured with rescoring on (the multiplier means nothing without it), against
    exact float search over the same live rows. See the module docstring for how sampled queries
    exclude their own row.

    Args:
        store: A ``VQVectorStore`` or its ``Collection``.
        target: Recall@k to reach, in (0, 1].
        k: Results per query.
        sample: Stored rows sampled as queries when ``queries`` is None (all rows if fewer).
        multipliers: The multipliers the answer is chosen from.
        queries: Held-back query vectors ``[n, dim]`` to use instead of sampling stored rows.
        seed: Seed of the sample.
        stop_at_target: Stop as soon as the smallest multiplier reaching the target is known
            (the cheap choice at build time); False measures every multiplier.
        start: With ``stop_at_target``, the multiplier to measure first (e.g. the last
            calibration's): walk down while the target is still met, or up until it is. Recall
            grows with the multiplier, so this finds the same multiplier as a sweep from the
            smallest, in one to three measurements when the store changed little.

    Returns:
        The :class:`Calibration`.

    Raises:
        InvalidInputError: The store is empty, or an argument is out of range.
        DimensionMismatchError: ``queries`` have another dimension than the store.
    """
    collection = _collection(store)
    _check_args(target, k, sample)
    steps = _check_multipliers(multipliers)
    snapshot = collection.snapshot
    _check_not_empty(snapshot)
    qs = _query_set(collection, snapshot, queries, sample, seed)
    truth = _exact_keys(collection, snapshot, qs, k)
    recall_by: dict[int, float] = {}

    def measure(m: int) -> bool:
        found = _approx_keys(collection, snapshot, qs, k, rescore=True, multiplier=m)
        recall_by[m] = _recall(found, truth, k)
        return recall_by[m] >= target

    chosen: int | None = None
    if not stop_at_target:
        met = [m for m in steps if measure(m)]
        chosen = met[0] if met else None
    else:
        at = steps.index(start) if start in steps else 0
        if measure(steps[at]):
            chosen = steps[at]
            while at > 0 and measure(steps[at - 1]):  # walk down while still met
                at -= 1
                chosen = steps[at]
        else:
            while at + 1 < len(steps):  # walk up until met
                at += 1
                if measure(steps[at]):
                    chosen = steps[at]
                    break
        recall_by = dict(sorted(recall_by.items()))
    return Calibration(
        multiplier=chosen if chosen is not None else steps[-1],
        target=float(target),
        met=chosen is not None,
        k=k,
        recall_by_multiplier=recall_by,
        queries=qs.vectors.shape[0],
        query_source=qs.source,
        quantization=collection.quantization,
        rows=snapshot.live_rows,
        version=snapshot.version,
        seed=seed,
    )


def evaluate_settings(
    store: Any,
    *,
    queries: npt.ArrayLike | None = None,
    k: int = 10,
    target: float = DEFAULT_TARGET,
    sample: int = DEFAULT_SAMPLE,
    modes: Sequence[str] | None = None,
    multipliers: Sequence[int] = DEFAULT_MULTIPLIERS,
    codes_only: bool = True,
    timed: int = DEFAULT_TIMED,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
) -> Evaluation:
    """Recall@k and single-query latency of each quantization x multiplier, with a recommendation.

    Args:
        store: A ``VQVectorStore`` or its ``Collection``.
        queries: Held-back query vectors ``[n, dim]``; None samples ``sample`` stored rows.
        k: Results per query.
        target: Recall@k the recommendation must reach.
        sample: Stored rows sampled as queries when ``queries`` is None.
        modes: Quantizations to measure (``"binary"``, ``"int8"``, ``"pq"``, ``"none"`` for exact
            float search); default the store's own. Others than the store's are measured on an
            in-memory copy (see the module docstring).
        multipliers: ``rescore_multiplier`` values to measure with rescoring, in increasing
            order, up to the first with recall 1.0.
        codes_only: Also measure each quantization without rescoring.
        timed: Single queries timed per setting (the first ones of the query set).
        max_rows: Largest in-memory copy built for another quantization (sampled beyond).
        seed: Seed of the samples.

    Returns:
        The :class:`Evaluation` (``format_table()`` prints it).

    Raises:
        InvalidInputError: Empty store, or an argument out of range.
        ConfigurationError: An unknown mode.
        DimensionMismatchError: ``queries`` have another dimension than the store.
    """
    collection = _collection(store)
    _check_args(target, k, sample)
    steps = _check_multipliers(multipliers)
    check_int(timed, "timed")
    check_int(max_rows, "max_rows")
    snapshot = collection.snapshot
    _check_not_empty(snapshot)
    own = collection.quantization
    wanted = _check_modes(modes, own)
    given = None if queries is None else collection.check_vectors(queries, "query vectors")
    notes: list[str] = []
    results: list[SettingResult] = []
    sample_rows: tuple[Collection, str] | None = None
    for mode in wanted:
        if mode in {own, "none"}:
            target_collection, target_snapshot, measured_on = collection, snapshot, "store"
        else:
            if sample_rows is None:
                sample_rows = _in_memory_copy(collection, snapshot, max_rows, seed)
            copy, measured_on = sample_rows
            target_collection = Collection(CollectionConfig(metric=collection.metric, quantization=mode))
            target_collection.add(*_rows_of(copy))
            target_snapshot = target_collection.snapshot
        results += _measure_mode(
            target_collection,
            target_snapshot,
            given,
            k=k,
            sample=sample,
            seed=seed,
            multipliers=steps,
            codes_only=codes_only,
            timed=timed,
            exact=mode == "none",
            measured_on=measured_on,
        )
    if sample_rows is not None and sample_rows[1] != "store":
        notes.append(
            f"quantizations other than the store's ({own}) were measured on {sample_rows[1]}, floats "
            "in RAM: their latency excludes page-cache misses."
        )
    if own != "none" and snapshot.quantizer is None:
        notes.append(f"the store's {own} quantizer is not trained yet (too few rows): it searches exactly.")
    queries_n = given.shape[0] if given is not None else min(sample, snapshot.live_rows)
    smallest, fastest, text = _recommend(results, own, target, k)
    return Evaluation(
        k=k,
        target=float(target),
        queries=queries_n,
        query_source="given" if given is not None else "stored",
        store_quantization=own,
        store_rows=snapshot.live_rows,
        results=results,
        smallest=smallest,
        fastest=fastest,
        recommendation=text,
        notes=notes,
    )


# -- query sets and ground truth ---------------------------------------------------------------
@dataclass(frozen=True)
class _QuerySet:
    vectors: npt.NDArray[np.float32]  # [n, dim], checked (normalized for cosine)
    keys: npt.NDArray[np.int64] | None  # [n] global key of the stored row each query is, or None
    source: str


def _query_set(
    collection: Collection,
    snapshot: Snapshot,
    queries: npt.ArrayLike | None,
    sample: int,
    seed: int,
) -> _QuerySet:
    if queries is not None:
        vectors = collection.check_vectors(queries, "query vectors")
        if vectors.shape[0] == 0:
            msg = "Got 0 query vectors; pass at least one, or leave queries out to sample stored rows."
            raise InvalidInputError(msg)
        return _QuerySet(vectors, None, "given")
    live = [
        (index, np.arange(v.segment.rows) if v.live_mask is None else np.flatnonzero(v.live_mask))
        for index, v in enumerate(snapshot.views)
    ]
    keys = np.concatenate([(np.int64(i) << _KEY_SHIFT) + rows for i, rows in live])  # [live_rows]
    rng = np.random.default_rng(seed)
    if keys.size > sample:
        keys = np.sort(rng.choice(keys, size=sample, replace=False))
    vectors = np.stack([_vector_of(snapshot, int(key)) for key in keys]).astype(np.float32)
    return _QuerySet(np.ascontiguousarray(vectors), keys, "stored")


def _vector_of(snapshot: Snapshot, key: int) -> npt.NDArray[np.float32]:
    view = snapshot.views[key >> _KEY_SHIFT]
    return np.asarray(view.segment.vectors[key & ((1 << _KEY_SHIFT) - 1)])


def _keys(segments: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Global row keys ``[n, k]``; -1 where the engine padded."""
    return np.where(segments >= 0, (segments << _KEY_SHIFT) + rows, -1)


def _exact_keys(collection: Collection, snapshot: Snapshot, qs: _QuerySet, k: int) -> list[list[int]]:
    """Exact top-k keys per query (a sampled query's own row excluded), via the engine's exact scan."""
    extra = 1 if qs.keys is not None else 0
    out: list[list[int]] = []
    for start in range(0, qs.vectors.shape[0], _QUERY_CHUNK):
        chunk = qs.vectors[start : start + _QUERY_CHUNK]
        hits = search_segments(list(snapshot.views), chunk, k + extra, kind=collection.kind, quantizer=None)
        keys = _keys(hits.segments, hits.rows)
        for j, row in enumerate(keys.tolist()):
            own = int(qs.keys[start + j]) if qs.keys is not None else None
            out.append([key for key in row if key >= 0 and key != own][:k])
    return out


def _approx_keys(
    collection: Collection,
    snapshot: Snapshot,
    qs: _QuerySet,
    k: int,
    *,
    rescore: bool,
    multiplier: int,
) -> list[list[int]]:
    """Top-k keys of the store's two-stage search; a sampled query's own row is masked out."""
    views = list(snapshot.views)
    out: list[list[int]] = []
    if qs.keys is None:
        for start in range(0, qs.vectors.shape[0], 64):
            hits = search_segments(
                views,
                qs.vectors[start : start + 64],
                k,
                kind=collection.kind,
                quantizer=snapshot.quantizer,
                rescore=rescore,
                rescore_multiplier=multiplier,
            )
            out += [[key for key in row if key >= 0] for row in _keys(hits.segments, hits.rows).tolist()]
        return out
    for vector, key in zip(qs.vectors, qs.keys.tolist(), strict=True):
        index, row = key >> _KEY_SHIFT, key & ((1 << _KEY_SHIFT) - 1)
        mask = np.ones(views[index].segment.rows, dtype=bool)
        mask[row] = False
        masks: list[npt.NDArray[np.bool_] | None] = [None] * len(views)
        masks[index] = mask
        hits = search_segments(
            views,
            vector[None, :],
            k,
            kind=collection.kind,
            quantizer=snapshot.quantizer,
            rescore=rescore,
            rescore_multiplier=multiplier,
            masks=masks,
        )
        out.append([key for key in _keys(hits.segments, hits.rows)[0].tolist() if key >= 0])
    return out


def _recall(found: list[list[int]], truth: list[list[int]], k: int) -> float:
    """Recall@k over the queries that have at least one other row (1.0 if none has)."""
    pairs = [(f, t) for f, t in zip(found, truth, strict=True) if t]
    if not pairs:
        return 1.0
    return float(recall_at_k([f for f, _ in pairs], [t for _, t in pairs], k))


# -- evaluation helpers ------------------------------------------------------------------------
def _measure_mode(
    collection: Collection,
    snapshot: Snapshot,
    given: npt.NDArray[np.float32] | None,
    *,
    k: int,
    sample: int,
    seed: int,
    multipliers: tuple[int, ...],
    codes_only: bool,
    timed: int,
    exact: bool,
    measured_on: str,
) -> list[SettingResult]:
    qs = _query_set(collection, snapshot, given, sample, seed)
    truth = _exact_keys(collection, snapshot, qs, k)
    quantizer = None if exact else snapshot.quantizer
    name = "none" if exact else collection.quantization
    code_bytes = quantizer.code_size if quantizer is not None else 0
    rows = snapshot.live_rows
    if quantizer is None:
        settings: list[tuple[bool, int | None]] = [(True, None)]
    else:
        settings = [(False, None)] if codes_only else []
        settings += [(True, m) for m in multipliers]
    results = []
    for rescore, multiplier in settings:
        if quantizer is None:
            recall = 1.0  # exact search (also an untrained quantizer: the engine searches exactly)
        else:
            found = _approx_keys(collection, snapshot, qs, k, rescore=rescore, multiplier=multiplier or 1)
            recall = _recall(found, truth, k)
        times = _time_single(collection, snapshot, qs.vectors[:timed], k, quantizer, rescore, multiplier or 1)
        results.append(
            SettingResult(
                quantization=name,
                rescore=rescore,
                rescore_multiplier=multiplier,
                recall=recall,
                p50_ms=float(np.percentile(times, 50)),
                p95_ms=float(np.percentile(times, 95)),
                code_bytes=code_bytes,
                rows=rows,
                measured_on=measured_on,
            )
        )
        if rescore and recall >= 1.0:
            break  # larger multipliers cannot find more, only cost more
    return results


def _time_single(
    collection: Collection,
    snapshot: Snapshot,
    queries: npt.NDArray[np.float32],
    k: int,
    quantizer: Any,
    rescore: bool,
    multiplier: int,
) -> npt.NDArray[np.float64]:
    """Milliseconds per single query through the engine, after a short warm-up."""
    views = list(snapshot.views)

    def one(q: npt.NDArray[np.float32]) -> None:
        search_segments(
            views,
            q[None, :],
            k,
            kind=collection.kind,
            quantizer=quantizer,
            rescore=rescore,
            rescore_multiplier=multiplier,
        )

    for q in queries[:_WARMUP]:
        one(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        one(q)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3


def _in_memory_copy(
    collection: Collection, snapshot: Snapshot, max_rows: int, seed: int
) -> tuple[Collection, str]:
    """An in-memory, unquantized collection of (a sample of at most ``max_rows``) live rows."""
    parts = [
        v.segment.vectors if v.live_mask is None else v.segment.vectors[v.live_mask] for v in snapshot.views
    ]
    total = sum(p.shape[0] for p in parts)
    if total > max_rows:
        picks = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
        chosen, offset = [], 0
        for part in parts:
            local = picks[(picks >= offset) & (picks < offset + part.shape[0])] - offset
            chosen.append(np.asarray(part[local]))
            offset += part.shape[0]
        vectors = np.concatenate(chosen)
        described = f"in-memory sample of {max_rows:,} of {total:,} rows"
    else:
        vectors = np.concatenate([np.asarray(p) for p in parts])
        described = f"in-memory copy ({total:,} rows)"
    copy = Collection(CollectionConfig(metric=collection.metric, quantization="none"))
    n = vectors.shape[0]
    copy.add([str(i) for i in range(n)], [""] * n, [None] * n, np.ascontiguousarray(vectors, np.float32))
    return copy, described


def _rows_of(
    copy: Collection,
) -> tuple[list[str], list[str], list[dict[str, Any] | None], npt.NDArray[np.float32]]:
    """Columns to add ``copy``'s rows to another collection."""
    vectors = np.concatenate([np.asarray(v.segment.vectors) for v in copy.snapshot.views])
    n = vectors.shape[0]
    return [str(i) for i in range(n)], [""] * n, [None] * n, vectors


def _recommend(
    results: list[SettingResult], own: str, target: float, k: int
) -> tuple[SettingResult | None, SettingResult | None, str]:
    meeting = [r for r in results if r.recall >= target]
    own_rescored = [r for r in meeting if r.quantization == own and r.rescore_multiplier is not None]
    own_any = [r for r in meeting if r.quantization == own]
    smallest = min(own_rescored, key=lambda r: r.rescore_multiplier or 0) if own_rescored else None
    fastest = min(meeting, key=lambda r: r.p50_ms) if meeting else None
    goal = f"recall@{k} >= {target:g}"
    if fastest is None:
        best = max(results, key=lambda r: r.recall)
        text = (
            f"No setting measured reached {goal}; the best was {best.label} with {best.recall:.4f}. "
            "Try larger multipliers (--multipliers), or int8, which separates neighbours better."
        )
        return None, None, text
    parts = []
    if smallest is not None:
        parts.append(
            f"With the store's {own} codes, rescore_multiplier={smallest.rescore_multiplier} is the "
            f"smallest that reaches {goal} ({smallest.recall:.4f}, p50 {smallest.p50_ms:.2f} ms)."
        )
    elif own_any:
        parts.append(f"The store's {own} setting reaches {goal} ({own_any[0].label}).")
    else:
        parts.append(f"No {own} setting measured reached {goal}.")
    parts.append(
        f"Fastest setting reaching it: {fastest.label} (p50 {fastest.p50_ms:.2f} ms, recall "
        f"{fastest.recall:.4f}, {fastest.code_bytes} bytes/vector, measured on {fastest.measured_on})."
    )
    return smallest, fastest, " ".join(parts)


# -- argument checks ---------------------------------------------------------------------------
def _collection(store: Any) -> Collection:
    collection = getattr(store, "collection", store)
    if not isinstance(collection, Collection):
        msg = f"Expected a VQVectorStore or a Collection, got {type(store).__name__}."
        raise InvalidInputError(msg)
    return collection


def _check_args(target: float, k: int, sample: int) -> None:
    check_fraction(target, "target")
    check_k(k)
    check_int(sample, "sample", fix="It counts the stored rows sampled as queries.")


def _check_multipliers(multipliers: Sequence[int]) -> tuple[int, ...]:
    values = list(multipliers)
    if not values:
        msg = "multipliers is empty; pass at least one rescore_multiplier, e.g. [1, 2, 4, 8]."
        raise InvalidInputError(msg)
    return tuple(sorted({check_int(m, f"multipliers[{i}]") for i, m in enumerate(values)}))


def _check_modes(modes: Sequence[str] | None, own: str) -> list[str]:
    if modes is None:
        return [own]
    out: list[str] = []
    for mode in modes:
        try:
            name = normalize_quantization(mode) or "none"
        except ConfigurationError as exc:
            msg = f"Unknown mode {mode!r}; expected binary, int8, pq or none."
            raise ConfigurationError(msg) from exc
        if name not in out:
            out.append(name)
    if not out:
        msg = "modes is empty; name at least one of binary, int8, pq, none."
        raise InvalidInputError(msg)
    return out


def _check_not_empty(snapshot: Snapshot) -> None:
    if snapshot.live_rows == 0:
        msg = "The store is empty: add documents before measuring recall."
        raise InvalidInputError(msg)


# -- plot --------------------------------------------------------------------------------------
def plot_evaluation(evaluation: Evaluation, path: str | Any) -> None:
    """Write a recall-vs-latency PNG of ``evaluation`` (one line per quantization).

    Needs matplotlib: ``pip install "langchain-vq[plot]"``.
    """
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = 'Plotting needs matplotlib: pip install "langchain-vq[plot]" (or pip install matplotlib).'
        raise ImportError(msg) from exc
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for mode in dict.fromkeys(r.quantization for r in evaluation.results):
        rows = [r for r in evaluation.results if r.quantization == mode]
        rescored = [r for r in rows if r.rescore]
        (line,) = ax.plot(
            [r.p50_ms for r in rescored],
            [r.recall for r in rescored],
            marker="o",
            label=mode if mode != "none" else "exact float",
        )
        for r in rescored:
            if r.rescore_multiplier is not None:
                ax.annotate(
                    f"m={r.rescore_multiplier}",
                    (r.p50_ms, r.recall),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                )
        for r in rows:
            if not r.rescore:
                ax.plot([r.p50_ms], [r.recall], marker="x", color=line.get_color(), linestyle="none")
                ax.annotate(
                    "codes only", (r.p50_ms, r.recall), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
    ax.axhline(evaluation.target, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per single query (ms, log scale)")
    ax.set_ylabel(f"recall@{evaluation.k} vs exact search")
    ax.set_title(
        f"{evaluation.store_rows:,} rows, {evaluation.queries} {evaluation.query_source} queries",
        fontsize=10,
    )
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend(title="quantization", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
