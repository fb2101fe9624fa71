"""POST /v1/sequential end to end against `torch.manual_seed(seed); nn.Sequential(...)` on both backends."""

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from app.api.routes.sequential import EXAMPLES
from tests.stacking import STACKS, documented_stack_route, torch_sequential
from tests.wire import assert_names, decode, post_json

MLP = STACKS["mlp"][1]


def run(client, body, status=200):
    return post_json(client, "/v1/sequential", body, status)


def small(name):
    input_shape, layers = STACKS[name]
    return (min(input_shape[0], 3), *input_shape[1:]), layers


CASES = [  # (stack, backend, training, dtype, encoding)
    ("mlp", "torch", True, "float32", "list"),
    ("mlp", "reference", False, "float64", "base64"),
    ("flatten_mlp", "reference", True, "float32", "base64"),
    ("flatten_mlp", "torch", True, "float64", "list"),
    ("batchnorm_mlp", "torch", True, "float32", "list"),
    ("batchnorm_mlp", "reference", True, "float64", "base64"),
    ("batchnorm_mlp", "reference", False, "float32", "base64"),
    ("lenet", "torch", True, "float32", "base64"),
    ("lenet", "reference", True, "float64", "base64"),
    ("notebook_conv_then_pool", "reference", True, "float32", "base64"),
    ("conv1d_stack", "torch", True, "float64", "base64"),
    ("conv1d_stack", "reference", False, "float32", "list"),
    ("conv3d_stack", "reference", True, "float64", "base64"),
    ("conv3d_stack", "torch", False, "float32", "base64"),
    ("conv_bn_lenet", "reference", True, "float32", "base64"),
    ("conv_bn_lenet", "torch", False, "float64", "base64"),
]


@pytest.mark.parametrize("name,backend,training,dtype,encoding", CASES)
def test_stack_equals_nn_sequential(client, name, backend, training, dtype, encoding):
    input_shape, layers = small(name)
    seed, input_seed = 7, 3
    body = run(client, {"layers": layers, "input": {"random": "normal", "shape": list(input_shape), "seed": input_seed,
                                                    "dtype": dtype},
                        "seed": seed, "backend": backend, "training": training, "encoding": encoding,
                        "return_intermediates": True, "compare": True})
    torch_dtype = getattr(torch, dtype)
    model = torch_sequential(layers, seed=seed).to(torch_dtype).train(training)
    initial = [{k: v.clone() for k, v in m.state_dict().items()} for m in model]
    torch.manual_seed(input_seed)
    x = torch.randn(input_shape, dtype=torch_dtype)

    assert body["backend"] == backend and body["input_shape"] == list(input_shape)
    assert len(body["layers"]) == len(layers)
    with torch.no_grad():
        for index, (module, row) in enumerate(zip(model, body["layers"])):
            # seeded initialization: bit-equal to torch's, parameters as the module holds them
            for name_, tensor in row["parameters"].items():
                np.testing.assert_array_equal(decode(tensor), initial[index][name_].numpy())
            assert set(row["parameters"]) == {k for k, _ in module.named_parameters()}
            assert row["parameter_count"] == sum(p.numel() for p in module.parameters())
            x = module(x)
            assert row["output_shape"] == list(x.shape) and row["index"] == index and row["kind"] == layers[index]["kind"]
            torch.testing.assert_close(torch.from_numpy(decode(row["output"])), x)
            if isinstance(module, _BatchNorm):
                for key, buffer in module.named_buffers():
                    torch.testing.assert_close(torch.from_numpy(decode(row["buffers"][key])), buffer)
            assert row["comparison"]["allclose"] is True, (index, row["comparison"])
    assert body["output_shape"] == list(x.shape)
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), x)
    assert body["comparison"]["all_layers_allclose"] is True and body["comparison"]["backend"] != backend
    assert body["parameter_count"] == sum(p.numel() for p in model.parameters())


def test_given_parameters_mix_with_seeded_ones(client):
    weight = [[0.5, -1.0, 2.0, 0.0]] * 8
    bias = [0.1] * 8
    layers = [{**MLP[0], "parameters": {"weight": weight, "bias": bias}}, *MLP[1:]]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    body = run(client, {"layers": layers, "input": x.tolist(), "seed": 11})
    model = torch_sequential(MLP, seed=11)  # the given layer still draws its init, as nn.Sequential would
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(weight))
        model[0].bias.copy_(torch.tensor(bias))
        expected = model(torch.from_numpy(x))
    np.testing.assert_array_equal(decode(body["layers"][0]["parameters"]["weight"]), np.array(weight, dtype=np.float32))
    np.testing.assert_array_equal(decode(body["layers"][2]["parameters"]["weight"]), model[2].weight.detach().numpy())
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), expected)


def test_intermediates_only_when_asked(client):
    body = run(client, {"layers": MLP, "input": {"random": "uniform", "shape": [3, 4]}})
    assert all("output" not in row and "comparison" not in row for row in body["layers"])
    assert "comparison" not in body and body["output"]["shape"] == [3, 1]
    assert [row["output_shape"] for row in body["layers"]] == [[3, 8], [3, 8], [3, 1]]
    body = run(client, {"layers": MLP, "input": {"random": "uniform", "shape": [3, 4]}, "encoding": "none"})
    assert set(body["output"]) == {"shape", "dtype", "summary"}


def test_relu_flatten_linear_on_non_finite_values(client):
    layers = [{"kind": "relu"}, {"kind": "flatten"},
              {"kind": "linear", "config": {"in_features": 4, "out_features": 1, "bias": False},
               "parameters": {"weight": [[1.0, 1.0, 0.0, 0.0]]}}]
    body = run(client, {"layers": layers, "input": [[["-Infinity", 2.0], [5.0, 1.0]], [["NaN", 1.0], [0.0, 0.0]]],
                        "return_intermediates": True, "compare": True})
    assert body["layers"][0]["output"]["data"] == [[[0.0, 2.0], [5.0, 1.0]], [["NaN", 1.0], [0.0, 0.0]]]
    assert body["output"]["data"] == [[2.0], ["NaN"]]
    assert body["comparison"]["all_layers_allclose"] is True


def test_maxpool_indices_are_reported_and_its_output_passed_on(client):
    layers = [{"kind": "maxpool2d", "config": {"kernel_size": 2, "return_indices": True}}, {"kind": "flatten"}]
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    body = run(client, {"layers": layers, "input": x.tolist(), "backend": "reference", "compare": True})
    out, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(decode(body["layers"][0]["indices"]), indices.numpy())
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), out.flatten(1))
    assert body["comparison"]["all_layers_allclose"] is True


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_swagger_examples_answer(client, name):
    value = EXAMPLES[name]["value"]
    body = run(client, value)
    assert body.get("comparison", {"all_layers_allclose": True})["all_layers_allclose"] is True


def test_service_leaves_torch_global_rng_alone(client):
    state = torch.random.get_rng_state()
    run(client, {"layers": MLP, "input": {"random": "normal", "shape": [2, 4]}, "seed": 5})
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("layers,field,words", [
    ([*MLP[:2], {"kind": "linear", "config": {"in_features": 3, "out_features": 1}}], "layers[2]", ["in_features is 3"]),
    ([{**MLP[0], "parameters": {"weight": [[1.0, 2.0]]}}], "layers[0].parameters.weight", ["[1, 2]", "[8, 4]"]),
    ([{**MLP[0], "parameters": {"running_mean": [1.0]}}], "layers[0].parameters.running_mean", ["weight"]),
    ([{"kind": "relu", "parameters": {"weight": [1.0]}}], "layers[0].parameters.weight", ["none"]),
    ([MLP[0], {"kind": "flatten", "config": {"end_dim": 3}}], "layers[1].config.end_dim", ["[-2, 1]"]),
    ([{"kind": "relu", "config": {"inplace": 1}}], "layers[0].config.inplace", ["boolean"]),
])
def test_broken_stacks_are_422_naming_the_layer(client, layers, field, words):
    body = run(client, {"layers": layers, "input": [[1.0, 2.0, 3.0, 4.0]]}, 422)
    assert_names(body, field, words)


def test_batchnorm_training_batch_of_one_names_the_layer(client):
    layers = [MLP[0], {"kind": "batchnorm1d", "config": {"num_features": 8}}]
    body = run(client, {"layers": layers, "input": [[1.0, 2.0, 3.0, 4.0]]}, 422)
    assert body["field"].startswith("layers[1]") and "1 value per channel" in body["detail"]
    run(client, {"layers": layers, "input": [[1.0, 2.0, 3.0, 4.0]], "training": False})


def test_limits_come_before_computing(make_client):
    small_app = make_client(max_macs=100, max_parameter_elements=50)
    body = run(small_app, {"layers": MLP, "input": {"random": "normal", "shape": [3, 4]}}, 413)
    # work: 3 rows x (4x8 + 8x1) multiplications + 3x8 ReLU outputs
    assert body["field"] == "layers" and body["limit"] == "max_macs" and body["value"] == 3 * (32 + 8) + 24
    big = [{"kind": "linear", "config": {"in_features": 4, "out_features": 13}}]
    body = run(small_app, {"layers": big, "input": {"random": "normal", "shape": [1, 4]}}, 413)
    assert body["field"] == "layers" and body["limit"] == "max_parameter_elements" and body["value"] == 65


def test_device_is_checked_like_a_single_layer(client):
    body = run(client, {"layers": MLP, "input": [[1.0] * 4], "device": "tpu"}, 422)
    assert body["field"] == "device"
    body = run(client, {"layers": MLP, "input": [[1.0] * 4], "device": "cuda", "backend": "reference"}, 422)
    assert body["field"] == "device" and "reference" in body["detail"]
    assert run(client, {"layers": MLP, "input": [[1.0] * 4]})["device"] == "cpu"


def test_intermediates_count_together_against_the_tensor_limit(make_client):
    small_app = make_client(max_tensor_elements=59)
    layers = [{"kind": "relu"}] * 4
    body = {"layers": layers, "input": {"random": "normal", "shape": [3, 5]}}
    assert run(small_app, body)["output_shape"] == [3, 5]
    error = run(small_app, {**body, "return_intermediates": True}, 413)
    assert error["field"] == "return_intermediates" and error["value"] == 4 * 15
    assert run(small_app, {**body, "layers": layers[:3], "return_intermediates": True})["layers"][2]["output"]


def test_maxpool_indices_count_against_the_tensor_limit(make_client):
    small_app = make_client(max_tensor_elements=40)
    pool = {"kind": "maxpool2d", "config": {"kernel_size": 1, "return_indices": True}}
    body = {"layers": [pool] * 2, "input": {"random": "normal", "shape": [1, 1, 4, 4]}}
    assert len(run(small_app, body)["layers"][1]["indices"]["data"][0][0]) == 4
    error = run(small_app, {**body, "layers": [pool] * 3}, 413)
    assert error["limit"] == "max_tensor_elements" and error["value"] == 48


def test_unknown_fields_and_missing_input(client):
    body = run(client, {"layers": MLP}, 422)
    assert body["field"] == "input"
    body = run(client, {"layers": MLP, "input": [[1.0] * 4], "intermediates": True}, 422)
    assert body["field"] == "intermediates"


def test_openapi_documents_sequential(client):
    spec = documented_stack_route(client, "/v1/sequential", "SequentialRequest", EXAMPLES)
    layer = spec["components"]["schemas"]["LinearSequentialLayer"]
    assert {"kind", "config", "parameters"} <= set(layer["properties"])

