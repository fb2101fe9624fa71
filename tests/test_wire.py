"""tests/wire.py itself: the helpers every route test reads responses with must not hide anything."""

import base64

import numpy as np
import pytest

from tests.wire import as_base64, decode


def test_base64_round_trip_is_bit_exact_and_writable():
    x = np.array([[1.5, -0.0, np.inf], [np.nan, 3e-45, -2.0]], dtype=np.float32)
    out = decode(as_base64(x))
    assert out.dtype == np.float32 and out.shape == (2, 3) and out.flags.writeable
    np.testing.assert_array_equal(out.view(np.uint32), x.view(np.uint32))


def test_list_data_with_non_finite_strings():
    out = decode({"shape": [2, 2], "dtype": "float64", "data": [["NaN", 1.0], ["Infinity", "-Infinity"]]})
    np.testing.assert_array_equal(out, [[np.nan, 1.0], [np.inf, -np.inf]])
    assert out.dtype == np.float64


def test_zero_dimensional_tensors():
    assert decode({"shape": [], "dtype": "int64", "data": 7}) == np.int64(7)
    assert decode({"shape": [], "dtype": "int64", "data": 7}).shape == ()
    assert np.isnan(decode({"shape": [], "dtype": "float32", "data": "NaN"}))
    scalar = decode({"shape": [], "dtype": "int64", "base64": base64.b64encode(np.int64(3).tobytes()).decode()})
    assert scalar.shape == () and scalar == 3


def test_anything_else_is_refused():
    with pytest.raises(KeyError):  # only the three names travel as strings
        decode({"shape": [2], "dtype": "float32", "data": ["1.5", 2.0]})
    with pytest.raises(ValueError):  # the data must fill the shape exactly
        decode({"shape": [3], "dtype": "float32", "data": [1.0, 2.0]})
    with pytest.raises(ValueError):
        decode({"shape": [3], "dtype": "float32", "base64": base64.b64encode(b"\0" * 8).decode()})
