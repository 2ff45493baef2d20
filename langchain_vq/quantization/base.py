"""The protocol every quantizer follows.

Quantizers follow scikit-learn's estimator rules: ``__init__`` only stores parameters, ``fit``
learns state (attributes ending in ``_``) and returns ``self``, and using an unfitted quantizer
raises :class:`~langchain_vq.errors.NotFittedError`. Codes are always ``uint8[n, code_size]``.

Scores are *similarities*: higher is better. For ``metric="ip"`` they approximate ``q . x``; for
``metric="l2"`` they approximate ``-||q - x||^2``. The store normalizes vectors for cosine and then
uses ``"ip"``.

State is saved as plain JSON (``get_config``) plus named float/uint8 arrays (``get_state``), which
the storage layer writes to an Arrow file. Never pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from langchain_vq.code_blocks import StoredCodes
from langchain_vq.errors import ConfigurationError, DimensionMismatchError, InvalidInputError, NotFittedError
from langchain_vq.quantization._common import state_array
from langchain_vq.topk import top_k
from langchain_vq.validation import check_int, check_k

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    from typing_extensions import Self

    from langchain_vq.quantization._fast_scan import JoinedFastScan

Metric = Literal["ip", "l2"]
#: Values checked for NaN/infinity at a time (a boolean copy of a 1M x 384 batch was 384 MB).
_FINITE_CHECK_VALUES = 1 << 22


class Quantizer(ABC):
    """Encodes float vectors into compact uint8 codes and ranks codes against float queries.

    The public methods check their arguments once, here; subclasses implement the underscored
    hooks (``_fit``, ``_encode``, ``_decode``, ``_score``, ``_search``) on checked arrays.

    Args:
        dim: Vector dimension.
        metric: ``"ip"`` (inner product; cosine after normalization) or ``"l2"``.
    """

    #: The name used in specs, manifests and errors ("binary", "int8", "pq").
    name: ClassVar[str]
    #: Values of ``get_config`` keys that configs saved by older versions lack, so that a store
    #: written before an option existed reopens with the behaviour it was written with.
    legacy_config: ClassVar[dict[str, Any]] = {}
    #: The learned ``float32`` attributes (ending in ``_``); saved by ``get_state`` under their
    #: names without the underscore.
    learned: ClassVar[tuple[str, ...]]

    def __init__(self, dim: int, *, metric: Metric = "ip") -> None:
        self.dim = check_int(dim, "dim", fix="Pass the dimension of the vectors to encode.")
        if metric not in ("ip", "l2"):
            msg = f"Unknown quantizer metric {metric!r}; expected 'ip' or 'l2'."
            raise ConfigurationError(msg)
        self.metric: Metric = metric

    # -- size and training -------------------------------------------------------------------
    @property
    @abstractmethod
    def code_size(self) -> int:
        """Bytes per encoded vector; known without data."""

    @property
    @abstractmethod
    def min_train_size(self) -> int:
        """Fewest vectors ``fit`` needs to learn a useful state."""

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``set_state``) has given this quantizer its learned state."""
        return all(hasattr(self, attr) for attr in self.learned)

    def fit(self, x: npt.ArrayLike) -> Self:
        """Learn state from ``x``; refitting overwrites it.

        Args:
            x: ``float32[n, dim]`` training vectors, ``n >= min_train_size``.

        Returns:
            ``self``.

        Raises:
            InvalidInputError: Too few, non-finite or wrongly shaped vectors.
        """
        self._fit(self._check_training(x))
        return self

    @abstractmethod
    def _fit(self, x: npt.NDArray[np.float32]) -> None:
        """Set the learned attributes from checked training vectors."""

    # -- codes -------------------------------------------------------------------------------
    def encode(self, x: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """Encode ``x`` (``[n, dim]``) into ``uint8[n, code_size]``."""
        self._check_fitted()
        return self._encode(self._check_vectors(x))

    @abstractmethod
    def _encode(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """Codes of checked vectors."""

    def decode(self, codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Approximate reconstruction ``[n, dim]`` of the vectors behind ``codes``."""
        self._check_fitted()
        return self._decode(self._check_codes(codes))

    @abstractmethod
    def _decode(self, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Reconstruction of checked codes."""

    # -- partitions --------------------------------------------------------------------------
    @property
    def partitioned(self) -> bool:
        """Whether rows get a list (:meth:`assign`) to store with their codes (an inverted file).

        Stored codes that carry their rows' lists (``StoredCodes.lists``) are then searched in
        a few lists only; codes without them are scanned in full.
        """
        return False

    def assign(self, x: npt.ArrayLike) -> npt.NDArray[np.uint16]:  # noqa: ARG002 - overridden
        """``uint16[n]``: the list of each vector (only for a :attr:`partitioned` quantizer).

        Raises:
            ConfigurationError: The quantizer does not partition rows.
        """
        msg = (
            f"{type(self).__name__} does not partition rows; assign() needs BinaryQuantizer(partitions=...) "
            "or ProductQuantizer(partitions=...)."
        )
        raise ConfigurationError(msg)

    # -- ranking -----------------------------------------------------------------------------
    @property
    def ranks_candidates_by_one_score(self) -> bool:
        """Whether the candidate stage keeps the rows of best code score, one score per row.

        Then the best ``n`` candidates are the first ``n`` of the best ``n' > n``, which lets
        calibration measure every multiplier up to ``n' / k`` from one scan. False for a
        candidate stage of two steps (binary Hamming, then a re-rank of its top). How far the
        prefixes reach over a store's codes: :meth:`ranked_candidates`.
        """
        return True

    def ranked_candidates(self, arrays: Sequence[StoredCodes]) -> int:
        """Up to how many candidates per query over ``arrays`` (a store's segments) are ranked by one score.

        Below this count the best ``n`` candidates of a search are the first ``n`` of the best
        ``n'``; 0 when the quantizer does not rank by one score, every row when it does (a
        partitioned scan reaches only as far as a query's lists hold rows).
        """
        return sum(a.shape[0] for a in arrays) if self.ranks_candidates_by_one_score else 0

    @property
    def blocked_codes(self) -> bool:
        """Whether stored codes should be kept in FAISS's fast-scan block layout (``code_blocks``).

        True for quantizers that scan stored codes with the fast-scan kernel, so a segment
        opened in a new process is searched without repacking its codes.
        """
        return False

    def search(
        self,
        queries: npt.ArrayLike,
        codes: npt.ArrayLike | StoredCodes,
        k: int,
        *,
        reuse: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top ``k`` rows of ``codes`` for each query, by this quantizer's fastest good ranking.

        Returns ``(scores, indices)``, each ``[n_queries, min(k, n)]``, best first; ``scores`` are
        similarities (higher is better) on the quantizer's own scale, used only to rank. They
        must be comparable across calls with the same fitted state: the engine pools the
        candidates of several segments by them. Ties are ordered by row.

        ``reuse=True`` promises that this same array (a segment's stored codes, never modified)
        will be searched again, so the quantizer may build and keep a faster layout of it.
        ``codes`` may be a segment's :class:`~langchain_vq.code_blocks.StoredCodes`, row-major or
        blocked.
        """
        self._check_fitted()
        checked_queries = self._check_vectors(queries, "queries")
        stored = self._check_stored(codes)
        k_out = min(check_k(k), stored.shape[0])
        nq = checked_queries.shape[0]
        if nq == 0 or k_out == 0:
            return np.empty((nq, k_out), np.float32), np.empty((nq, k_out), np.int64)
        if reuse:
            return self._search_stored(checked_queries, stored, k_out)
        return self._search_once(checked_queries, stored, k_out)

    @abstractmethod
    def _search(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``search`` on checked, non-empty arrays, with ``1 <= k <= n``."""

    def _search_once(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``search(..., reuse=False)``: codes seen once (e.g. the rows a filter keeps)."""
        return self._search(queries, codes.row_major, k)

    def _search_stored(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``search(..., reuse=True)``: by default the same as a search of codes seen once."""
        return self._search(queries, codes.row_major, k)

    def _stored_candidates(
        self, queries: npt.NDArray[np.float32], codes: StoredCodes, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The rows ``_search_stored`` returns, in any order (``search_many`` re-ranks them all)."""
        return self._search_stored(queries, codes, k)

    def search_many(
        self,
        queries: npt.ArrayLike,
        arrays: Sequence[npt.ArrayLike | StoredCodes],
        k: int,
        *,
        masks: Sequence[npt.NDArray[np.bool_] | None] | None = None,
        joined: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Top ``k`` rows of several stored code arrays (a store's segments) searched as one.

        The query is prepared once and a quantizer with a candidate stage pools that stage
        across the arrays (binary: one Hamming top ``k * hamming_factor`` for all of them, one
        re-rank), so ten segments cost about what one segment of their rows costs. As
        ``search(..., reuse=True)``, the arrays are stored codes that will be searched again.

        Args:
            queries: ``float32[n_queries, dim]``.
            arrays: Code arrays ``uint8[n_i, code_size]``.
            k: Results per query.
            masks: Optional ``bool[n_i]`` per array, False for rows never to return. Meant for
                masks that hide few rows (deletions): each array is searched for ``k`` more
                candidates than it hides.
            joined: The same arrays will be searched together again (a store's segments, on
                every unfiltered query): a fast-scan quantizer keeps one index over all of
                them and scans it in one kernel call (``_fast_scan.JoinedFastScan``). The
                same candidates as searching them one by one (ties ordered by array, then row).

        Returns:
            ``(scores, array_indices, rows)``, each ``[n_queries, min(k, total rows)]``, best
            first, ties ordered by array then row; places no kept row fills hold score
            ``-inf``, array ``-1`` and row ``-1``.
        """
        self._check_fitted()
        checked_queries = self._check_vectors(queries, "queries")
        checked = [self._check_stored(a) for a in arrays]
        if masks is not None and len(masks) != len(checked):
            msg = f"search_many got {len(masks)} masks for {len(checked)} code arrays; pass one per array."
            raise InvalidInputError(msg)
        k_out = min(check_k(k), sum(a.shape[0] for a in checked))
        nq = checked_queries.shape[0]
        if nq == 0 or k_out == 0:
            empty = np.empty((nq, k_out), np.int64)
            return np.empty((nq, k_out), np.float32), empty, empty.copy()
        masks_list = list(masks or [None] * len(checked))
        return self._search_many(checked_queries, checked, k_out, masks_list, joined=joined)

    def _search_many(
        self,
        queries: npt.NDArray[np.float32],
        arrays: list[StoredCodes],
        k: int,
        masks: list[npt.NDArray[np.bool_] | None],
        *,
        joined: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``search_many`` on checked arrays: one joined index, or each array alone, pooled."""
        joined_index = self._joined_fast_scan(arrays) if joined and len(arrays) > 1 else None
        if joined_index is not None:
            found = joined_index.candidates(queries, k, masks)
            if found is not None:
                return pooled_top_k(found[0], pool_keys(found[1], found[2]), k)
        scores, keys = [], []
        for index, (codes, mask) in enumerate(zip(arrays, masks, strict=True)):
            hidden = 0 if mask is None else mask.size - int(np.count_nonzero(mask))
            fetch = min(k + hidden, codes.shape[0])
            if fetch == 0:
                continue
            part_scores, rows = self._stored_candidates(queries, codes, fetch)
            if mask is not None:
                part_scores = np.where(mask[rows], part_scores, -np.inf).astype(np.float32)
            scores.append(part_scores)
            keys.append(pool_keys(index, rows))
        return pooled_top_k(np.concatenate(scores, axis=1), np.concatenate(keys, axis=1), k)

    def joined_candidates(
        self,
        queries: npt.NDArray[np.float32],
        arrays: Sequence[StoredCodes],
        k: int,
        masks: Sequence[npt.NDArray[np.bool_] | None],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """The best ``k`` kept rows of all ``arrays`` from their joined index, or None.

        For a dense filter over a store's segments: the same joined index as unfiltered queries
        (kept, not rebuilt), over-fetching for the rows the masks hide. ``(scores, array
        indices, rows)`` as :meth:`search_many`; None when this quantizer has no joined index
        or the over-fetch fell short (the caller searches each array alone).
        """
        joined = self._joined_fast_scan(list(arrays)) if len(arrays) > 1 else None
        found = None if joined is None else joined.candidates(queries, k, masks)
        if found is None:
            return None
        return pooled_top_k(found[0], pool_keys(found[1], found[2]), k)

    def _joined_fast_scan(self, arrays: list[StoredCodes]) -> JoinedFastScan | None:  # noqa: ARG002
        """One fast-scan index over ``arrays``, kept while they live; None: no fast scan."""
        return None

    def score(self, queries: npt.ArrayLike, codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Approximate similarities ``[n_queries, n]`` of every query to every code row."""
        return self._score(*self._checked(queries, codes))

    @abstractmethod
    def _score(
        self, queries: npt.NDArray[np.float32], codes: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.float32]:
        """``score`` on checked arrays."""

    # -- state -------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-serializable parameters (not learned state) that recreate this quantizer."""
        return {"name": self.name, "dim": self.dim, "metric": self.metric}

    def get_state(self) -> dict[str, npt.NDArray[Any]]:
        """Learned state as named ``float32`` arrays (raises ``NotFittedError`` before ``fit``)."""
        self._check_fitted()
        return {attr.rstrip("_"): getattr(self, attr).copy() for attr in self.learned}

    def set_state(self, state: dict[str, npt.NDArray[Any]]) -> Self:
        """Restore learned state saved by ``get_state``; checks shapes and raises on mismatch.

        Raises:
            ConfigurationError: An array is missing, of another shape, or not finite.
        """
        owner = type(self).__name__
        arrays = {
            attr: state_array(state, attr.rstrip("_"), self._state_shape(attr), np.float32, owner)
            for attr in self.learned
        }
        self._restore(arrays)
        return self

    def _state_shape(self, attr: str) -> tuple[int, ...]:  # noqa: ARG002 - subclasses may use it
        """Shape of the learned array ``attr``: ``[dim]`` unless a subclass says otherwise."""
        return (self.dim,)

    def _restore(self, arrays: dict[str, npt.NDArray[np.float32]]) -> None:
        """Set checked learned arrays (subclasses add checks or derived state)."""
        for attr, array in arrays.items():
            setattr(self, attr, array)

    # -- shared guards -----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.is_fitted:
            msg = (
                f"{type(self).__name__} is not fitted: call fit() with at least "
                f"{self.min_train_size} vectors first (or restore its state with set_state())."
            )
            raise NotFittedError(msg)

    def _checked(
        self, queries: npt.ArrayLike, codes: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """Fitted state, queries as ``float32[nq, dim]`` and codes as ``uint8[n, code_size]``."""
        self._check_fitted()
        return self._check_vectors(queries, "queries"), self._check_codes(codes)

    def _check_training(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Training vectors as ``float32[n, dim]``, at least ``min_train_size`` of them."""
        x = self._check_vectors(x, "training vectors")
        if x.shape[0] < self.min_train_size:
            msg = (
                f"{type(self).__name__}.fit got {x.shape[0]} vectors, expected at least "
                f"{self.min_train_size}. Add more documents before training; until then the store "
                "searches exactly."
            )
            raise InvalidInputError(msg)
        return x

    def _check_vectors(self, x: npt.ArrayLike, what: str = "vectors") -> npt.NDArray[np.float32]:
        return as_float_matrix(x, self.dim, what)

    def _check_stored(self, codes: npt.ArrayLike | StoredCodes) -> StoredCodes:
        """``codes`` as :class:`StoredCodes` (row-major arrays are wrapped, not copied)."""
        if isinstance(codes, StoredCodes):
            self._check_codes(codes.stored)
            return codes
        return StoredCodes(self._check_codes(codes))

    def _check_codes(self, codes: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        arr = np.asarray(codes)
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != self.code_size:
            msg = (
                f"codes must be uint8[n, {self.code_size}], got {arr.dtype}{list(arr.shape)}. "
                "Pass codes produced by this quantizer's encode()."
            )
            raise InvalidInputError(msg)
        return np.ascontiguousarray(arr)


#: Bits of a pooled key that hold the row (the array index sits above them).
_ROW_BITS = 40


def pool_keys(index: int | npt.NDArray[np.int64], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Keys that order candidates by array, then row: ``index << 40 | row`` (-1 stays -1)."""
    return (np.asarray(index, dtype=np.int64) << _ROW_BITS) | rows.astype(np.int64, copy=False)


def pooled_top_k(
    scores: npt.NDArray[np.float32], keys: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The ``k`` best pooled candidates as ``(scores, array_indices, rows)``; ``-inf`` ones get -1."""
    best, best_keys = top_k(scores, k, keys)
    missing = ~np.isfinite(best)
    arrays, rows = split_keys(best_keys)
    return best, np.where(missing, -1, arrays), np.where(missing, -1, rows)


def split_keys(keys: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(array_indices, rows)`` of keys made by :func:`pool_keys`."""
    return keys >> _ROW_BITS, keys & ((1 << _ROW_BITS) - 1)


def as_float_matrix(x: npt.ArrayLike, dim: int, what: str = "vectors") -> npt.NDArray[np.float32]:
    """Return ``x`` as a C-contiguous ``float32[n, dim]`` array, or raise a typed error.

    Accepts one vector (``[dim]``) as a single row. Rejects NaN and infinity.
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        msg = f"{what} must be numeric arrays of shape [n, {dim}]; could not convert: {exc}."
        raise InvalidInputError(msg) from exc
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim)
    if arr.ndim != 2:
        msg = f"{what} must have shape [n, {dim}], got shape {list(arr.shape)}."
        raise InvalidInputError(msg)
    if arr.shape[1] != dim:
        msg = (
            f"{what} have dimension {arr.shape[1]}, expected {dim}. Use the same embedding model "
            "for adding and querying, or create a new store for the other model."
        )
        raise DimensionMismatchError(msg)
    if not _all_finite(arr):
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        msg = (
            f"{what} contain NaN or infinity (rows {bad[:5].tolist()}"
            f"{'...' if bad.size > 5 else ''}); expected finite numbers. Check the embedding model's "
            "output for these inputs."
        )
        raise InvalidInputError(msg)
    return np.ascontiguousarray(arr)


def _all_finite(arr: npt.NDArray[np.float32]) -> bool:
    """Whether every value is finite, checked in blocks of rows (no full-size boolean copy)."""
    step = max(1, _FINITE_CHECK_VALUES // max(arr.shape[1], 1))
    return all(bool(np.isfinite(arr[start : start + step]).all()) for start in range(0, arr.shape[0], step))
