"""Stacks on an empty batch: POST /v1/sequential against `nn.Sequential` on the same empty input,
and POST /v1/shapes, which plans a zero batch as torch runs it."""

import pytest
import torch

from tests.stacking import STACKS, torch_sequential
from tests.wire import assert_names, decode, post_json

CONV_BN_STACK = [
    {"kind": "conv2d", "config": {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 1}},
    {"kind": "batchnorm2d", "config": {"num_features": 4}},
    {"kind": "relu"},
    {"kind": "maxpool2d", "config": {"kernel_size": 2, "return_indices": True}},
    {"kind": "avgpool2d", "config": {"kernel_size": 1}},
    {"kind": "flatten"},
    {"kind": "linear", "config": {"in_features": 16, "out_features": 3}},
    {"kind": "batchnorm1d", "config": {"num_features": 3}},
]


def torch_layers(layers: list[dict]) -> list[dict]:
    """The oracle's configs: return_indices is ours to report, nn.Sequential cannot pass a tuple on."""
    return [{**layer, "config": {k: v for k, v in layer.get("config", {}).items() if k != "return_indices"}}
            for layer in layers]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_empty_batch_through_a_stack_equals_nn_sequential(client, backend, training):
    body = post_json(client, "/v1/sequential", {
        "layers": CONV_BN_STACK, "input": {"random": "normal", "shape": [0, 2, 4, 4]}, "seed": 3,
        "backend": backend, "compare": True, "training": training, "return_intermediates": True})
    model = torch_sequential(torch_layers(CONV_BN_STACK), seed=3).train(training)
    x = torch.empty(0, 2, 4, 4)
    shapes = []
    with torch.no_grad():
        for module in model:
            x = module(x)
            shapes.append(list(x.shape))
    assert body["output"]["shape"] == body["output_shape"] == [0, 3]
    assert [layer["output_shape"] for layer in body["layers"]] == shapes
    assert [layer["output"]["shape"] for layer in body["layers"]] == shapes
    for index, module in enumerate(model):
        for name, buffer in module.named_buffers():
            got = decode(body["layers"][index]["buffers"][name])
            torch.testing.assert_close(torch.from_numpy(got), buffer, check_dtype=False)
    tracked = [layer["buffers"]["num_batches_tracked"]["data"] for layer in body["layers"] if "buffers" in layer]
    assert tracked == [int(training)] * 2
    assert body["comparison"]["allclose"] and all(layer["comparison"]["allclose"] for layer in body["layers"])


@pytest.mark.parametrize("name", sorted(STACKS))
def test_every_documented_stack_runs_on_an_empty_batch(client, name):
    input_shape, layers = STACKS[name]
    body = post_json(client, "/v1/sequential", {"layers": layers, "compare": True, "backend": "reference",
                                                "input": {"data": [], "shape": [0, *input_shape[1:]]}})
    with torch.no_grad():
        expected = torch_sequential(torch_layers(layers))(torch.empty(0, *input_shape[1:]))
    assert body["output_shape"] == list(expected.shape) and body["comparison"]["allclose"]


def test_shapes_plans_an_empty_batch(client):
    input_shape, layers = STACKS["lenet"]
    full = post_json(client, "/v1/shapes", {"input_shape": list(input_shape), "layers": layers})
    empty = post_json(client, "/v1/shapes", {"input_shape": [0, *input_shape[1:]], "layers": layers})
    assert empty["output_shape"][0] == 0 and empty["output_shape"][1:] == full["output_shape"][1:]
    assert [row["output_shape"][1:] for row in empty["layers"]] == [row["output_shape"][1:] for row in full["layers"]]
    assert empty["totals"]["parameter_count"] == full["totals"]["parameter_count"]
    assert empty["totals"]["parameter_bytes"] == full["totals"]["parameter_bytes"]
    assert empty["totals"]["macs"] == empty["totals"]["input_bytes"] == empty["totals"]["output_bytes"] == 0
    assert all(row["output_bytes"] == 0 and row["macs"] == 0 for row in empty["layers"])


@pytest.mark.parametrize("path", ["/v1/shapes", "/v1/sequential"])
def test_a_zero_size_torch_refuses_names_the_layer(client, path):
    """An empty batch reaches the pool, whose zero width torch refuses (max_pool2d: "Expected 3D or 4D
    (batch mode) tensor with optional 0 dim batch size"): the error names layers[1]."""
    layers = [{"kind": "relu"}, {"kind": "maxpool2d", "config": {"kernel_size": 1}}]
    shape = [0, 1, 3, 0]
    with pytest.raises(RuntimeError):
        torch_sequential(layers)(torch.empty(shape))
    body = {"input_shape": shape} if path == "/v1/shapes" else {"input": {"data": [], "shape": shape}}
    error = post_json(client, path, {**body, "layers": layers}, 422)
    assert_names(error, "layers[1]", ["layers[1] (MaxPool2d)", "zero width"])
    assert error["layer"] == 1 and error["actual"] == shape
