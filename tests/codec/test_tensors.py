"""The tensor codec on its own: every form in, every encoding out, errors before allocation."""

import base64

import numpy as np
import pytest

from app.codec.tensors import decode_tensor, encode_tensor, summarize
from app.errors import InvalidInput, PayloadTooLarge, ShapeMismatch


def decode(value, **kwargs):
    return decode_tensor(value, field="input", max_elements=kwargs.pop("max_elements", 10_000), **kwargs)


def test_nested_list_defaults_to_float32():
    out = decode([[1, 2], [3, 4.5]])
    assert out.dtype == np.float32 and out.shape == (2, 2) and out[1, 1] == 4.5


def test_flat_data_with_shape_and_float64():
    out = decode({"data": [1, 2, 3, 4, 5, 6], "shape": [2, 3], "dtype": "float64"})
    assert out.dtype == np.float64 and out.shape == (2, 3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_base64_is_bit_exact(dtype):
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(dtype)
    out = decode({"base64": base64.b64encode(x.tobytes()).decode(), "shape": [3, 5], "dtype": dtype})
    np.testing.assert_array_equal(out, x)
    encoded = encode_tensor(x, "base64")
    assert encoded["shape"] == [3, 5] and encoded["dtype"] == dtype
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(encoded["base64"]), dtype=dtype).reshape(3, 5), x)


def test_limits_checked_before_allocating():
    with pytest.raises(PayloadTooLarge) as info:
        decode({"random": "normal", "shape": [10**6, 10**6]})
    assert info.value.extra["limit"] == "max_tensor_elements"
    with pytest.raises(PayloadTooLarge):
        decode({"base64": "AAAA", "shape": [2**62, 4]})
    with pytest.raises(PayloadTooLarge):
        decode([[0.0] * 11] * 1000)


def test_non_finite_strings_only():
    out = decode([["NaN", "Infinity", "-Infinity", 1.5]])
    assert np.isnan(out[0, 0]) and out[0, 1] == np.inf and out[0, 2] == -np.inf and out[0, 3] == 1.5
    for bad in (["nan", 1.0], ["1.5", 2.0], [True, "NaN"]):
        with pytest.raises(InvalidInput):
            decode(bad)


def test_booleans_nulls_and_objects_are_refused():
    for bad in ([True, False], [None, 1.0], [{"a": 1}], [[1.0], 2.0]):
        with pytest.raises((InvalidInput, ShapeMismatch)):
            decode(bad)


def test_depth_limit():
    deep = [1.0]
    for _ in range(70):
        deep = [deep]
    with pytest.raises(PayloadTooLarge, match="nested more than"):
        decode(deep, max_depth=64)


def test_list_encoding_keeps_ndarray_and_spells_non_finite():
    x = np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    assert encode_tensor(x, "list")["data"] == [1.0, "NaN", "Infinity", "-Infinity"]
    finite = np.arange(4, dtype=np.float32)
    assert isinstance(encode_tensor(finite, "list")["data"], np.ndarray)


def test_summary_is_torch_like():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert summarize(x) == {"min": 1.0, "max": 4.0, "mean": 2.5, "std": pytest.approx(np.std(x, ddof=1))}
    assert summarize(np.array([np.nan, 1.0]))["max"] == "NaN"


@pytest.mark.parametrize("value", [3, {"data": 3, "shape": []}, {"data": [3], "shape": []}, {"data": 3, "dtype": "int64"},
                                   {"base64": base64.b64encode(np.int64(3).tobytes()).decode(), "shape": [], "dtype": "int64"}])
def test_zero_dimensional_tensors(value):
    """A 0-d tensor (BatchNorm's num_batches_tracked): a bare number, or any form with shape []."""
    out = decode(value, dtypes=("float32", "float64", "int64"))
    assert out.shape == () and out == 3


@pytest.mark.parametrize("encoding", ["list", "base64"])
def test_zero_dimensional_round_trip(encoding):
    encoded = encode_tensor(np.array(7, dtype=np.int64), encoding)
    assert encoded["shape"] == [] and encoded["dtype"] == "int64"
    assert encoded.get("data", 7) == 7
    out = decode(encoded, dtypes=("float32", "float64", "int64"))
    assert out.shape == () and out.dtype == np.int64 and out == 7


def test_zero_dimensional_refusals():
    for bad in (True, {"data": True, "shape": []}, {"data": "7", "shape": []}):
        with pytest.raises(InvalidInput):
            decode(bad)
    with pytest.raises(ShapeMismatch):
        decode({"data": 3, "shape": [1]})
