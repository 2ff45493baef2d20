"""Two-stage search over segments: row mask -> code scan -> float rescoring -> merge.

Scores inside the engine are similarities (higher is better): ``q . x`` for inner product (and
cosine, whose vectors are normalized at ingest) and ``-||q - x||^2`` for Euclidean distance.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import faiss
import numpy as np
import numpy.ma  # np.unique imports it on first use: 60-90 ms of a process's first query

from langchain_vq.quantization.precision import codec_of, half_bits_to_float
from langchain_vq.topk import top_k

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy.typing as npt

    from langchain_vq.code_blocks import StoredCodes
    from langchain_vq.quantization.base import Quantizer
    from langchain_vq.storage.segment import Segment

Similarity = Literal["ip", "l2"]
#: Rows of an exact scan's outer blocks: its pieces (:data:`_EXACT_PIECE_ROWS`) never straddle
#: their bounds, so every row is scored with the same arithmetic as when these were the blocks.
_EXACT_CHUNK_ROWS = 1 << 14
#: Rows an exact scan widens and scores at a time, in one pair of buffers for the whole scan: 4k
#: x 384 widened rows (6 MB) and 200 queries' scores (3 MB) stay in this thread's scratch arrays
#: and in the caches. With float16 widened by bit shifts, 200 queries over 200k rows took 0.40 s
#: CPU against 0.43-0.44 s in 16k-row pieces (0.49 s with fresh blocks and FAISS's conversion);
#: 2k rows 0.40-0.42 s, 8k 0.43 s. The product, at the BLAS's peak, is 0.35 s of it.
_EXACT_PIECE_ROWS = 1 << 12
#: OpenBLAS sums products of at most this many multiply-adds (queries x rows x dim) with another
#: kernel, whose last bits can differ: an outer block is cut into pieces only when each piece is
#: larger, so that pieces score rows exactly as their whole block did (they may not be the last
#: bit of a product of a whole block otherwise).
_SMALL_PRODUCT = 1_000_000
#: An exact scan selects its first top k among this many rows (a full selection), then merges
#: in only the rows scoring at least the k-th best so far (``_merged_top_k``).
_EXACT_HEAD_ROWS = 1024
#: A mask keeping at least 1 in this many rows is served by over-fetching from a full code scan.
_DENSE_MASK_FRACTION = 4
#: An exact scan gathers the rows a mask keeps when it keeps fewer than 1 in this many.
_SELECTIVE_FRACTION = 8
#: Candidate rows probed with ``mincore`` per query before rescoring, across all segments.
_PREFETCH_PROBES = 8
#: After this many queries in a row found a segment's probed rows resident, it is probed with one
#: row on one query in :data:`_WARM_PROBE_EVERY` until a probe finds it cold, or a gather of its
#: rows is slow. A ``mincore`` call cost 13 us on warm caches (8 probes 116 us, 2 probes 27 us, at
#: load 8), but 36 us for one call (a whole probe 70-100 us) right after a scan of 12 MB of codes,
#: as every query's probes run: per segment, per query, on a warm store.
_WARM_QUERIES = 32
#: A warm segment is probed on one query in this many.
_WARM_PROBE_EVERY = 16
#: A gather slower than this per row (seconds) took page faults: the segment is probed on the next
#: query. Rows in memory take about 0.5 us each, a page read from disk 50 us or more.
_SLOW_GATHER_SECONDS_PER_ROW = 10e-6
#: Largest scratch array (bytes) a thread keeps for its next search's candidate vectors.
_SCRATCH_BYTES = 1 << 23
_SCRATCH = threading.local()  # this thread's scratch arrays, by name (``_scratch``)
_WARM_KEY = "engine.warm_queries"  # in ``Segment.cache``: queries in a row found resident
_SKIPPED_KEY = "engine.probes_skipped"  # in ``Segment.cache``: warm queries since the last probe


@dataclass(frozen=True)
class SegmentView:
    """A segment as one version of the store sees it: its rows and which of them are deleted."""

    segment: Segment
    deleted: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def live_count(self) -> int:
        """Rows not deleted."""
        return self.segment.rows - self.deleted.size

    @cached_property
    def live_mask(self) -> npt.NDArray[np.bool_] | None:
        """Boolean mask of live rows, or None when every row is live."""
        if self.deleted.size == 0:
            return None
        mask = np.ones(self.segment.rows, dtype=bool)
        mask[self.deleted] = False
        return mask


@dataclass(frozen=True)
class Hits:
    """The best rows for each query, best first; padding has segment -1 and score -inf."""

    scores: npt.NDArray[np.float32]  # [n_queries, k]
    segments: npt.NDArray[np.int64]  # [n_queries, k] index into the views searched
    rows: npt.NDArray[np.int64]  # [n_queries, k] row offset within the segment

    @classmethod
    def empty(cls, n_queries: int, k: int) -> Hits:
        """No results for ``n_queries`` queries, padded to ``k``."""
        return cls(
            np.full((n_queries, k), -np.inf, dtype=np.float32),
            np.full((n_queries, k), -1, dtype=np.int64),
            np.full((n_queries, k), -1, dtype=np.int64),
        )


def similarity(
    queries: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    kind: Similarity,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Exact similarities ``[n_queries, n]`` of queries to vectors (shared by all callers).

    ``out`` (float32, that shape, contiguous) receives them: an exact scan reuses one block of
    scores instead of faulting in fresh pages for each. The same operations in the same order
    either way, so the scores are the same to the bit.
    """
    dots = queries @ vectors.T if out is None else np.matmul(queries, vectors.T, out=out)
    if kind == "ip":
        return dots
    q_norms = np.einsum("ij,ij->i", queries, queries)[:, None]
    x_norms = np.einsum("ij,ij->i", vectors, vectors)[None, :]
    if out is None:
        return -np.maximum(q_norms - 2 * dots + x_norms, 0)
    dots *= 2  # -max(q_norms - 2 * dots + x_norms, 0), in place
    np.subtract(q_norms, dots, out=dots)
    dots += x_norms
    np.maximum(dots, 0, out=dots)
    return np.negative(dots, out=dots)


def _pairwise_similarity(
    queries: npt.NDArray[np.float32], candidates: npt.NDArray[np.float32], kind: Similarity
) -> npt.NDArray[np.float32]:
    """Similarities ``[n_queries, c]`` of each query to its own candidates ``[n_queries, c, d]``."""
    dots = np.einsum("qd,qcd->qc", queries, candidates)
    if kind == "ip":
        return dots
    q_norms = np.einsum("qd,qd->q", queries, queries)[:, None]
    x_norms = np.einsum("qcd,qcd->qc", candidates, candidates)
    return -np.maximum(q_norms - 2 * dots + x_norms, 0)


def search_segments(
    views: list[SegmentView],
    queries: npt.NDArray[np.float32],
    k: int,
    *,
    kind: Similarity,
    quantizer: Quantizer | None,
    rescore: bool = True,
    rescore_multiplier: int = 1,
    masks: list[npt.NDArray[np.bool_] | None] | None = None,
    candidates_only: bool = False,
) -> Hits:
    """The ``k`` best live rows across ``views`` for each query.

    Each segment's codes are scanned for ``k * rescore_multiplier`` candidates; the candidates of
    all segments are pooled and only the pool's best ``k * rescore_multiplier`` (by code score,
    comparable across segments since they share one quantizer) are rescored with the float
    vectors. So the multiplier means the same with one segment or ten, and rescoring reads
    ``k * rescore_multiplier`` float rows per query, not that many per segment. Segments with no
    codes, or with no more live rows than candidates, are searched exactly.

    Args:
        views: The segments to search.
        queries: ``float32[n_queries, dim]``, already normalized if the metric is cosine.
        k: Results per query.
        kind: ``"ip"`` or ``"l2"``.
        quantizer: Fitted quantizer whose codes the segments hold, or None for exact search.
        rescore: Rescore the code candidates with the float vectors.
        rescore_multiplier: Candidates per query from the code scan are ``k * rescore_multiplier``.
        masks: Optional extra row mask per view (e.g. a metadata filter); False rows are skipped.
        candidates_only: Return the pooled code-scan candidates instead (``k *
            rescore_multiplier`` per query, best code score first, not rescored), scanning the
            codes of every segment that has them, however few its rows (segments without codes
            are left out). Calibration ranks the true neighbours in this order.
    """
    n_queries = queries.shape[0]
    n_candidates = k * rescore_multiplier if rescore else k
    parts: list[Hits] = []
    pooled: list[Hits] = []  # code-scan candidates, scored by the quantizer
    together: list[tuple[int, StoredCodes, npt.NDArray[np.bool_] | None]] = []
    filtered: list[tuple[int, StoredCodes, npt.NDArray[np.bool_]]] = []  # masks hiding many rows
    with _faiss_threads(1 if n_queries == 1 else None):
        for index, view in enumerate(views):
            mask = _view_mask(view, None if masks is None else masks[index])
            segment = view.segment
            live = segment.rows if mask is None else int(np.count_nonzero(mask))
            if live == 0:
                continue
            codes = segment.stored_codes
            small = live <= n_candidates and segment.has_vectors and not candidates_only
            if quantizer is None or codes is None or small:
                hits = exact_search(segment.vectors, queries, k, kind, mask, _decoder(segment))
                parts.append(Hits(hits.scores, np.full_like(hits.rows, index), hits.rows))
            elif mask is None or segment.rows - live <= n_candidates:
                together.append((index, codes, mask))  # hides few rows: one scan for all
            else:
                filtered.append((index, codes, mask))
        if together or filtered:
            assert quantizer is not None  # noqa: S101 - only segments with codes are scanned
            pooled = _code_scan(
                quantizer, views, together, filtered, queries, n_candidates, masks is not None
            )
        if candidates_only:  # in code-score order, whatever order the scans returned
            return _merge(pooled, n_candidates) if pooled else Hits.empty(n_queries, n_candidates)
        if pooled:
            candidates = pooled[0] if len(pooled) == 1 else _merge(pooled, n_candidates)
            parts.append(_rescore(views, candidates, queries, k, kind, quantizer, rescore))
    if not parts:
        return Hits.empty(n_queries, k)
    return _merge(parts, k) if len(parts) > 1 else _padded(parts[0], k)


def _code_scan(
    quantizer: Quantizer,
    views: list[SegmentView],
    together: list[tuple[int, StoredCodes, npt.NDArray[np.bool_] | None]],
    filtered: list[tuple[int, StoredCodes, npt.NDArray[np.bool_]]],
    queries: npt.NDArray[np.float32],
    n: int,
    filtering: bool,
) -> list[Hits]:
    """Code-scan candidates of the segments scanned (the caller pools them by code score).

    ``together``: segments hiding few rows (deletions) or none; ``filtered``: segments a filter
    hides many rows of; ``filtering``: the query has a filter.
    """
    pooled: list[Hits] = []
    coded = _segments_with_codes(views)
    if filtered or (filtering and together):  # a filter: its segments vary
        found, joined = _filtered_candidates(quantizer, views, together, filtered, queries, n)
        pooled += found
        together = [] if joined else together
    elif together and coded > 1 and len(together) < coded:
        # Some segments with codes are read exactly at this k (no more live rows than
        # candidates): searching the rest would join a different set than at another k, and
        # alternating k (4, then 10) rebuilt the joined index on every query (77 ms at 400k
        # rows; measure_alternating_k.py now finds alternating k as fast as one k). The index
        # of all of them serves, the exact ones hidden.
        joined_hits = _joined_candidates(quantizer, views, together, queries, n)
        if joined_hits is not None:
            pooled.append(joined_hits)
            together = []
    if together:
        # One call for all these segments: the query is prepared once and a candidate stage
        # is pooled across them (a store of ten segments paid ten Hamming re-ranks). Without
        # a filter the same segments come back on every query: fast scan keeps one index
        # over all of them (a filter's segments reach it through _filtered_candidates, which
        # joins every segment with codes; here only when that fell back).
        indices = np.array([t[0] for t in together], dtype=np.int64)
        scores, arrays, rows = quantizer.search_many(
            queries,
            [t[1] for t in together],
            n,
            masks=[t[2] for t in together],
            joined=not filtering,
        )
        pooled.append(Hits(scores, np.where(arrays >= 0, indices[np.maximum(arrays, 0)], -1), rows))
    return pooled


def _view_mask(view: SegmentView, extra: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.bool_] | None:
    """The rows of ``view`` to search: live and kept by ``extra`` (None: all of them)."""
    mask = view.live_mask
    if extra is None:
        return mask
    return extra if mask is None else mask & extra


def _filtered_candidates(
    quantizer: Quantizer,
    views: list[SegmentView],
    together: list[tuple[int, StoredCodes, npt.NDArray[np.bool_] | None]],
    filtered: list[tuple[int, StoredCodes, npt.NDArray[np.bool_]]],
    queries: npt.NDArray[np.float32],
    n: int,
) -> tuple[list[Hits], bool]:
    """Candidates of the segments a filter scans; True if ``together``'s came too.

    ``together`` are the segments it hides few rows of, ``filtered`` those it hides many of;
    when the first value is False the caller searches ``together`` itself.

    A dense filter (keeping at least 1/4 of the rows of all segments with codes) is served by
    the joined index unfiltered queries keep, over all those segments, over-fetching for the
    hidden rows: a filter neither builds a second copy of the codes nor scans segment by
    segment. Otherwise, or when the over-fetch falls short, each segment on its own
    (:func:`_code_candidates`).
    """
    scanned = [*together, *filtered]
    total = sum(view.segment.rows for view in views if view.segment.stored_codes is not None)
    kept = sum(codes.shape[0] if mask is None else int(np.count_nonzero(mask)) for _, codes, mask in scanned)
    if _segments_with_codes(views) > 1 and kept * _DENSE_MASK_FRACTION >= total:
        found = _joined_candidates(quantizer, views, scanned, queries, n)
        if found is not None:
            return [found], True
    parts = []
    for index, codes, mask in filtered:
        scores, rows = _code_candidates(quantizer, codes, queries, n, mask)
        parts.append(Hits(scores, np.full_like(rows, index), rows))
    return parts, False


def _segments_with_codes(views: list[SegmentView]) -> int:
    return sum(view.segment.stored_codes is not None for view in views)


def _joined_candidates(
    quantizer: Quantizer,
    views: list[SegmentView],
    scanned: list[tuple[int, StoredCodes, npt.NDArray[np.bool_] | None]],
    queries: npt.NDArray[np.float32],
    n: int,
) -> Hits | None:
    """The best ``n`` rows of ``scanned`` from the joined index of every segment with codes.

    The index's set is always the same, whatever this query scans: segments missing from
    ``scanned`` (emptied by a filter, or read exactly) take part with nothing kept. None when
    the quantizer keeps no joined index or the over-fetch fell short.
    """
    masks = {index: mask for index, _, mask in scanned}
    indices, arrays, kept = [], [], []
    for index, view in enumerate(views):
        codes = view.segment.stored_codes
        if codes is not None:
            indices.append(index)
            arrays.append(codes)
            kept.append(masks[index] if index in masks else np.zeros(codes.shape[0], dtype=bool))
    found = quantizer.joined_candidates(queries, arrays, n, kept)
    if found is None:
        return None
    scores, found_arrays, rows = found
    segment_of = np.array(indices, dtype=np.int64)
    return Hits(scores, np.where(found_arrays >= 0, segment_of[np.maximum(found_arrays, 0)], -1), rows)


def _rescore(
    views: list[SegmentView],
    candidates: Hits,
    queries: npt.NDArray[np.float32],
    k: int,
    kind: Similarity,
    quantizer: Quantizer | None,
    rescore: bool,
) -> Hits:
    """Exact scores of pooled candidates from the float vectors (or the codes' reconstruction).

    The candidates' vectors are gathered into one array, segment by segment (one segment: the
    gather itself), and scored in one einsum call, so a row scores the same bits whichever
    segment holds it (tests compare one segment with the same rows split in four). Places no
    candidate fills score ``-inf``.
    """
    n_queries, n_candidates = candidates.rows.shape
    segments, rows = candidates.segments.ravel(), candidates.rows.ravel()
    valid = rows >= 0
    shape = (n_queries, n_candidates, queries.shape[1])
    first = int(segments[0]) if segments.size else -1
    complete = bool(valid.all())
    if first >= 0 and complete and bool((segments == first).all()):
        indices = [first]
    else:
        indices = np.flatnonzero(np.bincount(segments[valid], minlength=len(views))).tolist()
    grouped = n_queries == 1 and len(indices) > 1 and n_candidates * shape[2] * 4 <= _SCRATCH_BYTES
    if grouped and _stored_as_float(views, indices, rescore):
        # One query over several segments: its candidates' vectors are scored segment after
        # segment as gathered, and the scores (not the rows) put back in candidate order; a
        # row's score does not depend on where it sits, so the bits are those of scoring in order.
        part, places = _gather_grouped(views, indices, segments, rows, queries.shape[1])
        scores = np.full((1, n_candidates), -np.inf, np.float32)
        scores[0, places] = _pairwise_similarity(queries, part[None], kind)[0]
    else:
        part = _gather_segments(views, indices, segments, rows, quantizer, rescore, queries.shape[1])
        scores = _pairwise_similarity(queries, part.reshape(shape), kind)
    if not complete:
        scores[~valid.reshape(n_queries, n_candidates)] = -np.inf
    best_scores, best = top_k(scores, k)
    queries_of = np.arange(n_queries)[:, None]  # plain indexing: take_along_axis costs more per call
    return Hits(best_scores, candidates.segments[queries_of, best], candidates.rows[queries_of, best])


def _gather_segments(
    views: list[SegmentView],
    indices: list[int],
    segments: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    quantizer: Quantizer | None,
    rescore: bool,
    dim: int,
) -> npt.NDArray[np.float32]:
    """Float32 vectors ``[len(rows), dim]`` of candidates in the segments ``indices`` (zeros where none).

    Segments storing float32 or float16 alike are gathered as stored and converted once, an
    exact conversion, so the same bits as converting per segment; a conversion's fixed cost is
    paid once, not per segment. float16 rows land as their bits in int32 places (widened in the
    copy that places them) and are converted there in place (``half_bits_to_float``). Both go
    to this thread's scratch arrays (:func:`_scratch`): the caller scores them before the next
    search. Others (int8, whose ranges are per segment; codes only) are decoded segment by segment.
    """
    probes = max(1, _PREFETCH_PROBES // max(1, len(indices)))  # a few rows per query in all
    chosen = [views[index].segment for index in indices]
    precisions = {segment.precision for segment in chosen}
    if rescore and len(precisions) == 1 and precisions <= {"float32", "float16"}:
        stored_type = chosen[0].vectors.dtype.type
        # Past the scratch size (big batches) float16 is gathered as it is and decoded in one pass.
        half = stored_type is np.float16 and rows.size * dim * 4 <= _SCRATCH_BYTES
        out = _scratch("vectors", (rows.size, dim), np.int32 if half else stored_type)
        if len(chosen) == 1 and bool((segments == indices[0]).all()):  # every place, in order
            found = _stored_rows(chosen[0], rows, probes, None if half else out)
            if half:
                np.copyto(out, found.view(np.int16))
        else:
            out[segments < 0] = 0  # padding (segment -1)
            for index, segment in zip(indices, chosen, strict=True):
                at = np.flatnonzero(segments == index)
                found = _stored_rows(segment, rows[at], probes)
                out[at] = found.view(np.int16) if half else found
        if half:
            return half_bits_to_float(out)
        return out if stored_type is np.float32 else codec_of(chosen[0]).decode(out)
    if len(chosen) == 1 and bool((segments == indices[0]).all()):
        return _candidate_vectors(chosen[0], rows, quantizer, rescore, probes)
    part = np.zeros((rows.size, dim), np.float32)
    for index, segment in zip(indices, chosen, strict=True):
        at = np.flatnonzero(segments == index)
        part[at] = _candidate_vectors(segment, rows[at], quantizer, rescore, probes)
    return part


def _stored_as_float(views: list[SegmentView], indices: list[int], rescore: bool) -> bool:
    """Whether the rescoring vectors of these segments are all float16 or all float32."""
    precisions = {views[index].segment.precision for index in indices}
    return rescore and len(precisions) == 1 and precisions <= {"float32", "float16"}


def _gather_grouped(
    views: list[SegmentView],
    indices: list[int],
    segments: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    dim: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Float32 vectors of the candidates in segments ``indices``, segment after segment.

    The segments store float16 or float32 alike (:func:`_stored_as_float`).

    Returns ``(vectors, places)``: row ``i`` is the candidate at ``places[i]``. Each segment's
    rows are gathered into one contiguous slice and float16 is widened and converted once,
    with no scatter into candidate order (a scatter that widened float16 to int32 cost more
    than the conversion). Scratch arrays, as :func:`_gather_segments`'s.
    """
    probes = max(1, _PREFETCH_PROBES // len(indices))
    chosen = [views[index].segment for index in indices]
    half = chosen[0].precision == "float16"
    places = [np.flatnonzero(segments == index) for index in indices]
    count = sum(at.size for at in places)
    out = _scratch("vectors", (count, dim), np.int32 if half else np.float32)
    stored = _scratch("stored", (count, dim), np.float16) if half else out
    start = 0
    for segment, at in zip(chosen, places, strict=True):
        _stored_rows(segment, rows[at], probes, stored[start : start + at.size])
        start += at.size
    if half:
        np.copyto(out, stored.view(np.int16))
    return (half_bits_to_float(out) if half else out), np.concatenate(places)


def _scratch(name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """An uninitialised array of this thread's, reused by its next search (at most :data:`_SCRATCH_BYTES`).

    A query's candidate vectors (1,710 x 384 at 1M rows: 2.6 MB) in fresh arrays took fresh
    pages from the kernel on every query, a page fault per 4 kB; larger requests (big batches)
    get a fresh array.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > _SCRATCH_BYTES:
        return np.empty(shape, dtype)
    kept = _SCRATCH.__dict__
    buffer = kept.get(name)
    if buffer is None or buffer.size < size:
        buffer = kept[name] = np.empty(size, np.uint8)
    return buffer[:size].view(dtype).reshape(shape)


def _candidate_vectors(
    segment: Segment, rows: npt.NDArray[np.int64], quantizer: Quantizer | None, rescore: bool, probes: int
) -> npt.NDArray[np.float32]:
    """Float32 vectors ``[len(rows), dim]`` of candidates: stored (prefetched when cold) or decoded."""
    if rescore and segment.has_vectors:
        stored = _stored_rows(segment, rows, probes)
        decoded = stored if segment.precision == "float32" else codec_of(segment).decode(stored)
        return np.ascontiguousarray(decoded, dtype=np.float32)
    assert quantizer is not None  # noqa: S101 - a segment without vectors has codes
    assert segment.stored_codes is not None  # noqa: S101
    return quantizer.decode(segment.stored_codes.take(rows))


def _prefetch(segment: Segment, rows: npt.NDArray[np.int64], probes: int) -> None:
    """``segment.prefetch`` with ``probes`` rows; once the segment stayed warm, one row now and then."""
    cache = segment.cache
    warm = cache.get(_WARM_KEY, 0)
    if warm >= _WARM_QUERIES:
        skipped = cache.get(_SKIPPED_KEY, 0)
        if skipped + 1 < _WARM_PROBE_EVERY:
            cache[_SKIPPED_KEY] = skipped + 1
            return
        probes = 1
    cache[_SKIPPED_KEY] = 0
    resident = segment.prefetch(rows, probes=probes)
    cache[_WARM_KEY] = min(warm + 1, _WARM_QUERIES) if resident else 0


def _stored_rows(
    segment: Segment, rows: npt.NDArray[np.int64], probes: int, out: npt.NDArray[Any] | None = None
) -> npt.NDArray[np.generic]:
    """The stored vectors of ``rows`` (prefetched when cold), in ``out`` or this thread's scratch array.

    A slow gather (page faults) has the next query probe the segment.
    """
    _prefetch(segment, rows, probes)
    vectors = segment.vectors
    if out is None:
        out = _scratch("stored", (rows.size, vectors.shape[1]), vectors.dtype.type)
    start = time.perf_counter()
    np.take(vectors, rows, axis=0, out=out, mode="clip")  # rows are in range; "raise" copies out
    if time.perf_counter() - start > _SLOW_GATHER_SECONDS_PER_ROW * rows.size:
        segment.cache[_SKIPPED_KEY] = _WARM_PROBE_EVERY  # a warm segment is probed on the next query
    return out


def _decoder(segment: Segment) -> Callable[[npt.NDArray[np.generic]], npt.NDArray[np.float32]] | None:
    """How an exact scan reads the segment's stored vectors as float32 (None: it reads them itself)."""
    if segment.precision in ("float32", "float16"):
        return None
    return codec_of(segment).decode


@contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS kernels on ``threads`` OpenMP threads (None: leave as is).

    A single query is faster on one thread: with 2 threads and the default OpenMP wait policy a
    binary query took 57 ms instead of 3 ms on a busy machine (docs/architecture.md, Decisions).
    """
    previous = None if threads is None else faiss.omp_get_max_threads()
    if threads is None or previous is None or previous == threads:  # nothing to set
        yield
        return
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def exact_search(
    vectors: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    k: int,
    kind: Similarity = "ip",
    mask: npt.NDArray[np.bool_] | None = None,
    decode: Callable[[npt.NDArray[np.generic]], npt.NDArray[np.float32]] | None = None,
) -> Hits:
    """Exact top ``k`` rows of ``vectors`` for each query, in chunks so memory stays bounded.

    The one exact scan: segments without codes, calibration's ground truth and
    :func:`langchain_vq.evaluation.exact_top_k` all use it. Rows ``mask`` sets False are
    skipped; a selective mask (keeping under 1/8 of the rows) scans only the rows it keeps.
    Returns :class:`Hits` of shape ``[n_queries, min(k, rows)]`` with segment 0; a place
    that only a skipped row could fill holds row -1, segment -1 and score ``-inf``. float16
    rows are widened exactly here (:func:`half_bits_to_float`); ``decode`` reads other stored
    vectors that are not float32 (int8 levels), a block at a time.
    """
    if mask is not None and np.count_nonzero(mask) * _SELECTIVE_FRACTION < mask.size:
        live_rows = np.flatnonzero(mask)
        hits = exact_search(vectors[live_rows], queries, k, kind, None, decode)
        rows = np.where(hits.rows >= 0, live_rows[np.maximum(hits.rows, 0)], -1)
        return Hits(hits.scores, hits.segments, rows)
    best: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None  # top k so far
    n_rows, dim = vectors.shape
    n_queries = queries.shape[0]
    for start, stop in _exact_blocks(n_rows, n_queries * dim):
        block = vectors[start:stop]
        # A block's widened rows and its scores go to this thread's scratch arrays, reused from
        # block to block: fresh arrays had the kernel zero new pages for each (a large share of
        # an ingest's system time). Only a last piece above their size gets fresh ones.
        if block.dtype == np.float16:  # exact: the values numpy's or FAISS's conversion gives
            bits = _scratch("vectors", block.shape, np.int32)
            np.copyto(bits, block.view(np.int16))
            block = half_bits_to_float(bits)
        elif decode is not None:
            block = decode(block)
        out = None
        if queries.dtype == np.float32 and block.dtype == np.float32:
            out = _scratch("scores", (n_queries, block.shape[0]), np.float32)
        scores = similarity(queries, block, kind, out)
        if mask is not None:
            scores[:, ~mask[start:stop]] = -np.inf
        offset = start
        if best is None:  # the best of the first rows, then the rest of the block merged in
            head = min(scores.shape[1], max(k, _EXACT_HEAD_ROWS))
            head_scores, head_rows = top_k(scores[:, :head], k)
            best = head_scores, head_rows + start
            scores, offset = scores[:, head:], start + head
        if scores.shape[1]:
            best = _merged_top_k(best, scores, offset, k)
    if best is None:  # no rows at all
        return Hits.empty(queries.shape[0], k)
    scores, rows = best
    rows[~np.isfinite(scores)] = -1
    return Hits(scores, np.where(rows >= 0, 0, -1), rows)


def _exact_piece_rows(width: int) -> int:
    """Rows of an exact scan's pieces for queries x dim ``width`` (:func:`_exact_blocks`)."""
    piece = min(_EXACT_PIECE_ROWS, _EXACT_CHUNK_ROWS)
    return piece if width * piece > _SMALL_PRODUCT else _EXACT_CHUNK_ROWS


def _exact_blocks(n_rows: int, width: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of an exact scan's blocks over ``n_rows`` rows, for queries x dim ``width``.

    Outer blocks of :data:`_EXACT_CHUNK_ROWS` rows, each cut into pieces of
    :func:`_exact_piece_rows`, its last piece taking the rest (at most twice a piece less one
    row): no piece is smaller than a piece or than its whole block, and none is cut when a piece
    would be a small product (:data:`_SMALL_PRODUCT`), so every row is scored as in whole blocks.
    """
    piece = _exact_piece_rows(width)
    for outer in range(0, n_rows, _EXACT_CHUNK_ROWS):
        start, stop = outer, min(outer + _EXACT_CHUNK_ROWS, n_rows)
        while stop - start >= 2 * piece:
            yield start, start + piece
            start += piece
        yield start, stop


def _merged_top_k(
    best: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    scores: npt.NDArray[np.float32],
    start: int,
    k: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The top ``k`` of ``best`` (earlier rows) and ``scores`` (rows from ``start``), as one ``top_k``.

    Only scores at least each query's ``k``-th best so far can enter (ties too: the row order
    decides among them, and these rows come after the earlier ones), and after the first rows
    they are a few per query: selecting among them instead of the whole block cut the CPU of
    an exact pass by 8-18% (50 and 150 queries over 200k float16 rows, 0.46 -> 0.38-0.43 s and
    0.77-0.83 -> 0.67-0.71 s at load 12; the decode and the product are the rest). The
    result is that of :func:`top_k` over all rows seen, ties included.
    """
    best_scores, best_rows = best
    if best_scores.shape[1] < k:  # fewer than k rows so far: every row can enter
        rows = np.broadcast_to(np.arange(start, start + scores.shape[1], dtype=np.int64), scores.shape)
        return top_k(
            np.concatenate([best_scores, scores], axis=1), k, np.concatenate([best_rows, rows], axis=1)
        )
    # The entering places as flat indices: np.nonzero of the 2-D mask took 13x as long (17 against
    # 1.3 ms for 200 queries x 16k rows), a tenth of an exact pass.
    query, column = np.divmod(np.flatnonzero(scores >= best_scores[:, -1:]), scores.shape[1])
    if query.size == 0:
        return best
    counts = np.bincount(query, minlength=scores.shape[0])
    place = np.arange(query.size) - np.repeat(np.cumsum(counts) - counts, counts)  # within its query
    width = int(counts.max())
    entering = np.full((scores.shape[0], width), -np.inf, dtype=np.float32)
    # Padding gets a row after every real one, so even among -inf scores it is never chosen
    # while ``best`` still holds k rows.
    rows = np.full((scores.shape[0], width), np.iinfo(np.int64).max, dtype=np.int64)
    entering[query, place] = scores[query, column]
    rows[query, place] = column + start
    return top_k(
        np.concatenate([best_scores, entering], axis=1), k, np.concatenate([best_rows, rows], axis=1)
    )


def _code_candidates(
    quantizer: Quantizer,
    codes: StoredCodes,
    queries: npt.NDArray[np.float32],
    n: int,
    mask: npt.NDArray[np.bool_] | None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Code scores and row offsets ``[n_queries, <= n]`` of the best live rows by code scan.

    Few masked rows, or a mask keeping at least a quarter of the rows: scan all codes, fetch
    enough extra candidates, drop the masked ones (checked: if any query is left with fewer
    than ``n``, fall through). A selective mask: scan only the kept rows' codes, so a filter
    that keeps 10 rows costs 10 rows and never returns fewer than it could.
    """
    if mask is None:
        return quantizer.search(queries, codes, n, reuse=True)
    live = int(np.count_nonzero(mask))
    masked = mask.size - live
    if masked <= n or live * _DENSE_MASK_FRACTION >= mask.size:
        # Over-fetch from a scan of all codes: enough to hold n live rows when the masked rows
        # are few, or (a mask keeping at least a quarter) in expectation with a 1.5x margin.
        fetch = n + masked if masked <= n else min(mask.size, int(1.5 * n * mask.size / live) + n)
        scores, rows = quantizer.search(queries, codes, fetch, reuse=True)
        keep = mask[rows]
        if masked <= n or bool((keep.sum(axis=1) >= n).all()):
            # Stable ordering: live rows first, in ranked order; then cut to n per query.
            order = np.argsort(~keep, axis=1, kind="stable")[:, :n]
            return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
    live_rows = np.flatnonzero(mask)
    scores, sub_rows = quantizer.search(queries, codes.take(live_rows), n)  # a one-off copy: no reuse
    return scores, live_rows[sub_rows]


def _padded(part: Hits, k: int) -> Hits:
    """What :func:`_merge` makes of a single part, already best first: no re-ranking needed.

    Places with no finite score get row and segment -1, and the columns are padded to ``k``.
    """
    if part.scores.dtype == np.float32 and bool(np.isfinite(part.scores).all()):
        return _pad(part, k)  # every place filled (the usual case): nothing to mark
    rows = np.where(np.isfinite(part.scores), part.rows, -1)
    out = Hits(part.scores.astype(np.float32, copy=False), np.where(rows >= 0, part.segments, -1), rows)
    return _pad(out, k)


def _pad(out: Hits, k: int) -> Hits:
    """``out`` with empty places appended up to ``k`` columns."""
    if out.scores.shape[1] >= k:
        return out
    pad = Hits.empty(out.scores.shape[0], k - out.scores.shape[1])
    return Hits(
        np.concatenate([out.scores, pad.scores], axis=1),
        np.concatenate([out.segments, pad.segments], axis=1),
        np.concatenate([out.rows, pad.rows], axis=1),
    )


def _merge(parts: list[Hits], k: int) -> Hits:
    scores = np.concatenate([p.scores for p in parts], axis=1)
    segments = np.concatenate([p.segments for p in parts], axis=1)
    rows = np.concatenate([p.rows for p in parts], axis=1)
    rows = np.where(np.isfinite(scores), rows, -1)
    best_scores, top = top_k(scores, k)
    out = Hits(
        best_scores,
        np.take_along_axis(segments, top, axis=1),
        np.take_along_axis(rows, top, axis=1),
    )
    out.segments[out.rows < 0] = -1
    return _pad(out, k)
