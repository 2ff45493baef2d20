"""Small helpers shared by the quantizers (argument checks, top-k, state validation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    import numpy.typing as npt


def check_k(k: int) -> int:
    """Return ``k`` as an ``int``, or raise ``InvalidInputError`` unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        msg = f"k must be a positive integer, got {k!r}. Ask for at least one result."
        raise InvalidInputError(msg)
    return int(k)


def top_k(
    scores: npt.NDArray[np.float32], indices: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Best ``k`` of ``scores`` per row (higher is better), sorted best first, with their ``indices``.

    Args:
        scores: ``[n_queries, c]`` similarities.
        indices: ``[n_queries, c]`` row numbers belonging to ``scores``.
        k: Results to keep, ``0 < k <= c``.

    Returns:
        ``(scores, indices)``, each ``[n_queries, k]``.
    """
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [nq, k], unordered
        scores = np.take_along_axis(scores, part, axis=1)
        indices = np.take_along_axis(indices, part, axis=1)
    # Sort by score, ties by row number, so results do not depend on partition order.
    order = np.lexsort((indices, -scores), axis=1) if scores.size else np.zeros(scores.shape, int)
    return (
        np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False),
        np.take_along_axis(indices, order, axis=1).astype(np.int64, copy=False),
    )


def state_array(
    state: dict[str, npt.NDArray[Any]],
    key: str,
    shape: tuple[int, ...],
    dtype: type[np.generic],
    owner: str,
) -> npt.NDArray[Any]:
    """Fetch ``state[key]`` as a C-contiguous ``dtype`` array of ``shape``, or raise a typed error.

    Raises:
        ConfigurationError: The array is missing, has another shape or kind, or is not finite.
    """
    if key not in state:
        msg = (
            f"{owner} state has no {key!r} array (found {sorted(state)}). "
            "Restore a state saved by get_state() of the same quantizer type."
        )
        raise ConfigurationError(msg)
    arr = np.asarray(state[key])
    same_kind = np.issubdtype(arr.dtype, np.floating) == np.issubdtype(dtype, np.floating)
    if arr.shape != shape or not same_kind or arr.dtype == np.bool_:
        expected = f"{np.dtype(dtype).name}{list(shape)}"
        msg = (
            f"{owner} state {key!r} is {arr.dtype}{list(arr.shape)}, expected {expected}. "
            "The state belongs to a quantizer of another dimension, type or configuration."
        )
        raise ConfigurationError(msg)
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        msg = f"{owner} state {key!r} contains NaN or infinity; the saved state is damaged."
        raise ConfigurationError(msg)
    return arr
