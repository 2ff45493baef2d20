"""Quantizers: binary (1 bit per dimension), int8 (scalar) and product quantization (PQ).

Use :func:`make_quantizer` to build one from a user-facing spec (``"binary"``, ``"int8"``,
``"pq"``, or ``None`` for exact float search) and :func:`quantizer_from_config` to restore one
saved with ``get_config()`` / ``get_state()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_vq.errors import ConfigurationError, VQError
from langchain_vq.quantization.base import Metric, Quantizer, as_float_matrix
from langchain_vq.quantization.binary import BinaryQuantizer
from langchain_vq.quantization.product import ProductQuantizer
from langchain_vq.quantization.scalar import ScalarQuantizer
from langchain_vq.validation import canonical_name

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "QUANTIZERS",
    "BinaryQuantizer",
    "Metric",
    "ProductQuantizer",
    "Quantizer",
    "ScalarQuantizer",
    "as_float_matrix",
    "make_quantizer",
    "normalize_quantization",
    "quantizer_from_config",
]

#: Canonical name -> class.
QUANTIZERS: dict[str, type[Quantizer]] = {
    BinaryQuantizer.name: BinaryQuantizer,
    ScalarQuantizer.name: ScalarQuantizer,
    ProductQuantizer.name: ProductQuantizer,
}

_ALIASES: dict[str, str | None] = {
    "binary": "binary",
    "bin": "binary",
    "ubinary": "binary",
    "1bit": "binary",
    "int8": "int8",
    "i8": "int8",
    "scalar": "int8",
    "sq8": "int8",
    "uint8": "int8",
    "pq": "pq",
    "product": "pq",
    "none": None,
    "float": None,
    "float32": None,
    "flat": None,
}

_VALID = "'binary', 'int8', 'pq' or None/'float' (exact float search)"


def normalize_quantization(spec: str | None) -> str | None:
    """Map a quantization spec or alias to ``"binary"``, ``"int8"``, ``"pq"`` or ``None``.

    Args:
        spec: A name such as ``"binary"``, ``"i8"``, ``"PQ"``, or ``None``/``"float"``.

    Returns:
        The canonical name, or ``None`` for exact float search.

    Raises:
        ConfigurationError: ``spec`` is not a known name.
    """
    return canonical_name(spec, _ALIASES, "quantization", _VALID)


def make_quantizer(spec: str | None, dim: int, *, metric: Metric = "ip", **options: Any) -> Quantizer | None:
    """Create an unfitted quantizer from a spec, or ``None`` for exact float search.

    Args:
        spec: ``"binary"`` (aliases ``"bin"``, ``"ubinary"``, ``"1bit"``), ``"int8"`` (``"i8"``,
            ``"scalar"``, ``"sq8"``, ``"uint8"``), ``"pq"`` (``"product"``), or ``None``
            (``"none"``, ``"float"``, ``"float32"``, ``"flat"``).
        dim: Vector dimension.
        metric: ``"ip"`` or ``"l2"``.
        **options: Keyword parameters of the quantizer class (``hamming_factor``, ``m``...).

    Returns:
        The quantizer, or ``None`` when ``spec`` means exact float search.

    Raises:
        ConfigurationError: Unknown spec, or options the quantizer does not take.
    """
    name = normalize_quantization(spec)
    if name is None:
        if options:
            msg = (
                f"Options {sorted(options)} were given for exact float search, which takes none. "
                "Remove them or choose a quantization."
            )
            raise ConfigurationError(msg)
        return None
    return _build(name, dim, metric, options)


def _build(name: str, dim: int, metric: Any, options: dict[str, Any]) -> Quantizer:
    cls = QUANTIZERS[name]
    try:
        return cls(dim, metric=metric, **options)
    except TypeError as exc:
        msg = f"Invalid options {sorted(options)} for quantization {name!r}: {exc}."
        raise ConfigurationError(msg) from exc


def quantizer_from_config(config: dict[str, Any], state: dict[str, npt.NDArray[np.generic]]) -> Quantizer:
    """Rebuild a fitted quantizer from ``get_config()`` and ``get_state()`` output (no training).

    Args:
        config: JSON parameters, with at least ``name`` and ``dim``.
        state: Named arrays saved by ``get_state()``.

    Returns:
        The fitted quantizer.

    Raises:
        ConfigurationError: Unknown name, missing or invalid parameters, or a state whose arrays
            are missing or have other shapes.
    """
    if not isinstance(config, dict) or "name" not in config or "dim" not in config:
        msg = (
            f"Quantizer config must be a dict with 'name' and 'dim', got {config!r}. "
            "Pass the dict saved from Quantizer.get_config()."
        )
        raise ConfigurationError(msg)
    options = dict(config)
    name, dim = options.pop("name"), options.pop("dim")
    metric = options.pop("metric", "ip")
    if name not in QUANTIZERS:
        msg = f"Unknown quantizer name {name!r} in config; expected one of {sorted(QUANTIZERS)}."
        raise ConfigurationError(msg)
    options = {**QUANTIZERS[name].legacy_config, **options}
    try:
        quantizer = _build(name, dim, metric, options)
    except VQError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        msg = f"Invalid quantizer config {config!r}: {exc}"
        raise ConfigurationError(msg) from exc
    return quantizer.set_state(state)
