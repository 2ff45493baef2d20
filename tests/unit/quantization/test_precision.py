"""Rescoring precisions: each reads back close to the float32 vectors and keeps exact-search recall."""

from __future__ import annotations

import numpy as np
import pytest

from langchain_vq.errors import ConfigurationError, InvalidInputError, NotFittedError
from langchain_vq.quantization import precision as precision_module
from langchain_vq.quantization.precision import (
    VectorCodec,
    half_bits_to_float,
    half_to_float,
    normalize_precision,
)
from tests.conftest import clustered_vectors


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("float32", "float32"),
        ("FP16", "float16"),
        ("half", "float16"),
        ("i8", "int8"),
        (None, None),
        ("none", None),
    ],
)
def test_precision_aliases(spec: str | None, name: str | None) -> None:
    assert normalize_precision(spec) == name


@pytest.mark.parametrize("spec", ["float64", "binary", 8, ""])
def test_unknown_precision_lists_the_valid_ones(spec: object) -> None:
    with pytest.raises(ConfigurationError, match="expected one of 'float32', 'float16', 'int8'"):
        normalize_precision(spec)  # type: ignore[arg-type]


def test_codes_only_has_no_codec() -> None:
    with pytest.raises(ConfigurationError, match="codes-only"):
        VectorCodec("none", 8)


@pytest.mark.parametrize(("precision", "itemsize"), [("float32", 4), ("float16", 2), ("int8", 1)])
def test_stored_size_and_reconstruction_error(precision: str, itemsize: int) -> None:
    x = clustered_vectors(2000, 97, seed=1)  # unit vectors, odd dimension
    codec = VectorCodec(precision, 97).fit(x[:500])
    stored = codec.encode(x)
    assert stored.shape == (2000, 97)
    assert stored.dtype.itemsize == itemsize
    back = codec.decode(stored)
    assert back.dtype == np.float32
    error = np.abs(back - x)
    if precision == "float32":
        assert np.array_equal(back, x)
    elif precision == "float16":
        assert np.all(error <= np.abs(x) * 2.0**-11 + 1e-7)  # half precision: 11 significant bits
    else:  # inside each dimension's range, at most half a level off
        state = codec.get_state()
        lo, scale = state["lo"], state["scale"]
        inside = (x >= lo) & (x <= lo + 255 * scale)
        assert inside.mean() > 0.99
        assert np.all(error[inside] <= np.broadcast_to(scale / 2, x.shape)[inside] + 1e-6)


def test_int8_clips_values_outside_its_range_instead_of_wrapping() -> None:
    x = clustered_vectors(300, 16, seed=2)
    codec = VectorCodec("int8", 16).fit(x)
    state = codec.get_state()
    far = np.stack([np.full(16, 5.0), np.full(16, -5.0)]).astype(np.float32)
    back = codec.decode(codec.encode(far))
    assert np.allclose(back[0], state["lo"] + 255 * state["scale"])  # top of each range
    assert np.allclose(back[1], state["lo"])  # bottom of each range


@pytest.mark.parametrize(("precision", "min_recall"), [("float32", 1.0), ("float16", 0.998), ("int8", 0.97)])
def test_rescoring_with_each_precision_keeps_exact_top_10(precision: str, min_recall: float) -> None:
    x = clustered_vectors(5000, 64, seed=3)
    queries = clustered_vectors(100, 64, seed=4)
    codec = VectorCodec(precision, 64).fit(x)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    approx = np.argsort(-(queries @ codec.decode(codec.encode(x)).T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= min_recall


def test_int8_needs_fit_and_state_round_trips() -> None:
    x = clustered_vectors(300, 12, seed=5)
    codec = VectorCodec("int8", 12)
    assert codec.needs_fit
    with pytest.raises(NotFittedError, match="fit"):
        codec.encode(x)
    codec.fit(x)
    restored = VectorCodec(**codec.get_config()).set_state(codec.get_state())
    assert np.array_equal(restored.encode(x), codec.encode(x))
    assert VectorCodec("float16", 12).get_state() == {}
    assert not VectorCodec("float16", 12).needs_fit


def test_int8_rescoring_ranges_are_the_sample_extremes() -> None:
    x = clustered_vectors(400, 24, seed=6)
    state = VectorCodec("int8", 24).fit(x).get_state()
    assert np.allclose(state["lo"], x.min(axis=0))
    assert np.allclose(state["lo"] + 255 * state["scale"], x.max(axis=0), atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 0.5, "0.01", True, None])
def test_clip_quantile_is_checked(bad: object) -> None:
    from langchain_vq.quantization import ScalarQuantizer

    with pytest.raises(InvalidInputError, match=r"clip_quantile must be a number in \[0, 0.5\)"):
        ScalarQuantizer(8, clip_quantile=bad)  # type: ignore[arg-type]


def test_float16_decodes_to_the_exact_float32_values() -> None:
    """The F16C path (FAISS) gives numpy's values bit for bit: specials, subnormals, gathered rows."""
    rng = np.random.default_rng(3)
    stored = rng.standard_normal((300, 97)).astype(np.float16)
    stored[0, :5] = [np.inf, -np.inf, np.nan, 6e-8, -0.0]  # specials and a subnormal
    codec = VectorCodec("float16", 97)
    for rows in (stored, stored[::3], stored[[5, 1, 5]], stored[:0]):
        back = codec.decode(rows)
        assert back.dtype == np.float32
        assert back.shape == rows.shape
        np.testing.assert_array_equal(back.view(np.uint32), rows.astype(np.float32).view(np.uint32))


def _every_half() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)


@pytest.mark.parametrize("shape", [(256, 256), (1 << 16, 1), (3, 5)])
def test_half_to_float_gives_numpys_cast_bit_for_bit(shape: tuple[int, int]) -> None:
    # Every float16 value: zeros of both signs, subnormals, normals, infinities and NaN.
    halves = _every_half()[: shape[0] * shape[1]].reshape(shape)
    got = half_to_float(halves)
    assert got.dtype == np.float32 and got.shape == shape
    assert got.tobytes() == halves.astype(np.float32).tobytes()
    assert half_to_float(np.empty((0, 4), np.float16)).shape == (0, 4)


def test_half_bits_to_float_is_exact_when_subnormals_read_as_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    finite = _every_half()[np.isfinite(_every_half())]
    bits = finite.view(np.int16).astype(np.int32)
    assert half_bits_to_float(bits.copy()).tobytes() == finite.astype(np.float32).tobytes()
    # A thread that reads subnormal inputs as zero (simulated) takes the cast, and is exact too.
    monkeypatch.setattr(precision_module, "_SMALLEST_SHIFTED", np.float32(0.0))
    assert half_bits_to_float(bits.copy()).tobytes() == finite.astype(np.float32).tobytes()


def test_a_float16_codec_decodes_as_numpys_cast(tmp_path) -> None:
    x = clustered_vectors(300, 40, seed=5) * 3
    codec = VectorCodec("float16", 40)
    stored = codec.encode(x)
    assert codec.decode(stored).tobytes() == stored.astype(np.float32).tobytes()
