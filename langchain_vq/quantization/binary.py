"""Binary quantization: one centered bit per dimension, ranked by an asymmetric score.

Encoding keeps bit ``j`` of a vector when ``x_j > thresholds_[j]``, where the thresholds are the
per-dimension mean of the training data (centering: sentence embeddings have a nonzero mean, and
plain sign bits waste most of their information on it). Bits are packed with
``np.packbits(..., axis=-1)`` so every row owns ``ceil(dim / 8)`` bytes, also for odd dimensions,
then zero-padded to the next code size that FAISS has a specialized Hamming kernel for (4, 8, 16,
20, 32 or 64 bytes; 384 dimensions: 48 -> 64 bytes). Zero bytes add nothing to a Hamming distance.
Measured at 1M rows, one query, one thread: 48-byte codes 10.1 ms, the same codes padded to 64
bytes 5.4 ms (k=10) / 6.1 ms (k=1280). Padding in the stored codes, rather than in a copy made in
RAM at search time, keeps the Hamming scan zero-copy on the memory-mapped segment. Padding is
on by default only with ``fast_scan=False``: fast scan reads the ``ceil(dim / 8)`` real bytes
into its own layout, so with it (the default) the stored codes stay 48 bytes, which keeps a
float16 store at 0.54 of the raw float32 vectors instead of 0.55.

Codes are ranked by the **asymmetric score**: the float query against the 1-bit reconstruction
``x_hat = low_ + bits * (high_ - low_)``, where ``low_``/``high_`` are the per-dimension means of
the training values below/above the threshold. ``q . x_hat = q . low_ + (q * (high_ - low_)) .
bits`` estimates ``q . x`` far better than the Hamming distance, which throws away the query's
magnitudes. For ``metric="l2"`` it is ``-||q - x_hat||^2``; for nearly equal norms (sentence
embeddings) that orders like the inner product. Two ways to compute it:

* **Two stages** (``fast_scan=False``, and any codes searched once): a **Hamming scan**
  with FAISS (``hammings_knn_hc`` or ``hammings_knn_mc`` through :func:`faiss.knn_hamming`,
  codes passed zero-copy) keeps the ``k * hamming_factor`` rows whose bits are closest to the
  query's, and only those are scored, with one table lookup per code byte (see
  ``_byte_tables``). At 1M rows x 384 dims, one thread, the Hamming stage takes 5.5 ms for 128
  candidates and 8.5 ms for 10,240, whose top 1,280 by the asymmetric score held 99.6% of the
  true top 10.
* **Fast scan** (the default, for a segment's stored codes: ``search(..., reuse=True)``):
  every row is scored in one SIMD pass of FAISS's fast-scan kernel (see ``_fast_scan``), over a
  packed copy of the codes kept in RAM (``ceil(dim / 8)`` bytes per row, 48 MB per million
  384-dim rows). It takes 5-6 ms at 1M rows for any number of candidates, and its top 1,280
  held 99.75% of the true top 10. Store queries at 1M rows, side by side in one process: 1.3x
  faster at ``rescore_multiplier=16`` and 1.7x at 128 than two stages. The default since it won
  side by side at the multiplier that reaches recall@10 0.99 (``benchmarks/measure_fast_scan.py``,
  ``results/fast_scan.json``: search plus float rescoring 4.3x faster on 199k real rows, 1.65x
  at 1M synthetic rows); the price is the RAM copy, on top of the memory-mapped files, and its
  packing on a segment's first search.
  Codes searched once (a filter's subset of rows) take two stages, unless the Hamming stage
  would keep half of them or more: then packing a throwaway copy for the kernel is cheaper
  than the re-rank (at 10k rows and 1,120 candidates, 1.75 against 2.93 ms). Stores saved
  before the option existed reopen with two stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import faiss
import numpy as np

from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization._fast_scan import (
    FastScanCache,
    NibbleFastScan,
    fast_scan_candidates,
    fast_scan_top_k,
    nibble_centroids,
)
from langchain_vq.quantization._ivf import (
    MIN_ROWS_PER_PARTITION,
    ProbedScan,
    choose_nprobe,
    train_partitions,
)
from langchain_vq.quantization._partitions import AUTO, PartitionedQuantizer, check_partition_options
from langchain_vq.quantization.base import Metric, pool_keys, pooled_top_k, split_keys
from langchain_vq.topk import top_k
from langchain_vq.validation import check_flag, check_int, check_k

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from langchain_vq.code_blocks import StoredCodes
    from langchain_vq.quantization._fast_scan import JoinedFastScan
    from langchain_vq.quantization._ivf import IVFFastScan

#: Rows of codes unpacked to float at a time by ``score`` (bounds temporary memory).
_CHUNK_ROWS = 16_384
#: Training rows summed at a time by ``fit`` (bounds its float64 temporaries to ~25 MB at 384 dims).
_FIT_CHUNK_ROWS = 8_192
#: From this many Hamming candidates on, FAISS's counting variant ("mc") beats the heap ("hc").
_MC_MIN_K = 128
#: Most virtual memory one FAISS "mc" call may reserve: it allocates ``k * (bits + 1)`` int64
#: slots per query (168 MB for k=40,960 and 64-byte codes), so 200 calibration queries at once
#: asked for 33 GB and failed with MemoryError. Queries run in blocks below this bound.
_MC_BLOCK_BYTES = 256 << 20
#: Codes searched once take the fast-scan kernel (with ``fast_scan``) when they have at most this
#: many rows per Hamming candidate (``_search_once``).
_ONCE_FAST_SCAN_ROWS_PER_CANDIDATE = 2
#: Code sizes with a specialized FAISS Hamming kernel; other sizes run a generic loop, 2x slower.
_FAST_CODE_SIZES = (4, 8, 16, 20, 32, 64)
#: ``float32[256, 8]``: the bits of each byte value, most significant first (``np.packbits`` order).
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)


class BinaryQuantizer(PartitionedQuantizer):
    """One bit per dimension (``x_j > thresholds_[j]``), 32x smaller than float32.

    Args (besides ``dim`` and ``metric``, as for :class:`Quantizer`):
        hamming_factor: ``search(q, codes, k)`` of codes searched once takes
            ``k * hamming_factor`` Hamming candidates and re-ranks them with the asymmetric score
            (with ``fast_scan``, a segment's stored codes skip this stage: every row gets the
            asymmetric score). Larger is better recall and slower; the Hamming scan costs about the same
            for any factor, the re-rank grows linearly. The default 8 was measured on
            all-MiniLM-L6-v2 sentence embeddings
            (``benchmarks/measure_quantizer_defaults.py``, 49k rows): with float rescoring of
            ``k * 16`` candidates recall@10 is 0.981 / 0.993 / 0.996 / 0.996 for factors
            2 / 4 / 8 / 16, at 0.33 / 0.41 / 0.56 / 0.85 ms per query; 8 is where recall stops
            improving. The asymmetric score itself also tried ``q . (2b - 1)`` and
            ``(q - t) . (2b - 1)``: recall within 0.01 of the reconstruction used here.
        padded: Zero-pad codes to the next size with a fast FAISS Hamming kernel (see the
            module docstring). Default: only for two stages (``fast_scan=False``). Stores
            written before this option existed have unpadded codes.
        fast_scan: Score every row of a segment's stored codes with FAISS's fast-scan kernel
            instead of two stages (see the module docstring): faster at every multiplier, at the
            cost of a RAM copy of the codes per segment. ``False`` keeps search memory to the
            memory-mapped files.
        partitions: The partitioned first stage (``_ivf``). A number N: ``fit`` also trains N
            k-means lists, :meth:`assign` gives each row its list, and stored codes that carry
            their rows' lists (``StoredCodes.lists``) are scanned only in the ``nprobe`` lists
            that score best against the query, with the same fast-scan kernel and scores (needs
            ``fast_scan`` and ``N * 39`` training rows). 0: never; every code is scanned.
            ``"auto"`` (the default, also None): no lists of its own, but a store gives it
            lists once its live rows reach ``_partitions.AUTO_PARTITION_ROWS``
            (:meth:`with_partitions`; why that size: ``benchmarks/measure_auto_partitions.py``).
            With ``fast_scan=False`` "auto" never partitions.
        nprobe: Lists scanned per query with ``partitions``; more is better recall and slower.
            Default: chosen by ``fit``, the fewest lists holding 99.7% of sampled training
            rows' exact top 10 (``_ivf.choose_nprobe``), then saved with the config.

    Attributes:
        thresholds_: ``float32[dim]``, per-dimension mean of the training data.
        low_: ``float32[dim]``, mean of the training values at or below the threshold.
        high_: ``float32[dim]``, mean of the training values above the threshold.
        partition_centroids_: ``float32[partitions, dim]``, the lists' k-means centroids (only
            with ``partitions``; saved with the rest of the state).
    """

    name: ClassVar[str] = "binary"
    legacy_config: ClassVar[dict[str, Any]] = {"padded": False, "fast_scan": False}
    learned: ClassVar[tuple[str, ...]] = ("thresholds_", "low_", "high_")

    # Learned state: absent until fit()/set_state(), as in scikit-learn.
    thresholds_: npt.NDArray[np.float32]
    low_: npt.NDArray[np.float32]
    high_: npt.NDArray[np.float32]
    partition_centroids_: npt.NDArray[np.float32]

    def __init__(
        self,
        dim: int,
        *,
        metric: Metric = "ip",
        hamming_factor: int = 8,
        padded: bool | None = None,
        fast_scan: bool = True,
        partitions: int | str | None = AUTO,
        nprobe: int | None = None,
    ) -> None:
        """Store the parameters (see the class docstring); ``fit`` learns the state."""
        super().__init__(dim, metric=metric)
        self.hamming_factor = check_int(
            hamming_factor,
            "hamming_factor",
            fix="Use 1 for Hamming-only ranking, or 4-8 for an asymmetric re-rank.",
        )
        self.fast_scan = check_flag(fast_scan, "fast_scan")
        self.padded = not self.fast_scan if padded is None else check_flag(padded, "padded")
        self._fast_scans: FastScanCache[NibbleFastScan] = FastScanCache()  # see search(reuse=True)
        self._ivf_scans: FastScanCache[IVFFastScan] = FastScanCache()  # codes with lists
        self.partitions, self.nprobe, self.auto_partitions = check_partition_options(partitions, nprobe)
        self._choose_nprobe = nprobe is None  # chosen by fit
        if self.partitions and not self.fast_scan:
            msg = (
                f"partitions={self.partitions} needs fast_scan=True (the partitioned scan is the "
                "fast-scan kernel over a few lists); got fast_scan=False. Drop one of the two."
            )
            raise InvalidInputError(msg)

    # -- size and training -------------------------------------------------------------------
    @property
    def code_size(self) -> int:
        """``ceil(dim / 8)`` bytes, padded to the next fast size when ``padded`` (48 -> 64)."""
        if not self.padded:
            return self.bit_bytes
        return next((size for size in _FAST_CODE_SIZES if size >= self.bit_bytes), self.bit_bytes)

    @property
    def bit_bytes(self) -> int:
        """``ceil(dim / 8)``: the bytes that hold bits; any further bytes of a code are zero."""
        return (self.dim + 7) // 8

    @property
    def min_train_size(self) -> int:
        """64 vectors, or 39 per list with ``partitions``.

        The state is three per-dimension means; with 64 samples the standard error of a mean is
        an eighth of that dimension's spread, well below the spread that decides the bits.
        k-means lists need points to settle (FAISS warns below 39 per centroid): until a store
        has that many rows it searches exactly.
        """
        return max(64, self.partitions * MIN_ROWS_PER_PARTITION)

    @property
    def is_fitted(self) -> bool:
        """Whether the bit levels (and, with ``partitions``, the lists' centroids) are learned."""
        return super().is_fitted and (not self.partitions or hasattr(self, "partition_centroids_"))

    def _fit(self, x: npt.NDArray[np.float32]) -> None:
        """Learn thresholds (per-dimension mean) and the two reconstruction levels per dimension."""
        n = x.shape[0]
        # Sums in float64, a block of rows at a time: a float64 copy of 100k training rows
        # (and its masked twin) held 600 MB at once.
        total = np.zeros(self.dim, np.float64)
        for start in range(0, n, _FIT_CHUNK_ROWS):
            total += x[start : start + _FIT_CHUNK_ROWS].sum(axis=0, dtype=np.float64)
        thresholds = total / n
        n_above = np.zeros(self.dim, np.int64)
        sum_above = np.zeros(self.dim, np.float64)
        for start in range(0, n, _FIT_CHUNK_ROWS):
            chunk = x[start : start + _FIT_CHUNK_ROWS]
            above = chunk > thresholds  # compared in float64
            n_above += above.sum(axis=0)
            sum_above += np.where(above, chunk, 0.0).sum(axis=0, dtype=np.float64)
        n_below = n - n_above
        sum_below = total - sum_above
        # A dimension with no values on one side (constant data) reconstructs as the threshold.
        high = np.where(n_above > 0, sum_above / np.maximum(n_above, 1), thresholds)
        low = np.where(n_below > 0, sum_below / np.maximum(n_below, 1), thresholds)
        self.thresholds_ = thresholds.astype(np.float32)
        self.low_ = low.astype(np.float32)
        self.high_ = high.astype(np.float32)
        if self.partitions:
            self.partition_centroids_ = train_partitions(x, self.partitions, self.metric)
            if self._choose_nprobe:
                self.nprobe = choose_nprobe(x, self.partition_centroids_, self.metric)
        self._fast_scans.clear()  # built from the old levels
        self._ivf_scans.clear()

    # -- codes -------------------------------------------------------------------------------
    def _encode(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """Packed bits ``uint8[n, code_size]`` (big-endian bit order, zero padding)."""
        bits = x > self.thresholds_  # [n, dim] bool
        packed = np.packbits(bits, axis=-1)  # [n, bit_bytes]; axis=-1 keeps rows independent
        if self.code_size == self.bit_bytes:
            return packed
        codes = np.zeros((x.shape[0], self.code_size), dtype=np.uint8)  # [n, code_size]
        codes[:, : self.bit_bytes] = packed
        return codes

    def _decode(self, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Reconstruct ``low_[j]`` or ``high_[j]`` per bit: the mean of the training values on that side."""
        bits = self._unpack(codes)  # [n, dim] float32 in {0, 1}
        return self.low_ + bits * (self.high_ - self.low_)

    def _unpack(self, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return np.unpackbits(codes, axis=-1, count=self.dim).astype(np.float32)

    # -- ranking -----------------------------------------------------------------------------
    def _byte_tables(
        self, queries: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-query lookup tables so that ``score = sum_b table[b, code[b]] + offset``.

        ``table[b, v]`` is the query's weight summed over the set bits of byte value ``v`` at
        byte ``b``: ``float32[n_queries, bit_bytes * 256]`` (flattened), and the offsets
        ``float32[n_queries]``. Building it costs ``bit_bytes * 256 * 8`` multiply-adds per
        query; re-ranking 10,240 candidates with it took 1.2 ms here, against 5 ms for
        unpacking their bits to floats.
        """
        weights, offsets = self._query_terms(queries)
        nq = weights.shape[0]
        padded = np.zeros((nq, self.bit_bytes * 8), dtype=np.float32)  # padding bits weigh 0
        padded[:, : self.dim] = weights
        tables = padded.reshape(nq, self.bit_bytes, 8) @ _BYTE_BITS.T  # [nq, bit_bytes, 256]
        return tables.reshape(nq, -1), offsets

    def _query_terms(
        self, queries: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-query weights ``w`` and offsets ``o`` so that ``score = bits @ w + o`` (+ norm term)."""
        step = self.high_ - self.low_  # [dim]
        if self.metric == "ip":
            weights = queries * step  # [nq, dim]
            offsets = queries @ self.low_  # [nq]
        else:
            # -||q - x_hat||^2 with x_hat = low + b * step; b in {0, 1} so b^2 = b:
            # = -||q - low||^2 + sum_j b_j * (2 (q_j - low_j) step_j - step_j^2)
            diff = queries - self.low_
            weights = 2.0 * diff * step - step * step
            offsets = -np.einsum("ij,ij->i", diff, diff)
        return weights.astype(np.float32), offsets.astype(np.float32)

    def _score(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.float32]:
        """Asymmetric scores ``[n_queries, n]``: float queries against the 1-bit reconstruction."""
        weights, offsets = self._query_terms(queries)
        out = np.empty((queries.shape[0], codes.shape[0]), dtype=np.float32)
        for start in range(0, codes.shape[0], _CHUNK_ROWS):
            bits = self._unpack(codes[start : start + _CHUNK_ROWS])  # [chunk, dim]
            out[:, start : start + bits.shape[0]] = weights @ bits.T
        out += offsets[:, None]
        return out

    def hamming_search(
        self,
        queries: npt.NDArray[np.float32],
        codes: npt.NDArray[np.uint8],
        k: int,
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """Top ``k`` rows by Hamming distance to the query's bits (stage 1 of ``search``).

        Returns:
            ``(distances, indices)``, each ``[n_queries, min(k, n)]``, nearest first.
        """
        queries, codes = self._checked(queries, codes)
        return self._hamming(queries, codes, min(check_k(k), codes.shape[0]))

    def _hamming(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8], k: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        return self._hamming_codes(self._encode(queries), codes, k)

    @staticmethod
    def _hamming_codes(
        qcodes: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8], k: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """FAISS Hamming top ``k`` of ``codes`` for already encoded queries."""
        nq = qcodes.shape[0]
        if nq == 0 or k == 0:
            return np.empty((nq, k), np.int32), np.empty((nq, k), np.int64)
        # Both variants read `codes` through a raw pointer (no copy); "mc" is faster for large k.
        if k < _MC_MIN_K:
            return faiss.knn_hamming(qcodes, codes, k, "hc")
        block = max(1, _MC_BLOCK_BYTES // (k * (8 * codes.shape[1] + 1) * 8))
        parts = [faiss.knn_hamming(qcodes[s : s + block], codes, k, "mc") for s in range(0, nq, block)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_stored(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Every row scored by the fast-scan kernel when ``fast_scan``, else two stages.

        The kernel runs on a packed copy of ``codes`` built on the first call and kept while
        ``codes`` lives.
        """
        if not self.fast_scan:
            return self._search(queries, codes.row_major, k)
        if self.partitions and codes.lists is not None:
            scores, rows = self._partitioned(queries, codes, k)
            return top_k(scores, k, rows)
        index = self._fast_scans.get(codes, self._build_fast_scan)
        return fast_scan_top_k(index, queries, k, lambda: self._search(queries, codes.row_major, k))

    def _search_once(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Two stages; with ``fast_scan``, the kernel on a packed copy if Hamming would keep many rows.

        Packing costs about 0.1 us per row and re-ranking a Hamming candidate about 0.25 us, so
        once the Hamming stage keeps half of the rows or more, packing them all is cheaper: 10k
        rows and 1,120 candidates, 1.75 against 2.93 ms; even at 2.6 rows per candidate
        (``benchmarks/measure_subset_scan.py``, ``results/subset_scan.json``).
        """
        if self.fast_scan and codes.shape[0] <= _ONCE_FAST_SCAN_ROWS_PER_CANDIDATE * k * self.hamming_factor:
            index = self._build_fast_scan(codes)
            return fast_scan_top_k(index, queries, k, lambda: self._search(queries, codes.row_major, k))
        return self._search(queries, codes.row_major, k)

    def _stored_candidates(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``_search_stored``'s rows in the kernel's order (``search_many`` re-ranks the pool)."""
        if not self.fast_scan:
            return self._search(queries, codes.row_major, k)
        if self.partitions and codes.lists is not None:
            return self._partitioned(queries, codes, k)
        index = self._fast_scans.get(codes, self._build_fast_scan)
        return fast_scan_candidates(index, queries, k, lambda: self._search(queries, codes.row_major, k))

    def _partitioned(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Candidates from the ``nprobe`` best lists, in the kernel's order.

        A query whose lists hold fewer than ``k`` rows is scanned again over every list (the
        full pass, same kernel; the other queries of the batch keep their lists); if even that
        leaves places empty (ties near ``k = n``), the two-stage exact path scores every row.
        Small ``k`` fetch more and cut by score, then row, as the full scan does
        (``fast_scan_candidates``), so one segment and the same rows in several agree on ties.
        """
        index = ProbedScan(self._ivf_scans.get(codes, self._build_ivf), self._nprobe_now())
        return fast_scan_candidates(index, queries, k, lambda: self._search(queries, codes.row_major, k))

    def _search(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows by the asymmetric score, in two stages.

        The Hamming top ``k * hamming_factor`` is re-ranked with exact lookup tables.
        """
        nq = queries.shape[0]
        _, cand = self._hamming(queries, codes, min(codes.shape[0], k * self.hamming_factor))  # [nq, kh]
        tables, offsets = self._byte_tables(queries)  # [nq, bit_bytes * 256], [nq]
        byte_offsets = np.arange(self.bit_bytes, dtype=np.intp) * 256  # [bit_bytes]
        cand_scores = np.empty(cand.shape, dtype=np.float32)
        for qi in range(nq):
            # Table lookups: one per code byte, instead of unpacking every bit to a float.
            lookup = codes[cand[qi], : self.bit_bytes].astype(np.intp) + byte_offsets  # [kh, bit_bytes]
            cand_scores[qi] = tables[qi][lookup].sum(axis=1)
        cand_scores += offsets[:, None]
        return top_k(cand_scores, k, cand)

    def _search_many(
        self,
        queries: npt.NDArray[np.float32],
        arrays: list[StoredCodes],
        k: int,
        masks: list[npt.NDArray[np.bool_] | None],
        *,
        joined: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Two stages across arrays: one pooled Hamming top ``k * hamming_factor``, one re-rank.

        Hamming distances compare across arrays, so the candidates are the ones a single array
        of all the rows would give, and the query is encoded and its byte tables built once
        (per array, these cost a store of ten segments ten re-ranks). Fast scan scores every
        row already: its arrays are searched in one joined index (``joined``) or one by one.
        """
        if self.fast_scan:
            return super()._search_many(queries, arrays, k, masks, joined=joined)
        qcodes = self._encode(queries)
        n_hamming = k * self.hamming_factor
        distances, keys, searched = [], [], []
        for index, (stored, mask) in enumerate(zip(arrays, masks, strict=True)):
            codes = stored.row_major
            hidden = 0 if mask is None else mask.size - int(np.count_nonzero(mask))
            fetch = min(n_hamming + hidden, codes.shape[0])
            if fetch == 0:
                continue
            dist, rows = self._hamming_codes(qcodes, codes, fetch)  # [nq, fetch]
            score = -dist.astype(np.float32)  # higher is better
            if mask is not None:
                score[~mask[rows]] = -np.inf
            distances.append(score)
            keys.append(pool_keys(index, rows))
            searched.append((codes, rows))
        if len(distances) == 1:  # one array: its Hamming top is the candidate set
            hamming, cand_keys = distances[0], keys[0]
            cand_codes = searched[0][0][searched[0][1], : self.bit_bytes]  # [nq, kh, bit_bytes]
        else:
            hamming, cand_keys = np.concatenate(distances, axis=1), np.concatenate(keys, axis=1)
            cand_codes = None
        if hamming.shape[1] > n_hamming:  # the pooled Hamming top: a set, its order is not needed
            top = np.argpartition(-hamming, n_hamming - 1, axis=1)[:, :n_hamming]
            hamming = np.take_along_axis(hamming, top, axis=1)
            cand_keys = np.take_along_axis(cand_keys, top, axis=1)
            cand_codes = None
        if cand_codes is None:  # gather the chosen rows' codes, array by array
            cand_arrays, cand_rows = split_keys(cand_keys)
            cand_codes = np.zeros((*cand_keys.shape, self.bit_bytes), dtype=np.uint8)
            for index in np.unique(cand_arrays).tolist():
                where = cand_arrays == index
                cand_codes[where] = arrays[index].row_major[cand_rows[where], : self.bit_bytes]
        tables, offsets = self._byte_tables(queries)  # [nq, bit_bytes * 256], [nq]
        lookup = cand_codes.astype(np.intp) + np.arange(self.bit_bytes, dtype=np.intp) * 256
        scores = np.empty(hamming.shape, dtype=np.float32)
        for qi in range(queries.shape[0]):
            scores[qi] = tables[qi][lookup[qi]].sum(axis=1)  # one table lookup per code byte
        scores += offsets[:, None]
        scores[~np.isfinite(hamming)] = -np.inf
        return pooled_top_k(scores, cand_keys, k)

    @property
    def ranks_candidates_by_one_score(self) -> bool:
        """Fast scan, with or without lists: one score per row, ties by row, a prefix at every count.

        Two stages re-rank a Hamming top that grows with ``n``. The partitioned scan orders ties
        by row as the full scan does (``_ivf.probe``); its prefixes reach as far as a query's
        lists hold rows (:meth:`ranked_candidates`).
        """
        return self.fast_scan

    @property
    def can_partition(self) -> bool:
        """With ``fast_scan``: the partitioned scan is the fast-scan kernel over a few lists."""
        return self.fast_scan

    @property
    def blocked_codes(self) -> bool:
        """With ``fast_scan`` and unpadded codes: segments keep them in the kernel's layout."""
        return self.fast_scan and self.code_size == self.bit_bytes

    def _build_fast_scan(self, codes: StoredCodes | Sequence[StoredCodes]) -> NibbleFastScan:
        return NibbleFastScan(codes, self.low_, self.high_, self.metric)

    def _joined_fast_scan(self, arrays: list[StoredCodes]) -> JoinedFastScan | None:
        """The joined full scan, or with ``partitions`` the joined partitioned scan of arrays with lists."""
        if not self.fast_scan:
            return None
        if self.partitions and any(a.lists is not None for a in arrays):
            return self._joined_partitioned(arrays)
        return self._fast_scans.get_joined(arrays, self._build_fast_scan)

    def _fine_codebooks(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp] | None]:
        """The corners of each nibble's 4 bits, in the nibbles' dimension order."""
        order, fine = nibble_centroids(self.low_, self.high_)
        return fine, order

    # -- state -------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Name, dim, metric, ``hamming_factor``, ``padded``, ``fast_scan``, ``partitions``, ``nprobe``."""
        return {
            **super().get_config(),
            "hamming_factor": self.hamming_factor,
            "padded": self.padded,
            "fast_scan": self.fast_scan,
            "partitions": AUTO if self.auto_partitions else self.partitions,
            "nprobe": self.nprobe,
        }

    def _restore(self, arrays: dict[str, npt.NDArray[np.float32]]) -> None:
        super()._restore(arrays)
        self._fast_scans.clear()  # built from the old levels
        self._ivf_scans.clear()
