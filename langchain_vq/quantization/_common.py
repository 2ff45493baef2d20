"""Checks of saved quantizer state, shared by the quantizers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy.typing as npt


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
