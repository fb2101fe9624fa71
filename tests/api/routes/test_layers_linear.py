"""POST /v1/layers/linear end to end (in-process ASGI app) against torch.nn.Linear."""

import numpy as np
import pytest
import torch

from app.layers.linear import NOTEBOOK_INPUT
from tests.wire import as_base64, decode, listed_layers, post_layer

NOTEBOOK_WEIGHT = [[-0.2009, -0.0747, -0.2266, 0.2618]]
NOTEBOOK_BIAS = [-0.4708]


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_notebook_cell_equals_mm_add(client, backend):
    body = post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 1}, "input": NOTEBOOK_INPUT,
                                         "parameters": {"weight": NOTEBOOK_WEIGHT, "bias": NOTEBOOK_BIAS}, "backend": backend})
    inputs = torch.tensor(NOTEBOOK_INPUT)
    expected = torch.mm(inputs, torch.tensor(NOTEBOOK_WEIGHT).T).add(torch.tensor(NOTEBOOK_BIAS))
    assert body["output_shape"] == [10, 1] and body["input_shape"] == [10, 4]
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), expected)
    assert body["parameters"]["weight"]["shape"] == [1, 4] and body["parameter_count"] == 5
    assert body["config"] == {"in_features": 4, "out_features": 1, "bias": True}
    assert body["backend"] == backend and body["kind"] == "linear"


def test_notebook_bias_false_uses_seeded_weight(client):
    body = post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 1, "bias": False}, "input": NOTEBOOK_INPUT, "seed": 3})
    torch.manual_seed(3)
    fc1 = torch.nn.Linear(4, 1, bias=False)
    expected = torch.mm(torch.tensor(NOTEBOOK_INPUT), fc1.weight.T).detach()
    assert set(body["parameters"]) == {"weight"} and body["parameter_count"] == 4
    np.testing.assert_array_equal(decode(body["parameters"]["weight"]), fc1.weight.detach().numpy())
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), expected)


def _input_form(form: str, x: np.ndarray, seed: int):
    dtype = str(x.dtype)
    if form == "list":
        return x.tolist()
    if form == "nested":
        return {"data": x.tolist(), "shape": list(x.shape), "dtype": dtype}
    if form == "flat":
        return {"data": x.ravel().tolist(), "shape": list(x.shape), "dtype": dtype}
    if form == "base64":
        return as_base64(x)
    return {"random": "normal", "shape": list(x.shape), "seed": seed, "dtype": dtype}


CASES = [  # (leading dims, in, out, bias, dtype, form, encoding, backend)
    ((), 3, 2, True, "float32", "list", "list", "torch"),
    ((5,), 4, 1, False, "float32", "nested", "base64", "reference"),
    ((2, 3), 7, 5, True, "float64", "flat", "list", "torch"),
    ((2, 1, 3), 2, 9, True, "float64", "base64", "base64", "reference"),
    ((6,), 5, 3, True, "float32", "random", "none", "torch"),
    ((4, 2), 8, 8, False, "float64", "random", "base64", "reference"),
    ((3,), 1, 1, True, "float32", "base64", "list", "reference"),
    ((9,), 6, 2, False, "float64", "nested", "none", "reference"),
]


@pytest.mark.parametrize("lead,n_in,n_out,bias,dtype,form,encoding,backend", CASES)
def test_random_configs_match_torch(client, lead, n_in, n_out, bias, dtype, form, encoding, backend):
    seed = len(lead) + n_in * 7 + n_out
    shape = (*lead, n_in)
    torch_dtype = getattr(torch, dtype)
    if form == "random":
        torch.manual_seed(seed)
        x = torch.randn(*shape, dtype=torch_dtype)
    else:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch_dtype)
    body = post_layer(client, "linear", {"config": {"in_features": n_in, "out_features": n_out, "bias": bias},
                                         "input": _input_form(form, x.numpy(), seed), "seed": seed,
                                         "backend": backend, "encoding": encoding, "compare": True})
    torch.manual_seed(seed)
    module = torch.nn.Linear(n_in, n_out, bias=bias).to(torch_dtype)
    expected = module(x).detach()
    assert body["output_shape"] == list(expected.shape)
    assert body["output"]["dtype"] == dtype
    assert body["comparison"]["allclose"] is True and body["comparison"]["backend"] != backend
    if encoding == "none":
        summary = body["output"]["summary"]
        assert summary["min"] == pytest.approx(expected.min().item(), rel=1e-5, abs=1e-6)
        assert summary["max"] == pytest.approx(expected.max().item(), rel=1e-5, abs=1e-6)
        assert summary["mean"] == pytest.approx(expected.mean().item(), rel=1e-4, abs=1e-5)
        assert "data" not in body["output"] and "base64" not in body["output"]
        return
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), expected)
    np.testing.assert_array_equal(decode(body["parameters"]["weight"]), module.weight.detach().numpy())


def test_torch_output_round_trips_bit_exact_in_both_encodings(client):
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    request = {"config": {"in_features": 5, "out_features": 3}, "input": x.tolist(), "seed": 11}
    torch.manual_seed(11)
    module = torch.nn.Linear(5, 3)
    x32 = torch.tensor(x.tolist(), dtype=torch.float32)  # the same float32 values the service decoded
    expected = module(x32).detach().numpy()
    for encoding in ("list", "base64"):
        out = decode(post_layer(client, "linear", {**request, "encoding": encoding})["output"])
        np.testing.assert_array_equal(out, expected)  # bit-exact, not merely close


def test_random_input_equals_torch_randn_and_rand(client):
    for distribution, draw in (("normal", torch.randn), ("uniform", torch.rand)):
        body = post_layer(client, "linear", {"config": {"in_features": 3, "out_features": 3},
                                             "input": {"random": distribution, "shape": [4, 3], "seed": 42},
                                             "parameters": {"weight": np.eye(3).tolist(), "bias": [0, 0, 0]}})
        torch.manual_seed(42)
        np.testing.assert_array_equal(decode(body["output"]), draw(4, 3).numpy())


def test_seeded_parameters_equal_manual_seed_then_build(client):
    for seed in (0, 1, 12345):
        body = post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 2}, "input": [[0, 0, 0, 0]], "seed": seed})
        torch.manual_seed(seed)
        fc = torch.nn.Linear(4, 2)
        np.testing.assert_array_equal(decode(body["parameters"]["weight"]), fc.weight.detach().numpy())
        np.testing.assert_array_equal(decode(body["parameters"]["bias"]), fc.bias.detach().numpy())


def test_service_leaves_torch_global_rng_alone(client):
    state = torch.random.get_rng_state()
    post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 2}, "input": {"random": "normal", "shape": [2, 4]}, "seed": 5})
    assert torch.equal(state, torch.random.get_rng_state())


def test_float64_parameters_are_cast_like_module_double(client):
    x = np.random.default_rng(0).standard_normal((3, 4))
    body = post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 2}, "input": {"data": x.tolist(), "dtype": "float64"}, "seed": 2})
    torch.manual_seed(2)
    module = torch.nn.Linear(4, 2).double()
    assert body["output"]["dtype"] == "float64"
    np.testing.assert_allclose(decode(body["output"]), module(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)


def test_non_finite_values_in_and_out(client):
    body = post_layer(client, "linear", {"config": {"in_features": 2, "out_features": 1, "bias": False},
                                         "input": [["NaN", 1.0], ["Infinity", 0.0], [1.0, 2.0]],
                                         "parameters": {"weight": [[1.0, 1.0]]}})
    assert body["output"]["data"] == [["NaN"], ["Infinity"], [3.0]]
    body = post_layer(client, "linear", {"config": {"in_features": 1, "out_features": 1, "bias": False}, "input": [["-Infinity"]],
                                         "parameters": {"weight": [[2.0]]}, "encoding": "none", "compare": True})
    assert body["output"]["summary"]["min"] == "-Infinity"
    assert body["comparison"]["allclose"] is True


def test_compare_reports_differences_with_torch_tolerances(client):
    body = post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 3}, "input": NOTEBOOK_INPUT, "compare": True,
                                         "backend": "reference"})
    comparison = body["comparison"]
    assert comparison["backend"] == "torch"
    assert comparison["rtol"] == 1.3e-6 and comparison["atol"] == 1e-5
    assert 0 <= comparison["max_abs_diff"] < 1e-5 and comparison["allclose"] is True


def test_layers_lists_linear_with_schema_and_defaults(client):
    kinds = listed_layers(client)
    linear = kinds["linear"]
    assert linear["defaults"] == {"bias": True}
    assert linear["torch"] == "torch.nn.Linear" and linear["path"] == "/v1/layers/linear"
    assert set(linear["config_schema"]["properties"]) == {"in_features", "out_features", "bias"}


def test_bare_list_parameters_take_the_input_dtype(client):
    """float64 parameters sent as bare lists keep their precision (and their range) with a float64 input."""
    weight = [[1.0000000001, 1e300]]
    body = post_layer(client, "linear", {"config": {"in_features": 2, "out_features": 1, "bias": False},
                         "input": {"data": [[1.0, 1e-300]], "dtype": "float64"}, "parameters": {"weight": weight}})
    assert body["parameters"]["weight"]["dtype"] == "float64"
    assert decode(body["parameters"]["weight"]).tolist() == weight
    assert decode(body["output"])[0, 0] == 1.0000000001 + 1.0


def test_non_finite_differences_are_reported_as_json_strings():
    """An infinite difference (one backend inf where the other is finite or NaN) is "Infinity", as in
    tensors and as the response schema says: orjson would write a bare inf as null."""
    from app.backends.base import ForwardResult
    from app.stacks.run import compare_results

    primary = ForwardResult(np.array([1.0, np.inf, np.nan], np.float32))
    other = ForwardResult(np.array([1.0, 2.0, np.nan], np.float32), buffers={})
    comparison = compare_results(primary, other, "reference", "float32")
    assert comparison["max_abs_diff"] == "Infinity" and comparison["max_rel_diff"] == "Infinity"
    assert comparison["allclose"] is False
    same = compare_results(primary, ForwardResult(primary.output.copy()), "reference", "float32")
    assert same["max_abs_diff"] == 0.0 and same["allclose"] is True  # NaN == NaN and inf == inf count as equal
