"""The tensor codec on its own: every form in, every encoding out, errors before allocation."""

import base64
import re

import numpy as np
import pytest

from app.backends.registry import draw_random
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


# -- empty tensors (a batch of 0): every form in, every encoding out ---------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [
    {"data": [], "shape": [0, 3]},
    {"data": [[], []], "shape": [2, 0, 3]},  # torch.empty(2, 0, 3).tolist(): nested down to the first zero
    {"data": [], "shape": [2, 0, 3]},
    {"base64": "", "shape": [0, 3]},
    {"bytes": b"", "shape": [0, 3]},
    {"random": "normal", "shape": [0, 3], "seed": 1},
], ids=["data", "nested-data", "flat-data", "base64", "bytes", "random"])
def test_empty_tensors_decode_in_every_form(value, dtype):
    out = decode({**value, "dtype": dtype}, draw=draw_random)  # torch's draw: torch.randn(0, 3) is empty too
    assert out.shape == tuple(value["shape"]) and out.size == 0 and out.dtype == dtype


def test_empty_nested_lists_have_the_shape_numpy_reads():
    assert decode([]).shape == (0,)
    assert decode([[], []]).shape == (2, 0)


@pytest.mark.parametrize("value, fragment", [
    ({"data": [[], []], "shape": [3, 0]}, "nested as [2, 0]"),  # the leading size is there to read
    ({"data": [[]], "shape": [0, 1]}, "nested as [1, 0]"),
    ({"data": [1.0], "shape": [0, 3]}, "has 1 values"),
    ({"base64": "AAAA", "shape": [0, 3]}, "0 bytes"),
])
def test_empty_shapes_still_check_the_values(value, fragment):
    with pytest.raises(ShapeMismatch, match=re.escape(fragment)):
        decode(value)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 3), (0,)])
def test_empty_tensors_encode_with_their_shape(shape):
    x = np.empty(shape, np.float32)
    assert encode_tensor(x, "base64") == {"shape": list(shape), "dtype": "float32", "base64": ""}
    listed = encode_tensor(x, "list")
    assert listed["shape"] == list(shape) and np.asarray(listed["data"]).size == 0
    assert encode_tensor(x, "none")["summary"] == {"min": "NaN", "max": "NaN", "mean": "NaN", "std": "NaN"}
    assert summarize(x) == encode_tensor(x, "none")["summary"]
