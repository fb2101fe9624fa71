"""POST /v1/layers/conv1d|conv2d|conv3d end to end (in-process ASGI app) against torch.nn.Conv1d/2d/3d."""

import numpy as np
import pytest
import torch
import torchinfo

from app.layers.registry import LAYERS
from app.stacks.plan import parse_config
from tests.wire import as_base64, assert_names, decode, listed_layers, post_layer, random_input

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")]


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_notebook_conv2d_cell(client, backend):
    """conv2d = nn.Conv2d(3, 16, 3, stride=2); conv2d(torch.rand(100, 3, 120, 160)).shape == (100, 16, 59, 79)."""
    body = post_layer(client, "conv2d", {
        "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2},
        "input": {"random": "uniform", "shape": [100, 3, 120, 160], "seed": 0},
        "backend": backend, "compare": True, "encoding": "none"})
    assert body["input_shape"] == [100, 3, 120, 160]
    assert body["output_shape"] == [100, 16, 59, 79] == body["output"]["shape"]
    assert body["parameters"]["weight"]["shape"] == [16, 3, 3, 3] and body["parameters"]["bias"]["shape"] == [16]
    assert body["parameter_count"] == 16 * 3 * 3 * 3 + 16
    assert body["formula"] == ["H_out = floor((120 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 59",
                               "W_out = floor((160 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 79"]
    assert body["config"] == {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 0,
                              "dilation": 1, "groups": 1, "bias": True, "padding_mode": "zeros"}
    assert body["comparison"]["allclose"] is True
    # The same cell run locally: torch.manual_seed(0) before the draw and before building the layer.
    torch.manual_seed(0)
    inputs = torch.rand(100, 3, 120, 160)
    torch.manual_seed(0)
    with torch.no_grad():
        expected = torch.nn.Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=2)(inputs).double()
    summary = body["output"]["summary"]
    for stat, value in [("min", expected.min()), ("max", expected.max()), ("mean", expected.mean()), ("std", expected.std())]:
        assert summary[stat] == pytest.approx(float(value), rel=1e-5, abs=1e-6), stat


def test_seeded_parameters_equal_torch_manual_seed(client):
    x = torch.randn(2, 4, 5, 6)
    body = post_layer(client, "conv2d", {"config": {"in_channels": 4, "out_channels": 6, "kernel_size": [3, 2], "groups": 2},
                                         "input": x.tolist(), "seed": 7})
    torch.manual_seed(7)
    module = torch.nn.Conv2d(4, 6, (3, 2), groups=2)
    np.testing.assert_array_equal(decode(body["parameters"]["weight"]), module.weight.detach().numpy())
    np.testing.assert_array_equal(decode(body["parameters"]["bias"]), module.bias.detach().numpy())
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), module(x).detach())


CASES = [  # (kind, config, input shape, dtype, backend, encoding)
    ("conv1d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 2, "padding_mode": "reflect"}, (2, 2, 6), "float32", "torch", "list"),
    ("conv1d", {"in_channels": 4, "out_channels": 2, "kernel_size": 4, "padding": "same", "dilation": 2, "groups": 2}, (4, 9), "float64", "reference", "base64"),
    ("conv2d", {"in_channels": 3, "out_channels": 4, "kernel_size": [2, 3], "stride": [2, 1], "padding": [1, 2], "padding_mode": "circular", "bias": False}, (1, 3, 5, 5), "float32", "reference", "list"),
    ("conv2d", {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": "valid", "dilation": [1, 2], "padding_mode": "replicate"}, (2, 7, 8), "float64", "torch", "base64"),
    ("conv2d", {"in_channels": 6, "out_channels": 3, "kernel_size": 1, "groups": 3}, (2, 6, 3, 3), "float32", "reference", "base64"),
    ("conv3d", {"in_channels": 2, "out_channels": 2, "kernel_size": [1, 2, 3], "padding": 1, "padding_mode": "reflect"}, (1, 2, 3, 4, 5), "float32", "torch", "list"),
    ("conv3d", {"in_channels": 1, "out_channels": 2, "kernel_size": 2, "stride": 2, "dilation": 1}, (1, 4, 4, 5), "float64", "reference", "list"),
]


@pytest.mark.parametrize("kind, config, shape, dtype, backend, encoding", CASES)
def test_both_backends_equal_torch(client, kind, config, shape, dtype, backend, encoding):
    gen = torch.Generator().manual_seed(len(shape) * 100 + len(config))
    torch_dtype = getattr(torch, dtype)
    module = getattr(torch.nn, LAYERS[kind].torch_name)(**config, dtype=torch_dtype)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch_dtype))
        x = torch.randn(shape, generator=gen, dtype=torch_dtype)
        expected = module(x)
    parameters = {name: as_base64(value.numpy()) for name, value in module.state_dict().items()}
    body = post_layer(client, kind, {"config": config, "input": as_base64(x.numpy()), "parameters": parameters,
                                     "backend": backend, "compare": True, "encoding": encoding})
    assert body["output_shape"] == list(expected.shape) and body["output"]["dtype"] == dtype
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), expected)
    assert body["comparison"]["backend"] == ("reference" if backend == "torch" else "torch")
    assert body["comparison"]["allclose"] is True, body["comparison"]
    assert len(body["formula"]) == int(kind[-2])


ERRORS = [  # (kind, config, input, field, words in detail)
    ("conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 4}, random_input(4, 5, 5), "config.groups",
     "out_channels=6 is not divisible by groups=4"),
    ("conv2d", {"in_channels": 3, "out_channels": 3, "kernel_size": 3, "groups": 2}, random_input(3, 5, 5), "config.groups",
     "in_channels=3 is not divisible by groups=2"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "stride": 2, "padding": "same"}, random_input(1, 5, 5),
     "config.padding", 'padding="same" needs stride 1'),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 5}, random_input(1, 1, 3, 7), "input",
     "output height would be -1, less than 1: the kernel spans 5 (dilation*(kernel_size-1) + 1) but the padded input height is 3: "
     "H_out = floor((3 + 2*0 - 1*(5-1) - 1) / 1) + 1 = -1"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "dilation": 3}, random_input(1, 6), "input",
     "output length would be 0"),
    ("conv2d", {"in_channels": 3, "out_channels": 1, "kernel_size": 3}, random_input(2, 4, 5, 5), "input",
     "input has 4 channels (dimension 1 of shape [2, 4, 5, 5]); config.in_channels is 3"),
    ("conv2d", {"in_channels": 3, "out_channels": 1, "kernel_size": 3}, random_input(3, 5), "input",
     "Conv2d expects a 3-D (C, H_in, W_in) unbatched or 4-D (N, C, H_in, W_in) batched input; got a 2-D input"),
    ("conv3d", {"in_channels": 1, "out_channels": 1, "kernel_size": 1}, random_input(1, 1, 1, 1, 1, 1), "input", "got a 6-D input"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 3, "padding_mode": "reflect"}, random_input(1, 3),
     "input", "padding_mode='reflect' needs padding smaller than the input length: padding is (3, 3), input length is 3"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": [4, 0], "padding_mode": "circular"},
     random_input(1, 3, 3), "input", "padding_mode='circular' needs padding at most the input height"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": [3, 3, 3]}, random_input(1, 5, 5), "config.kernel_size",
     "must be a positive integer or a list of 2 positive integers, got [3, 3, 3]"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": True}, random_input(1, 5, 5), "config.kernel_size", "got True"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 0}, random_input(1, 5, 5), "config.kernel_size",
     "must be a positive integer"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 2, "stride": 0}, random_input(1, 5), "config.stride", "positive"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 2, "dilation": [0]}, random_input(1, 5), "config.dilation", "positive"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 2, "padding": "full"}, random_input(1, 5), "config.padding",
     'must be "valid" or "same", or a non-negative integer'),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 2, "padding_mode": "mirror"}, random_input(1, 5),
     "config.padding_mode", "'zeros', 'reflect', 'replicate' or 'circular'"),
    ("conv1d", {"in_channels": 0, "out_channels": 1, "kernel_size": 2}, random_input(1, 5), "config.in_channels", "greater than 0"),
    ("conv1d", {"in_channels": 1, "kernel_size": 2}, random_input(1, 5), "config.out_channels", "required"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 2, "bias": "yes"}, random_input(1, 5), "config.bias", "boolean"),
]


@pytest.mark.parametrize("kind, config, input_value, field, words", ERRORS, ids=[f"{e[0]}-{e[3]}-{i}" for i, e in enumerate(ERRORS)])
def test_invalid_configs_and_inputs_are_422_saying_why(client, kind, config, input_value, field, words):
    body = post_layer(client, kind, {"config": config, "input": input_value}, status=422)
    assert_names(body, field, words)


def test_parameters_of_the_wrong_shape_are_422(client):
    body = post_layer(client, "conv2d", {"config": {"in_channels": 4, "out_channels": 2, "kernel_size": 3, "groups": 2},
                                         "input": random_input(4, 5, 5), "parameters": {"weight": np.zeros((2, 4, 3, 3)).tolist()}},
                      status=422)
    assert body["field"] == "parameters.weight" and body["expected"] == [2, 2, 3, 3]


def test_mac_limit_counts_torchinfo_macs(make_client):
    """Conv2d(3, 16, 3, stride=2) on (1, 3, 9, 9): (16*27 + 16) x 16 output positions = 7168 MACs."""
    request = {"config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, "input": random_input(1, 3, 9, 9)}
    assert post_layer(make_client(max_macs=7168), "conv2d", request)["output_shape"] == [1, 16, 4, 4]
    body = post_layer(make_client(max_macs=7167), "conv2d", request, status=413)
    assert body["limit"] == "max_macs" and body["value"] == 7168


@pytest.mark.parametrize("kind, config, shape", [
    ("conv2d", {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, (100, 3, 120, 160)),
    ("conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": [3, 2], "groups": 2, "bias": False}, (2, 4, 10, 10)),
    ("conv1d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": "same", "padding_mode": "circular"}, (3, 4, 10)),
    ("conv3d", {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": [1, 2, 2], "dilation": 2}, (2, 2, 6, 7, 8)),
])
def test_macs_equal_torchinfo(kind, config, shape):
    spec = LAYERS[kind]
    parsed = parse_config(spec, config)
    module = getattr(torch.nn, spec.torch_name)(**config)
    summary = torchinfo.summary(module, input_size=shape, verbose=0)
    out_shape = spec.output_shape(parsed, shape)
    assert list(out_shape) == summary.summary_list[0].output_size
    assert spec.macs(parsed, shape, out_shape) == summary.total_mult_adds
    # An unbatched input counts as a batch of one.
    assert spec.macs(parsed, shape[1:], spec.output_shape(parsed, shape[1:])) == summary.total_mult_adds // shape[0]


def test_listed_with_defaults(client):
    listed = listed_layers(client)
    assert listed["conv2d"]["torch"] == "torch.nn.Conv2d"
    assert listed["conv3d"]["defaults"] == {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True,
                                            "padding_mode": "zeros"}
    padding = listed["conv1d"]["config_schema"]["properties"]["padding"]
    assert {"type": "string", "enum": ["valid", "same"]} in padding["anyOf"]
