"""Product quantization: ``m`` sub-vectors x 8 or 4 bits, k-means codebooks, asymmetric distances.

A vector is zero-padded to ``m * dsub`` dimensions (``dsub = ceil(dim / m)``), cut into ``m``
sub-vectors, and each sub-vector is replaced by the index of its nearest of ``2 ** nbits``
centroids (one byte, or one nibble with ``nbits=4``: FAISS's 4-bit PQ code layout). Codebooks
are learned with FAISS k-means (``faiss.ProductQuantizer.train``, seeded).
Zero padding is exact: the padded coordinates are zero in every vector and every query, so they
add nothing to inner products or distances.

Queries are never quantized (asymmetric distance computation): at 8 bits ``search`` runs FAISS's
``ProductQuantizer.search_ip`` / ``search``, which builds a ``[m, 256]`` lookup table per query
and sums ``m`` table entries per code row, reading our codes through a raw pointer (no copy).
``score`` decodes chunks of rows and multiplies them with all queries at once.

**4-bit codes** (``nbits=4``) are scanned with FAISS's SIMD fast-scan kernel
(``IndexPQFastScan``: the ``[m, 16]`` lookup table sits in registers, 32 rows per block), over a
copy of the codes packed into that block layout (as many bytes as the codes: ``ceil(m / 2)`` per
row). A segment's stored codes (``search(..., reuse=True)``) are packed once and the copy is
kept while the code array lives (:class:`~langchain_vq.quantization._fast_scan.FastScanCache`);
codes searched once (a filter's subset of rows) are packed for that call, which costs about
0.1 us per row, far less than FAISS's generic 4-bit scan costs (about 60x the fast scan at 200k
rows in a side measurement).
FAISS rounds each query's lookup tables to 8 bits, so fast-scan scores are estimates; the engine
rescores the candidates with the float vectors. The codes stay FAISS's standard 4-bit PQ codes,
one row per code, in the store's codes column.

**Partitions** (``partitions > 0``, or a store's "auto" lists once it is large; 4-bit codes
only): ``fit`` (or ``with_partitions``) trains k-means lists, each
row's list is stored beside its code, and a segment's stored codes are scanned only in the
``nprobe`` lists that score best against the query (``_ivf.IVFFastScan``, FAISS's
``IndexIVFPQFastScan`` over the same codebooks, so scores equal the full fast scan's). A full
pass over 1M 48-byte codes costs 5-6 ms on one thread, about 16x ``IndexFlatIP`` at best; the
lists cut the rows scanned. The same option as ``BinaryQuantizer(partitions=...)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import faiss
import numpy as np

from langchain_vq.code_blocks import StoredCodes
from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization._fast_scan import (
    FastScanCache,
    FastScanIndex,
    PQFastScan,
    fast_scan_candidates,
    fast_scan_top_k,
)
from langchain_vq.quantization._ivf import (
    MIN_ROWS_PER_PARTITION,
    IVFFastScan,
    ProbedScan,
    choose_nprobe,
    train_partitions,
)
from langchain_vq.quantization._partitions import AUTO, PartitionedQuantizer, check_partition_options
from langchain_vq.topk import top_k
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from langchain_vq.quantization._fast_scan import JoinedFastScan
    from langchain_vq.quantization.base import Metric

#: Rows decoded to float32 at a time by ``score``.
_CHUNK_ROWS = 16_384
#: Default sub-vector width: ``m = ceil(dim / _DEFAULT_DSUB)`` (96 sub-vectors for 384 dimensions).
_DEFAULT_DSUB = 4
#: Bits per sub-code that have a kernel: 8 (``ProductQuantizer.search_ip``) and 4 (fast scan).
_SUPPORTED_NBITS = (4, 8)


class ProductQuantizer(PartitionedQuantizer):
    """Product quantization with ``m`` sub-codes of ``nbits`` bits per vector.

    Args (besides ``dim`` and ``metric``, as for :class:`Quantizer`):
        m: Number of sub-vectors; the code size is ``ceil(m * nbits / 8)`` bytes. Default
            ``ceil(dim / 4)`` (4 dimensions per sub-vector: 48 bytes for 384 dimensions at 4 bits,
            96 at 8 bits). At 8 bits, fewer bytes lose recall quickly: on all-MiniLM-L6-v2
            embeddings ``m = dim / 8`` needs about twice the rescoring candidates for the same
            recall (see ``benchmarks/measure_quantizer_defaults.py``).
        nbits: Bits per sub-code: 4 (the default: 16 centroids, scanned with FAISS's SIMD
            fast-scan kernel over a RAM copy of the codes in its block layout; see the module
            docstring) or 8 (256 centroids, scanned in place with lookup tables in memory).
            Measured side by side at recall@10 0.99 after float rescoring
            (``benchmarks/measure_fast_scan.py``, ``results/fast_scan.json``): 4 bits needs
            4-8x the candidates of 8 bits, yet search plus rescoring is 10-17x faster (real
            199k rows: 1.4 against 23.8 ms; synthetic 1M: 13.7 against 209 ms on a loaded
            machine), and training is 10x faster. Stores saved with 8-bit codes keep them.
        seed: Seed of the k-means initialization and subsampling, for reproducible codebooks.
        partitions: The partitioned first stage (see the module docstring). A number N:
            ``fit`` also trains N k-means lists, :meth:`assign` gives each row its list, and
            stored codes that carry their rows' lists (``StoredCodes.lists``) are scanned only
            in the ``nprobe`` best lists (needs ``nbits=4`` and ``N * 39`` training rows; about
            ``sqrt(rows)``: 1024 for 1M rows). 0: never. ``"auto"`` (the default, also None): no
            lists of its own, but a store gives it lists once its live rows reach
            ``_partitions.AUTO_PARTITION_ROWS`` (:meth:`with_partitions`); at 8 bits "auto"
            never partitions.
        nprobe: Lists scanned per query with ``partitions``; more is better recall and slower.
            Default: chosen by ``fit``, the fewest lists holding 99.7% of sampled training
            rows' exact top 10 (``_ivf.choose_nprobe``), then saved with the config.

    Attributes:
        centroids_: ``float32[m, 2 ** nbits, dsub]`` codebooks (``dsub = ceil(dim / m)``).
        partition_centroids_: ``float32[partitions, dim]``, the lists' k-means centroids (only
            with ``partitions``; saved with the rest of the state).
    """

    name: ClassVar[str] = "pq"
    legacy_config: ClassVar[dict[str, Any]] = {"nbits": 8}
    learned: ClassVar[tuple[str, ...]] = ("centroids_",)

    # Learned state: absent until fit()/set_state(), as in scikit-learn.
    centroids_: npt.NDArray[np.float32]
    partition_centroids_: npt.NDArray[np.float32]

    def __init__(
        self,
        dim: int,
        *,
        metric: Metric = "ip",
        m: int | None = None,
        nbits: int = 4,
        seed: int = 1234,
        partitions: int | str | None = AUTO,
        nprobe: int | None = None,
    ) -> None:
        """Store the parameters (see the class docstring); ``fit`` learns the codebooks."""
        super().__init__(dim, metric=metric)
        if m is None:
            m = math.ceil(dim / _DEFAULT_DSUB)
        self.m = check_int(
            m,
            "m (number of PQ sub-vectors)",
            maximum=dim,
            fix=f"Use m=None for the default ceil(dim / {_DEFAULT_DSUB}).",
        )
        if (
            isinstance(nbits, bool)
            or not isinstance(nbits, (int, np.integer))
            or nbits not in _SUPPORTED_NBITS
        ):
            msg = (
                f"nbits={nbits!r} is not supported; expected 8 (one byte per sub-vector) or 4 "
                "(half a byte, scanned with FAISS fast scan). Use a larger or smaller m to trade "
                "size for recall instead."
            )
            raise InvalidInputError(msg)
        self.nbits = int(nbits)
        self.seed = check_int(seed, "seed", minimum=0)
        self.dsub = math.ceil(dim / self.m)
        self._pq: Any = None  # faiss.ProductQuantizer holding centroids_
        self._fast_scans: FastScanCache[PQFastScan] = FastScanCache()  # 4-bit, see search(reuse=True)
        self._ivf_scans: FastScanCache[IVFFastScan] = FastScanCache()  # codes with lists
        self.partitions, self.nprobe, self.auto_partitions = check_partition_options(partitions, nprobe)
        self._choose_nprobe = nprobe is None
        if self.partitions and self.nbits != 4:
            msg = (
                f"partitions={self.partitions} needs nbits=4 (the partitioned scan is the 4-bit "
                f"fast-scan kernel over a few lists); got nbits={self.nbits}. Use nbits=4 or "
                "partitions=0."
            )
            raise InvalidInputError(msg)

    # -- size and training -------------------------------------------------------------------
    @property
    def code_size(self) -> int:
        """``ceil(m * nbits / 8)`` bytes: ``m`` at 8 bits, ``ceil(m / 2)`` at 4 bits."""
        return (self.m * self.nbits + 7) // 8

    @property
    def ksub(self) -> int:
        """Centroids per sub-space (``2 ** nbits``)."""
        return 1 << self.nbits

    @property
    def min_train_size(self) -> int:
        """``2 ** nbits`` vectors (256 at 8 bits, 16 at 4 bits): at least one per centroid.

        k-means with 256 centroids needs 256 points to run at all; FAISS prints a warning below
        39 points per centroid (9,984 vectors at 8 bits), which is suppressed here
        (``cp.min_points_per_centroid = 1``). Codebooks trained on fewer than ~10,000 vectors
        are usable but worse; the store should retrain on ``compact`` when more data exists.
        """
        return max(self.ksub, self.partitions * MIN_ROWS_PER_PARTITION)

    @property
    def is_fitted(self) -> bool:
        """Whether the codebooks (and, with ``partitions``, the lists' centroids) are learned."""
        return super().is_fitted and (not self.partitions or hasattr(self, "partition_centroids_"))

    def _new_faiss_pq(self) -> Any:
        pq = faiss.ProductQuantizer(self.m * self.dsub, self.m, self.nbits)
        pq.verbose = False
        pq.cp.seed = self.seed
        pq.cp.verbose = False
        pq.cp.min_points_per_centroid = 1  # silence the "please provide at least" warning
        return pq

    def _pad(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Zero-pad ``[n, dim]`` to ``[n, m * dsub]`` (no copy when already a multiple)."""
        extra = self.m * self.dsub - self.dim
        if extra == 0:
            return x
        out = np.zeros((x.shape[0], self.dim + extra), dtype=np.float32)
        out[:, : self.dim] = x
        return out

    def _fit(self, x: npt.NDArray[np.float32]) -> None:
        """Learn ``m`` codebooks of ``2 ** nbits`` centroids with seeded FAISS k-means.

        FAISS subsamples to 256 points per centroid (65,536 vectors at 8 bits, 4,096 at 4 bits)
        per sub-space.
        """
        pq = self._new_faiss_pq()
        pq.train(self._pad(x))
        centroids = faiss.vector_to_array(pq.centroids).astype(np.float32)
        self.centroids_ = centroids.reshape(self.m, self.ksub, self.dsub)
        self._pq = pq
        if self.partitions:
            self.partition_centroids_ = train_partitions(x, self.partitions, self.metric)
            if self._choose_nprobe:
                self.nprobe = choose_nprobe(x, self.partition_centroids_, self.metric)
        self._fast_scans.clear()  # packed for the old codebooks
        self._ivf_scans.clear()

    # -- codes -------------------------------------------------------------------------------
    def _encode(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """``uint8[n, code_size]``: the nearest centroid of each sub-vector (FAISS's code layout)."""
        if x.shape[0] == 0:
            return np.empty((0, self.code_size), np.uint8)
        return self._pq.compute_codes(self._pad(x))

    def _decode(self, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Concatenate the centroids named by ``codes``: ``float32[n, dim]``."""
        if codes.shape[0] == 0:
            return np.empty((0, self.dim), np.float32)
        return np.ascontiguousarray(self._pq.decode(codes)[:, : self.dim])

    # -- ranking -----------------------------------------------------------------------------
    def _score(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.float32]:
        """Asymmetric similarities ``[n_queries, n]`` of float queries to the decoded rows."""
        out = np.empty((queries.shape[0], codes.shape[0]), dtype=np.float32)
        q_norm2 = np.einsum("ij,ij->i", queries, queries)  # [nq]
        for start in range(0, codes.shape[0], _CHUNK_ROWS):
            x_hat = self._decode(codes[start : start + _CHUNK_ROWS])  # [c, dim]
            block = out[:, start : start + x_hat.shape[0]]
            np.matmul(queries, x_hat.T, out=block)
            if self.metric == "l2":
                x_norm2 = np.einsum("ij,ij->i", x_hat, x_hat)  # [c]
                block *= 2.0
                block -= x_norm2[None, :]
                block -= q_norm2[:, None]
        return out

    def _search(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` by asymmetric distance: lookup tables (8 bits) or a one-off fast scan (4 bits).

        For ``"l2"`` the scores are negated squared distances.
        """
        if self.nbits == 4:
            index: FastScanIndex = PQFastScan(self.centroids_, StoredCodes(codes), self.metric)
            return fast_scan_top_k(index, queries, k, lambda: self._search_tables(queries, codes, k))
        return self._search_tables(queries, codes, k)

    def _search_stored(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """4 bits: fast scan of a packed copy of ``codes`` built once and kept while they live.

        Codes that carry their rows' lists (with ``partitions``) are scanned in the ``nprobe``
        best lists only.
        """
        if self.nbits != 4:
            return self._search_tables(queries, codes.row_major, k)
        if self.partitions and codes.lists is not None:
            scores, rows = self._partitioned(queries, codes, k)
            return top_k(scores, k, rows)
        index = self._fast_scans.get(codes, self._build_fast_scan)
        return fast_scan_top_k(index, queries, k, lambda: self._search_tables(queries, codes.row_major, k))

    @property
    def ranks_candidates_by_one_score(self) -> bool:
        """One score per row, ties by row: a prefix at every count, with lists too.

        The partitioned scan orders ties by row as the full scan does (``_ivf.probe``); its
        prefixes reach as far as a query's lists hold rows (:meth:`ranked_candidates`).
        """
        return True

    @property
    def can_partition(self) -> bool:
        """4 bits: the partitioned scan is the 4-bit fast-scan kernel over a few lists."""
        return self.nbits == 4

    @property
    def blocked_codes(self) -> bool:
        """4 bits: segments keep their codes in the fast-scan kernel's layout."""
        return self.nbits == 4

    def _stored_candidates(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``_search_stored``'s rows in the kernel's order (``search_many`` re-ranks the pool)."""
        if self.nbits != 4:
            return self._search_tables(queries, codes.row_major, k)
        if self.partitions and codes.lists is not None:
            return self._partitioned(queries, codes, k)
        index = self._fast_scans.get(codes, self._build_fast_scan)
        return fast_scan_candidates(
            index, queries, k, lambda: self._search_tables(queries, codes.row_major, k)
        )

    def _build_fast_scan(self, codes: StoredCodes | Sequence[StoredCodes]) -> PQFastScan:
        return PQFastScan(self.centroids_, codes, self.metric)

    def _joined_fast_scan(self, arrays: list[StoredCodes]) -> JoinedFastScan | None:
        """The joined full scan, or with ``partitions`` the joined partitioned scan of arrays with lists."""
        if self.nbits != 4:
            return None
        if self.partitions and any(a.lists is not None for a in arrays):
            return self._joined_partitioned(arrays)
        return self._fast_scans.get_joined(arrays, self._build_fast_scan)

    def _fine_codebooks(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp] | None]:
        """The learned 4-bit codebooks, in the stored codes' sub-code order."""
        return self.centroids_, None

    def _partitioned(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Candidates from the ``nprobe`` best lists, in the kernel's order (as ``BinaryQuantizer``'s).

        Short queries get every list (``_ivf.ProbedScan``); places still empty fall back to the
        exact tables, and small ``k`` fetch more and cut by score, then row (``fast_scan_candidates``).
        """
        index = ProbedScan(self._ivf_scans.get(codes, self._build_ivf), self._nprobe_now())
        return fast_scan_candidates(
            index, queries, k, lambda: self._search_tables(queries, codes.row_major, k)
        )

    def _search_tables(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Exact asymmetric top ``k`` with FAISS lookup-table kernels (zero-copy codes)."""
        n, nq, k_out = codes.shape[0], queries.shape[0], k
        q = np.ascontiguousarray(self._pad(queries))
        dist = np.empty((nq, k_out), np.float32)
        labels = np.empty((nq, k_out), np.int64)
        is_ip = self.metric == "ip"
        heap = faiss.float_minheap_array_t() if is_ip else faiss.float_maxheap_array_t()
        heap.nh, heap.k = nq, k_out
        heap.val, heap.ids = faiss.swig_ptr(dist), faiss.swig_ptr(labels)
        run = self._pq.search_ip if is_ip else self._pq.search
        init_finalize_heap = True  # initialize the heap, then sort the results best first
        run(faiss.swig_ptr(q), nq, faiss.swig_ptr(codes), n, heap, init_finalize_heap)
        scores = dist if is_ip else -dist
        return top_k(scores, k_out, labels)  # ties ordered by row, like the other quantizers

    # -- state -------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Name, dim, metric, ``m``, ``nbits``, ``seed``, ``partitions`` and ``nprobe``."""
        return {
            **super().get_config(),
            "m": self.m,
            "nbits": self.nbits,
            "seed": self.seed,
            "partitions": AUTO if self.auto_partitions else self.partitions,
            "nprobe": self.nprobe,
        }

    def _state_shape(self, attr: str) -> tuple[int, ...]:  # noqa: ARG002 - one learned array
        return (self.m, self.ksub, self.dsub)

    def _restore(self, arrays: dict[str, npt.NDArray[np.float32]]) -> None:
        """Set the codebooks and the FAISS quantizer that searches with them (no training)."""
        pq = self._new_faiss_pq()
        faiss.copy_array_to_vector(arrays["centroids_"].ravel(), pq.centroids)
        super()._restore(arrays)
        self._pq = pq
        self._fast_scans.clear()  # packed for the old codebooks
        self._ivf_scans.clear()
