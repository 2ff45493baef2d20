"""Product quantization: ``m`` sub-vectors x 8 bits, k-means codebooks, asymmetric distances.

A vector is zero-padded to ``m * dsub`` dimensions (``dsub = ceil(dim / m)``), cut into ``m``
sub-vectors, and each sub-vector is replaced by the index of its nearest of 256 centroids
(one byte). Codebooks are learned with FAISS k-means (``faiss.ProductQuantizer.train``, seeded).
Zero padding is exact: the padded coordinates are zero in every vector and every query, so they
add nothing to inner products or distances.

Queries are never quantized (asymmetric distance computation): ``search`` runs FAISS's
``ProductQuantizer.search_ip`` / ``search``, which builds a ``[m, 256]`` lookup table per query
and sums ``m`` table entries per code row, reading our codes through a raw pointer (no copy).
``score`` decodes chunks of rows and multiplies them with all queries at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import faiss
import numpy as np

from langchain_vq.errors import InvalidInputError
from langchain_vq.quantization.base import Metric, Quantizer
from langchain_vq.topk import top_k
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    import numpy.typing as npt

#: Rows decoded to float32 at a time by ``score``.
_CHUNK_ROWS = 16_384
#: Default sub-vector width: ``m = ceil(dim / _DEFAULT_DSUB)`` (96 bytes for 384 dimensions).
_DEFAULT_DSUB = 4


class ProductQuantizer(Quantizer):
    """Product quantization with ``m`` one-byte sub-codes per vector.

    Args (besides ``dim`` and ``metric``, as for :class:`Quantizer`):
        m: Number of sub-vectors, which is also the code size in bytes. Default
            ``ceil(dim / 4)`` (4 dimensions per byte: 96 bytes for 384 dimensions, 16x smaller
            than float32). Fewer bytes lose recall quickly: on all-MiniLM-L6-v2 embeddings
            ``m = dim / 8`` (48 bytes, the size of binary codes) needs about twice the rescoring
            candidates for the same recall (see ``benchmarks/measure_quantizer_defaults.py``).
        nbits: Bits per sub-code; only 8 (256 centroids per sub-space) is supported.
        seed: Seed of the k-means initialization and subsampling, for reproducible codebooks.

    Attributes:
        centroids_: ``float32[m, 256, dsub]`` codebooks (``dsub = ceil(dim / m)``).
    """

    name: ClassVar[str] = "pq"
    learned: ClassVar[tuple[str, ...]] = ("centroids_",)

    # Learned state: absent until fit()/set_state(), as in scikit-learn.
    centroids_: npt.NDArray[np.float32]

    def __init__(
        self,
        dim: int,
        *,
        metric: Metric = "ip",
        m: int | None = None,
        nbits: int = 8,
        seed: int = 1234,
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
        if nbits != 8:
            msg = (
                f"nbits={nbits!r} is not supported; expected 8 (one byte per sub-vector). "
                "Use a larger or smaller m to trade size for recall instead."
            )
            raise InvalidInputError(msg)
        self.nbits = nbits
        self.seed = check_int(seed, "seed", minimum=0)
        self.dsub = math.ceil(dim / self.m)
        self._pq: Any = None  # faiss.ProductQuantizer holding centroids_

    # -- size and training -------------------------------------------------------------------
    @property
    def code_size(self) -> int:
        """``m`` bytes."""
        return self.m

    @property
    def ksub(self) -> int:
        """Centroids per sub-space (``2 ** nbits``)."""
        return 1 << self.nbits

    @property
    def min_train_size(self) -> int:
        """256 vectors: at least one per centroid.

        k-means with 256 centroids needs 256 points to run at all; FAISS prints a warning below
        39 points per centroid (9,984 vectors), which is suppressed here
        (``cp.min_points_per_centroid = 1``). Codebooks trained on fewer than ~10,000 vectors
        are usable but worse; the store should retrain on ``compact`` when more data exists.
        """
        return self.ksub

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
        """Learn ``m`` codebooks of 256 centroids with seeded FAISS k-means.

        FAISS subsamples to 256 points per centroid (65,536 vectors) per sub-space.
        """
        pq = self._new_faiss_pq()
        pq.train(self._pad(x))
        centroids = faiss.vector_to_array(pq.centroids).astype(np.float32)
        self.centroids_ = centroids.reshape(self.m, self.ksub, self.dsub)
        self._pq = pq

    # -- codes -------------------------------------------------------------------------------
    def _encode(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """``uint8[n, m]``: the nearest centroid of each sub-vector."""
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
        """Top ``k`` by asymmetric distance, with FAISS lookup-table kernels (zero-copy codes).

        For ``"l2"`` the scores are negated squared distances.
        """
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
        """Name, dim, metric, ``m``, ``nbits`` and ``seed``."""
        return {**super().get_config(), "m": self.m, "nbits": self.nbits, "seed": self.seed}

    def _state_shape(self, attr: str) -> tuple[int, ...]:  # noqa: ARG002 - one learned array
        return (self.m, self.ksub, self.dsub)

    def _restore(self, arrays: dict[str, npt.NDArray[np.float32]]) -> None:
        """Set the codebooks and the FAISS quantizer that searches with them (no training)."""
        pq = self._new_faiss_pq()
        faiss.copy_array_to_vector(arrays["centroids_"].ravel(), pq.centroids)
        super()._restore(arrays)
        self._pq = pq
