"""Offline evaluation: recall and latency of search settings on a store, and a recommendation.

:func:`evaluate_settings` measures recall@k and single-query latency for every requested
quantization x ``rescore_multiplier`` (plus codes-only search without rescoring) and recommends a
setting; a mode's sweep ends at the first multiplier with recall 1.0. ``langchain-vq eval`` and
the benchmarks call it; :mod:`langchain_vq.evaluation.report` prints its table and plot. The store
itself never imports this module (its runtime calibration is :mod:`langchain_vq.calibration`).

How recall is measured
    As the store's calibration measures it (:func:`langchain_vq.calibration.query_set`,
    :func:`~langchain_vq.calibration.measure_recall`): given queries, or sampled stored rows each
    excluding itself on both sides, against exact float search over the same live rows.

How latency is measured
    Single queries (one vector per call, the way a retriever issues them) through
    :meth:`Collection.search_keys <langchain_vq.collection.Collection.search_keys>` (code scan,
    float rescoring from the store's memory-mapped segments, merge), timed with
    ``time.perf_counter`` after a short warm-up. It excludes embedding the query text and reading
    the text and metadata of the ``k`` results. ``p50_ms``/``p95_ms`` are over ``timed`` queries;
    they depend on the machine's load.

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

from langchain_vq.calibration import (
    DEFAULT_K,
    DEFAULT_MULTIPLIERS,
    DEFAULT_TARGET,
    QuerySet,
    as_collection,
    check_args,
    check_multipliers,
    check_not_empty,
    exact_keys,
    measure_recall,
    query_set,
)
from langchain_vq.collection import Collection, CollectionConfig
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization import normalize_quantization
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

#: Stored rows sampled as queries by default (more than the store's calibration: offline).
DEFAULT_SAMPLE = 500
#: Largest corpus copied into memory to measure a quantization other than the store's own.
DEFAULT_MAX_ROWS = 250_000
#: Single queries timed per setting by default.
DEFAULT_TIMED = 100
_WARMUP = 3


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


def evaluate_settings(
    store: Any,
    *,
    queries: npt.ArrayLike | None = None,
    k: int = DEFAULT_K,
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
        The :class:`Evaluation` (:func:`langchain_vq.evaluation.report.format_table` prints it).

    Raises:
        InvalidInputError: Empty store, or an argument out of range.
        ConfigurationError: An unknown mode.
        DimensionMismatchError: ``queries`` have another dimension than the store.
    """
    collection = as_collection(store)
    check_args(target, k, sample)
    steps = check_multipliers(multipliers)
    check_int(timed, "timed")
    check_int(max_rows, "max_rows")
    snapshot = collection.snapshot
    check_not_empty(snapshot)
    own = collection.quantization
    wanted = _check_modes(modes, own)
    given = None if queries is None else collection.check_vectors(queries, "query vectors")
    notes: list[str] = []
    results: list[SettingResult] = []
    copied: tuple[npt.NDArray[np.float32], str] | None = None
    for mode in wanted:
        if mode in {own, "none"}:
            measured, measured_on = collection, "store"
        else:
            if copied is None:
                copied = _in_memory_vectors(collection, max_rows, seed)
            vectors, measured_on = copied
            measured = Collection(CollectionConfig(metric=collection.metric, quantization=mode))
            n = vectors.shape[0]
            measured.add([str(i) for i in range(n)], [""] * n, [None] * n, vectors)
        results += _measure_mode(
            measured,
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
    if copied is not None:
        notes.append(
            f"quantizations other than the store's ({own}) were measured on {copied[1]}, floats "
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


# -- evaluation helpers ------------------------------------------------------------------------
def _measure_mode(
    collection: Collection,
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
    snapshot = collection.snapshot
    qs = query_set(collection, given, sample, seed)
    truth = exact_keys(collection, qs, k)
    quantizer = None if exact else snapshot.quantizer
    name = "none" if exact else collection.quantization
    code_bytes = quantizer.code_size if quantizer is not None else 0
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
            recall = measure_recall(collection, qs, truth, k, rescore=rescore, multiplier=multiplier or 1)
        times = _time_single(
            collection, qs, timed, k, exact=exact, rescore=rescore, multiplier=multiplier or 1
        )
        results.append(
            SettingResult(
                quantization=name,
                rescore=rescore,
                rescore_multiplier=multiplier,
                recall=recall,
                p50_ms=float(np.percentile(times, 50)),
                p95_ms=float(np.percentile(times, 95)),
                code_bytes=code_bytes,
                rows=snapshot.live_rows,
                measured_on=measured_on,
            )
        )
        if rescore and recall >= 1.0:
            break  # larger multipliers cannot find more, only cost more
    return results


def _time_single(
    collection: Collection,
    qs: QuerySet,
    timed: int,
    k: int,
    *,
    exact: bool,
    rescore: bool,
    multiplier: int,
) -> npt.NDArray[np.float64]:
    """Milliseconds per single query through the collection's search, after a short warm-up."""

    def one(q: npt.NDArray[np.float32]) -> None:
        collection.search_keys(q[None, :], k, exact=exact, rescore=rescore, rescore_multiplier=multiplier)

    queries = qs.vectors[:timed]
    for q in queries[:_WARMUP]:
        one(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        one(q)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3


def _in_memory_vectors(
    collection: Collection, max_rows: int, seed: int
) -> tuple[npt.NDArray[np.float32], str]:
    """The live vectors (a seeded uniform sample of at most ``max_rows``), and what they are."""
    keys, vectors = collection.sample_rows(max_rows, seed=seed)
    total = collection.snapshot.live_rows
    if keys.size < total:
        return vectors, f"in-memory sample of {keys.size:,} of {total:,} rows"
    return vectors, f"in-memory copy ({total:,} rows)"


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
