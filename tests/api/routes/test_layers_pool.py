"""POST /v1/layers/{max,avg}pool{1,2,3}d end to end (in-process ASGI app) against torch.nn pooling modules."""

import numpy as np
import pytest
import torch

from app.layers.registry import LAYERS
from tests.wire import as_base64, assert_names, decode, listed_layers, post_layer, random_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_notebook_maxpool2d_cell(client, backend):
    """maxpool = nn.MaxPool2d(kernel_size=(3, 2), padding=0, dilation=1); (100, 3, 120, 160) -> (100, 3, 40, 80)."""
    body = post_layer(client, "maxpool2d", {"config": {"kernel_size": [3, 2], "padding": 0, "dilation": 1},
                                            "input": {"random": "uniform", "shape": [100, 3, 120, 160], "seed": 0},
                                            "backend": backend, "compare": True, "encoding": "none"})
    assert body["output_shape"] == [100, 3, 40, 80]
    assert body["formula"] == ["H_out = floor((120 + 2*0 - 1*(3-1) - 1) / 3) + 1 = 40",
                               "W_out = floor((160 + 2*0 - 1*(2-1) - 1) / 2) + 1 = 80"]
    assert body["config"] == {"kernel_size": [3, 2], "stride": None, "padding": 0, "dilation": 1,
                              "return_indices": False, "ceil_mode": False}
    assert body["parameters"] == {} and body["parameter_count"] == 0 and "indices" not in body
    assert body["comparison"]["allclose"] is True
    torch.manual_seed(0)
    expected = torch.nn.MaxPool2d(kernel_size=(3, 2), padding=0, dilation=1)(torch.rand(100, 3, 120, 160)).double()
    assert body["output"]["summary"]["mean"] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert body["output"]["summary"]["min"] == pytest.approx(float(expected.min()), rel=1e-6)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_return_indices_as_torch_numbers_them(client, backend):
    x = torch.tensor([[[[1.0, -2.0, 3.0, 0.5], [-4.0, 5.0, -6.0, 2.0], [7.0, -8.0, 9.0, 1.0]]]])
    body = post_layer(client, "maxpool2d", {"config": {"kernel_size": 2, "stride": 1, "padding": 1, "return_indices": True},
                                            "input": x.tolist(), "backend": backend, "compare": True})
    output, indices = torch.nn.MaxPool2d(2, stride=1, padding=1, return_indices=True)(x)
    assert body["indices"]["dtype"] == "int64" and body["indices"]["shape"] == [1, 1, 4, 5]
    np.testing.assert_array_equal(decode(body["indices"]), indices.numpy())
    np.testing.assert_array_equal(decode(body["output"]), output.numpy())
    assert body["comparison"]["indices_equal"] is True and body["comparison"]["allclose"] is True


CASES = [  # (kind, config, input shape, dtype, backend, encoding)
    ("maxpool1d", {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True, "return_indices": True}, (2, 3, 9), "float32", "reference", "list"),
    ("maxpool1d", {"kernel_size": 2}, (3, 7), "float64", "torch", "base64"),
    ("maxpool2d", {"kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0], "ceil_mode": True}, (3, 7, 6), "float64", "reference", "base64"),
    ("maxpool3d", {"kernel_size": 2, "padding": 1, "return_indices": True, "dilation": [1, 2, 1]}, (1, 2, 3, 5, 4), "float32", "torch", "list"),
    ("avgpool1d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, (2, 3, 8), "float32", "reference", "list"),
    ("avgpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 2, 6, 7), "float64", "torch", "base64"),
    ("avgpool2d", {"kernel_size": [2, 3], "divisor_override": 4}, (2, 5, 6), "float32", "reference", "base64"),
    ("avgpool3d", {"kernel_size": [2, 3, 2], "stride": 1, "padding": [1, 1, 0], "count_include_pad": False}, (1, 2, 3, 4, 5), "float64", "reference", "list"),
    ("avgpool3d", {"kernel_size": 2, "ceil_mode": True, "divisor_override": -3}, (2, 3, 3, 5), "float32", "torch", "list"),
]


@pytest.mark.parametrize("kind, config, shape, dtype, backend, encoding", CASES)
def test_both_backends_equal_torch(client, kind, config, shape, dtype, backend, encoding):
    gen = torch.Generator().manual_seed(len(shape) * 10 + len(config))
    x = torch.randn(shape, generator=gen, dtype=getattr(torch, dtype)) - 0.5
    expected = getattr(torch.nn, LAYERS[kind].torch_name)(**config)(x)
    expected, indices = expected if isinstance(expected, tuple) else (expected, None)
    body = post_layer(client, kind, {"config": config, "input": as_base64(x.numpy()), "backend": backend,
                                     "compare": True, "encoding": encoding})
    assert body["output_shape"] == list(expected.shape) and body["output"]["dtype"] == dtype
    torch.testing.assert_close(torch.from_numpy(decode(body["output"])), expected)
    if indices is not None:
        np.testing.assert_array_equal(decode(body["indices"]), indices.numpy())
        assert body["comparison"]["indices_equal"] is True
    assert body["comparison"]["allclose"] is True, body["comparison"]


ERRORS = [  # (kind, config, input, field, words in detail)
    ("maxpool2d", {"kernel_size": 3, "padding": 2}, random_input(1, 5, 5), "config.padding",
     "padding 2 is more than half the kernel size 3 in height"),
    ("avgpool1d", {"kernel_size": [2], "padding": [2]}, random_input(1, 5), "config.padding", "more than half the kernel size 2 in length"),
    ("maxpool2d", {"kernel_size": 5}, random_input(1, 3, 7), "input",
     "output height would be 0, less than 1: the kernel spans 5 (dilation*(kernel_size-1) + 1) but the padded input height is 3: "
     "H_out = floor((3 + 2*0 - 1*(5-1) - 1) / 5) + 1 = 0"),
    ("maxpool1d", {"kernel_size": 2, "dilation": 4}, random_input(1, 4), "input", "output length would be 0"),
    ("avgpool1d", {"kernel_size": 2, "divisor_override": 2}, random_input(1, 4), "config.divisor_override", "Extra inputs are not permitted"),
    ("avgpool2d", {"kernel_size": 2, "divisor_override": 0}, random_input(1, 4, 4), "config.divisor_override", "must not be 0"),
    ("avgpool3d", {"kernel_size": 3, "padding": 1}, random_input(1, 2, 4, 4), "input",
     "input depth 2 is smaller than the kernel size 3: AvgPool3d needs every input dimension at least the kernel size, before padding"),
    ("maxpool2d", {"kernel_size": 2}, random_input(4, 4), "input", "MaxPool2d expects a 3-D (C, H_in, W_in) unbatched or 4-D"),
    ("avgpool1d", {"kernel_size": 2}, random_input(1, 1, 1, 4), "input", "AvgPool1d expects a 2-D (C, L_in) unbatched or 3-D"),
    ("maxpool1d", {"kernel_size": [2, 2]}, random_input(1, 4), "config.kernel_size", "a list of 1 positive integers, got [2, 2]"),
    ("maxpool2d", {"kernel_size": 2, "stride": 0}, random_input(1, 4, 4), "config.stride", "must be a positive integer"),
    ("maxpool2d", {"kernel_size": 2, "dilation": 0}, random_input(1, 4, 4), "config.dilation", "must be a positive integer"),
    ("avgpool2d", {"kernel_size": 2, "dilation": 2}, random_input(1, 4, 4), "config.dilation", "Extra inputs are not permitted"),
    ("maxpool2d", {"kernel_size": 2, "padding": -1}, random_input(1, 4, 4), "config.padding", "non-negative"),
    ("maxpool2d", {"kernel_size": 2, "ceil_mode": 1}, random_input(1, 4, 4), "config.ceil_mode", "boolean"),
    ("maxpool2d", {"kernel_size": 2.0}, random_input(1, 4, 4), "config.kernel_size", "got 2.0"),
]


@pytest.mark.parametrize("kind, config, input_value, field, words", ERRORS, ids=[f"{e[0]}-{e[3]}-{i}" for i, e in enumerate(ERRORS)])
def test_invalid_configs_and_inputs_are_422_saying_why(client, kind, config, input_value, field, words):
    body = post_layer(client, kind, {"config": config, "input": input_value}, status=422)
    assert_names(body, field, words)


def test_pools_take_no_parameters(client):
    body = post_layer(client, "maxpool2d", {"config": {"kernel_size": 2}, "input": random_input(1, 4, 4),
                                            "parameters": {"weight": [1.0]}}, status=422)
    assert body["field"] == "parameters.weight"


def test_work_limit_counts_every_window_element(make_client):
    """torchinfo counts 0 MACs for pooling; the limit counts output elements x kernel elements: 2*4*4 x 4 = 128."""
    request = {"config": {"kernel_size": 2}, "input": random_input(2, 8, 8)}
    assert post_layer(make_client(max_macs=128), "maxpool2d", request)["output_shape"] == [2, 4, 4]
    body = post_layer(make_client(max_macs=127), "avgpool2d", request, status=413)
    assert body["limit"] == "max_macs" and body["value"] == 128


def test_pool_macs_are_zero_like_torchinfo():
    import torchinfo

    for kind, module in [("maxpool2d", torch.nn.MaxPool2d((3, 2))), ("avgpool2d", torch.nn.AvgPool2d(2))]:
        spec = LAYERS[kind]
        config = spec.config_model.model_validate({"kernel_size": [3, 2] if kind == "maxpool2d" else 2})
        out_shape = spec.output_shape(config, (4, 3, 12, 16))
        assert spec.macs(config, (4, 3, 12, 16), out_shape) == torchinfo.summary(module, input_size=(4, 3, 12, 16), verbose=0).total_mult_adds == 0
        assert spec.estimated_work(config, (4, 3, 12, 16), out_shape) > 0


def test_listed_with_pytorch_defaults(client):
    listed = listed_layers(client)
    assert listed["maxpool2d"]["defaults"] == {"stride": None, "padding": 0, "dilation": 1, "return_indices": False,
                                               "ceil_mode": False}
    assert listed["avgpool3d"]["defaults"] == {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                                               "divisor_override": None}
    assert "divisor_override" not in listed["avgpool1d"]["defaults"]
