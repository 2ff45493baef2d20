"""Rescoring precision: how a store keeps the vectors that rescore the code scan's candidates.

Named as sentence-transformers names embedding precisions:

- ``"float32"``: the vectors as given, 4 bytes per dimension;
- ``"float16"``: half the bytes; IEEE half precision keeps about 3 significant digits, far finer
  than the gaps between neighbours' scores of normalized embeddings;
- ``"int8"``: one byte per dimension, 256 levels over each dimension's calibrated range (the
  minimum and maximum of a training sample, as sentence-transformers calibrates; see
  :class:`ScalarQuantizer`), clipped before the cast. Candidates are scored as the float query
  against the reconstructed rows, never int8 x int8;
- ``None``: no rescoring vectors at all (a codes-only store).

A :class:`VectorCodec` turns float32 rows into the stored array and gathered stored rows back into
float32, so the search engine rescores every precision the same way. An int8 segment carries its
ranges in its ``vector`` field's metadata, so each segment file decodes on its own
(:func:`float_rows`), and pyarrow, pandas or polars users can decode it too.

``float16`` is the default of new stores: the smallest precision whose recall@10 stays within 0.002
of float32 rescoring, with SciFact nDCG@10 unchanged to three decimals
(``benchmarks/results/rescore_precision.json``). Stores written before the option keep float32.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

import faiss
import numpy as np

from langchain_vq.errors import ConfigurationError, CorruptStoreError, NotFittedError
from langchain_vq.quantization.scalar import ScalarQuantizer
from langchain_vq.storage.schema import INT8_LO_KEY, INT8_SCALE_KEY
from langchain_vq.validation import canonical_name

if TYPE_CHECKING:
    import numpy.typing as npt
    from typing_extensions import Self

    from langchain_vq.quantization.base import Metric
    from langchain_vq.storage.segment import Segment

#: Precision of a new store's rescoring vectors (see the module docstring).
DEFAULT_PRECISION = "float16"
#: Precision of stores written before the option existed.
LEGACY_PRECISION = "float32"
#: The precision name of a codes-only store, as recorded in manifests.
CODES_ONLY = "none"

_ALIASES: dict[str, str | None] = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "int8": "int8",
    "i8": "int8",
    "none": None,
}
_VALID = "'float32', 'float16', 'int8' or None (codes only, no rescoring)"


def normalize_precision(spec: str | None) -> str | None:
    """Map a precision spec or alias to ``"float32"``, ``"float16"``, ``"int8"`` or ``None``."""
    return canonical_name(spec, _ALIASES, "rescore precision", _VALID)


def float_rows(segment: Segment, rows: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.float32]:
    """A segment's stored vectors (``rows`` of them, or all) as float32, whatever their precision.

    float32 rows come back as a view (all rows) or a gathered copy; float16 and int8 are decoded.
    """
    stored = segment.vectors if rows is None else segment.vectors[rows]
    return stored if segment.precision == "float32" else codec_of(segment).decode(stored)


def codec_of(segment: Segment) -> VectorCodec:
    """The codec of a segment's stored vectors, read from its file once and cached."""
    codec = segment.cache.get("codec")
    if codec is None:
        codec = segment.cache["codec"] = VectorCodec.of_segment(segment)
    return codec


#: Most float16 values :meth:`VectorCodec.decode` converts with :func:`half_to_float`'s passes
#: (4M: 16 MB of float32); past it FAISS's single pass costs less (a 16k x 384 block: 4.8 against
#: 7.9 ms; 8k rows: 2.5 against 1.9; 1,710 rows: 2.2 against 0.3 ms, load 5). Exact scans widen
#: their own 4k-row pieces in a reused buffer instead (``search.engine.exact_search``).
_HALF_PASSES_MAX_VALUES = 1 << 22
#: ``2 ** 112``: a float16's bits moved into a float32's places read as its value times ``2 ** -112``.
_HALF_SCALE = np.float32(2.0**112)
#: Keeps the sign and the 28 bits a float16 fills once shifted (its sign extension cleared).
_HALF_BITS = np.int32(-0x70000001)  # 0x8FFFFFFF
#: The smallest float16 subnormal (bits 0x0001) shifted: a float32 subnormal itself, so a thread
#: that reads subnormal inputs as zero (DAZ, set by some libraries) is caught.
_SMALLEST_SHIFTED = np.array([1 << 13], np.int32).view(np.float32)[0]
#: A float16 infinity's bits (0x7C00) shifted: every finite float16 shifted is smaller in magnitude.
_INFINITY_SHIFTED = float(np.array([0x7C00 << 13], np.int32).view(np.float32)[0])


def half_to_float(stored: npt.NDArray[np.float16]) -> npt.NDArray[np.float32]:
    """``stored`` (float16, any shape) as float32: exact, the values numpy's own cast gives.

    Why not the cast: numpy converts float16 one value at a time (1,710 candidates x 384 dims:
    1.3 ms), FAISS's ``ScalarQuantizer`` too (1.9 ms), on every query of a 1M store; the few
    whole-array passes of :func:`half_bits_to_float` take 0.2-0.3 ms while the array stays in
    the caches (``benchmarks/measure_query_stages.py``, ``float16_widening_ms``).
    """
    return half_bits_to_float(np.asarray(stored).view(np.int16).astype(np.int32))


def half_bits_to_float(bits: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
    """float16 values whose bits ``bits`` holds (as int16 sign-extended), as float32, in place.

    A half's exponent and mantissa shifted by 13 bits into a float32's places read as ``value *
    2 ** -112``, normal and subnormal halves alike, so one exact multiplication by ``2 ** 112``
    gives the value (the sign bit is already in place). Infinities and NaN (a float16 store of
    values past 65504), which the scaling cannot give, and a thread that reads subnormal inputs
    as zero take numpy's cast instead. Returns ``bits`` viewed as float32.
    """
    values = bits.view(np.float32)
    if bits.size == 0:
        return values
    bits <<= 13
    bits &= _HALF_BITS
    if _SMALLEST_SHIFTED * _HALF_SCALE == 0 or not (
        float(values.max()) < _INFINITY_SHIFTED and float(values.min()) > -_INFINITY_SHIFTED
    ):
        halves = ((bits >> 13) & 0x7FFF) | np.where(bits < 0, 0x8000, 0)
        np.copyto(values, halves.astype(np.uint16).view(np.float16))
        return values
    values *= _HALF_SCALE
    return values


class VectorCodec:
    """Stores float32 rows at one precision and reads them back as float32.

    Args:
        precision: ``"float32"``, ``"float16"`` or ``"int8"`` (see the module docstring).
        dim: Vector dimension.
        metric: ``"ip"`` or ``"l2"``; only recorded (int8 ranges do not depend on it).
    """

    DTYPES: ClassVar[dict[str, Any]] = {"float32": np.float32, "float16": np.float16, "int8": np.uint8}

    def __init__(self, precision: str, dim: int, *, metric: Metric = "ip") -> None:
        name = normalize_precision(precision)
        if name is None:
            msg = "A VectorCodec stores vectors; a codes-only store (precision None) has none."
            raise ConfigurationError(msg)
        self.precision = name
        self.dim = dim
        # min/max, not the code scan's 0.1% quantiles: the extreme values decide neighbours.
        self._ranges = ScalarQuantizer(dim, metric=metric, clip_quantile=0.0) if name == "int8" else None

    @property
    def dtype(self) -> np.dtype[Any]:
        """The stored element type: float32, float16, or uint8 (the int8 levels)."""
        return np.dtype(self.DTYPES[self.precision])

    @property
    def needs_fit(self) -> bool:
        """Whether ``fit`` must see data before ``encode`` (int8: its ranges)."""
        return self._ranges is not None and not self._ranges.is_fitted

    @property
    def min_train_size(self) -> int:
        """Fewest vectors ``fit`` needs (0 for the float precisions)."""
        return self._ranges.min_train_size if self._ranges is not None else 0

    def fit(self, x: npt.NDArray[np.float32]) -> Self:
        """Learn int8 ranges from ``x``; a no-op for float precisions."""
        if self._ranges is not None:
            self._ranges.fit(x)
        return self

    def encode(self, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """``x`` (``float32[n, dim]``) as the stored ``[n, dim]`` array."""
        if self._ranges is not None:
            self._check_fitted()
            return self._ranges.encode(x)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def decode(self, stored: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Stored rows (``[n, dim]``) as float32: exact for float32, the reconstruction otherwise."""
        if self._ranges is not None:
            self._check_fitted()
            return self._ranges.decode(stored)
        if stored.dtype == np.float16 and stored.ndim == 2 and stored.shape[0]:
            if stored.size <= _HALF_PASSES_MAX_VALUES:
                return half_to_float(stored)
            # FAISS converts with F16C instructions in one pass: the same values, with less CPU
            # than numpy's cast (a 16k-row block 8.5 against 14.2 ms; measure_hot_paths.py), and
            # than half_to_float's passes once the array outgrows the caches (4.8 against 7.9 ms).
            return self._half_decoder(stored.shape[1]).decode(np.ascontiguousarray(stored).view(np.uint8))
        return np.asarray(stored, dtype=np.float32)

    @staticmethod
    @functools.cache
    def _half_decoder(dim: int) -> faiss.ScalarQuantizer:
        return faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)

    def _check_fitted(self) -> None:
        if self.needs_fit:
            msg = "The int8 rescoring ranges are not fitted; call fit() on a sample of vectors first."
            raise NotFittedError(msg)

    # -- segment files -----------------------------------------------------------------------
    def field_metadata(self) -> dict[bytes, bytes] | None:
        """What a segment's ``vector`` field records to decode itself (int8: its ranges)."""
        if self._ranges is None:
            return None
        self._check_fitted()
        return {
            INT8_LO_KEY: self._ranges.lo_.astype("<f4").tobytes(),
            INT8_SCALE_KEY: self._ranges.scale_.astype("<f4").tobytes(),
        }

    @classmethod
    def of_segment(cls, segment: Segment) -> VectorCodec:
        """The codec that decodes ``segment``'s stored vectors (int8 ranges from its file)."""
        field = segment.vector_field
        where = segment.path or f"segment {segment.name}"
        if field is None:
            msg = f"{where} keeps no vectors (a codes-only store)."
            raise ConfigurationError(msg)
        codec = cls(segment.precision, field.type.list_size)
        if codec.precision == "int8":
            metadata = field.metadata or {}
            try:
                lo, scale = (
                    np.frombuffer(metadata[key], dtype="<f4") for key in (INT8_LO_KEY, INT8_SCALE_KEY)
                )
                codec.set_state({"lo": lo.astype(np.float32), "scale": scale.astype(np.float32)})
            except (KeyError, ValueError, ConfigurationError) as exc:
                msg = f"Store file {where} holds int8 vectors without valid ranges ({exc}); it is damaged."
                raise CorruptStoreError(msg, segment.path) from exc
        return codec

    # -- state -------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-serializable settings: precision and dimension."""
        return {"precision": self.precision, "dim": self.dim}

    def get_state(self) -> dict[str, npt.NDArray[Any]]:
        """Learned arrays (int8: ``lo`` and ``scale``; none for float precisions)."""
        if self._ranges is None:
            return {}
        self._check_fitted()
        return self._ranges.get_state()

    def set_state(self, state: dict[str, npt.NDArray[Any]]) -> Self:
        """Restore what ``get_state`` returned."""
        if self._ranges is not None:
            self._ranges.set_state(state)
        return self
