"""POST /v1/layers/relu and /v1/layers/flatten against torch.nn.ReLU and torch.nn.Flatten, on both backends."""

import numpy as np
import pytest
import torch

from app.backends.reference.activation import flatten, relu
from tests.wire import decode, listed_layers, post_layer


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4, 5), (1, 2, 1, 3, 2, 2)])  # (): a 0-d tensor stays 0-d
def test_relu_matches_torch(client, backend, dtype, shape):
    x = torch.randn(shape, dtype=getattr(torch, dtype), generator=torch.Generator().manual_seed(len(shape)))
    body = post_layer(client, "relu", {"config": {}, "input": {"data": x.tolist(), "dtype": dtype}, "backend": backend,
                                        "encoding": "base64", "compare": True})
    expected = torch.nn.ReLU()(x)
    out = decode(body["output"])
    assert out.dtype == np.dtype(dtype) and body["output_shape"] == list(shape)
    np.testing.assert_array_equal(out, expected.numpy())  # exact: max(0, x) does no arithmetic
    assert body["parameters"] == {} and body["parameter_count"] == 0 and "formula" not in body
    assert body["comparison"]["allclose"] is True and body["comparison"]["max_abs_diff"] == 0.0


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_relu_non_finite_and_inplace(client, backend):
    values = ["NaN", "-Infinity", "Infinity", -0.0, -1e-30, 2.5]
    body = post_layer(client, "relu", {"config": {"inplace": True}, "input": values, "backend": backend, "compare": True})
    assert body["output"]["data"] == ["NaN", 0.0, "Infinity", 0.0, 0.0, 2.5]
    assert body["config"] == {"inplace": True} and body["comparison"]["allclose"] is True


SHAPES = [(), (3,), (2, 3), (2, 3, 4), (2, 1, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_flatten_over_every_start_and_end_dim(client, shape, backend):
    """Every (start_dim, end_dim) in and just outside the valid range: accepted exactly when torch accepts."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    rank = max(len(shape), 1)
    for start in range(-rank - 1, rank + 1):
        for end in range(-rank - 1, rank + 1):
            config = {"start_dim": start, "end_dim": end}
            try:
                expected = torch.nn.Flatten(start, end)(x)
            except (IndexError, RuntimeError):
                expected = None
            body = {"config": config, "input": {"random": "normal", "shape": list(shape), "seed": 1},
                    "backend": backend, "compare": True}
            if expected is None:
                error = post_layer(client, "flatten", body, 422)
                assert error["field"] in ("config.start_dim", "config.end_dim"), error
                assert str(list(shape)) in error["detail"]
                continue
            out = post_layer(client, "flatten", body)
            assert out["output_shape"] == list(expected.shape), config
            np.testing.assert_array_equal(decode(out["output"]), expected.numpy())
            assert out["comparison"]["allclose"] is True and len(out["formula"]) == 1


def test_flatten_defaults_and_formula(client):
    body = post_layer(client, "flatten", {"config": {}, "input": {"random": "normal", "shape": [2, 16, 5, 5]}, "encoding": "none"})
    assert body["config"] == {"start_dim": 1, "end_dim": -1} and body["output_shape"] == [2, 400]
    assert body["formula"] == ["(2, 16, 5, 5) -> (2, 400): dims 1..3 merged, 16*5*5 = 400"]


def test_flatten_unbatched_vector_is_rejected_like_torch(client):
    error = post_layer(client, "flatten", {"config": {}, "input": [1.0, 2.0]}, 422)
    assert error["field"] == "config.start_dim" and "[-1, 0]" in error["detail"]


def test_reference_functions_directly():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 12
    np.testing.assert_array_equal(relu(x), torch.relu(torch.from_numpy(x)).numpy())
    assert relu(x).dtype == x.dtype
    assert flatten(x, 0, 1).shape == (6, 4) and np.shares_memory(flatten(x, 0, 1), x)
    assert flatten(np.array(3.0), 0, 0).shape == (1,)


def test_layers_lists_the_glue_kinds(client):
    kinds = listed_layers(client)
    assert kinds["relu"]["torch"] == "torch.nn.ReLU" and kinds["relu"]["defaults"] == {"inplace": False}
    assert kinds["flatten"]["defaults"] == {"start_dim": 1, "end_dim": -1}
