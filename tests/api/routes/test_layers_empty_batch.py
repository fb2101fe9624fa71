"""Empty batches (N = 0) on every layer kind, end to end, against torch.nn on the same empty input.

torch computes every kind here on a zero batch: an empty output of the right shape; BatchNorm in
training still counts the batch in num_batches_tracked and leaves its running statistics as they
were. Where torch refuses a zero size (a zero spatial size of a non-empty batch, any zero but N
for pooling), the service answers a 422 naming the input, with expected and actual.
"""

import msgpack
import numpy as np
import pytest
import torch

from app.codec import msgpack as wire
from app.layers.registry import LAYERS
from tests.stacking import TORCH_MODULES
from tests.wire import as_base64, assert_names, decode, post_layer

BACKENDS = ["torch", "reference"]

# (kind, config, empty input shape): every kind, batched forms, the options that change the path.
CASES = [
    ("linear", {"in_features": 4, "out_features": 3}, (0, 4)),
    ("linear", {"in_features": 4, "out_features": 3, "bias": False}, (2, 0, 4)),
    ("conv1d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3}, (0, 2, 5)),
    ("conv1d", {"in_channels": 2, "out_channels": 4, "kernel_size": 1, "padding": 1, "groups": 2}, (0, 2, 0)),
    ("conv1d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1, "padding_mode": "reflect"}, (0, 2, 5)),
    ("conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "dilation": 2}, (0, 2, 7, 6)),
    ("conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 4, "padding": "same"}, (0, 2, 5, 5)),
    ("conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1, "padding_mode": "circular"}, (0, 2, 4, 4)),
    ("conv3d", {"in_channels": 2, "out_channels": 3, "kernel_size": 2, "padding_mode": "replicate", "padding": 1}, (0, 2, 3, 3, 3)),
    ("maxpool1d", {"kernel_size": 2, "return_indices": True}, (0, 2, 5)),
    ("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "return_indices": True}, (0, 2, 5, 5)),
    ("maxpool3d", {"kernel_size": 2, "dilation": 2, "return_indices": True}, (0, 1, 5, 5, 5)),
    ("avgpool1d", {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False}, (0, 2, 5)),
    ("avgpool2d", {"kernel_size": 2, "divisor_override": 3}, (0, 2, 4, 4)),
    ("avgpool3d", {"kernel_size": 2, "ceil_mode": True}, (0, 2, 3, 3, 3)),
    ("batchnorm1d", {"num_features": 3}, (0, 3)),
    ("batchnorm1d", {"num_features": 3, "momentum": None}, (0, 3, 4)),
    ("batchnorm1d", {"num_features": 3}, (2, 3, 0)),
    ("batchnorm2d", {"num_features": 3, "affine": False}, (0, 3, 4, 4)),
    ("batchnorm2d", {"num_features": 3, "track_running_stats": False}, (0, 3, 4, 4)),
    ("batchnorm3d", {"num_features": 2}, (0, 2, 2, 2, 2)),
    ("relu", {}, (0, 3)),
    ("relu", {}, (0,)),
    ("flatten", {}, (0, 3, 4)),
    ("flatten", {"start_dim": 0, "end_dim": -1}, (0, 3, 4)),
]
IDS = [f"{kind}-{list(shape)}-{i}" for i, (kind, _, shape) in enumerate(CASES)]

# Buffers that differ from the defaults, so that "left as they were" is seen.
GIVEN_BUFFERS = {"running_mean": [0.5, -1.0, 2.0], "running_var": [2.0, 0.25, 3.0], "num_batches_tracked": 5}


def given_state(kind: str, config: dict) -> dict:
    if not kind.startswith("batchnorm") or not config.get("track_running_stats", True):
        return {}
    channels = config["num_features"]
    return {k: v[:channels] if isinstance(v, list) else v for k, v in GIVEN_BUFFERS.items()}


def torch_oracle(kind: str, config: dict, shape: tuple[int, ...], state: dict, training: bool):
    """The torch.nn module with the response's parameters and the given buffers, on an empty input."""
    module = TORCH_MODULES[kind](**config)
    with torch.no_grad():
        for name, value in state.items():
            getattr(module, name).copy_(torch.as_tensor(value))
    module.train(training)
    with torch.no_grad():
        out = module(torch.empty(shape))
    return module, out


def test_every_kind_has_an_empty_batch_case():
    assert {kind for kind, _, _ in CASES} == set(LAYERS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind, config, shape", CASES, ids=IDS)
def test_empty_batch_equals_torch(client, kind, config, shape, backend):
    trainings = [True, False] if kind.startswith("batchnorm") else [True]
    for training in trainings:
        state = given_state(kind, config)
        body = post_layer(client, kind, {"config": config, "input": {"data": [], "shape": list(shape)},
                                         "parameters": state, "backend": backend, "compare": True,
                                         "training": training})
        parameters = {name: decode(tensor) for name, tensor in body["parameters"].items()}
        module, expected = torch_oracle(kind, config, shape, {**parameters, **state}, training)
        indices = None
        if isinstance(expected, tuple):
            expected, indices = expected
        out = decode(body["output"])
        assert body["input_shape"] == list(shape)
        assert body["output_shape"] == body["output"]["shape"] == list(expected.shape)
        assert out.size == 0 and body["output"]["dtype"] == "float32"
        if indices is not None:
            assert body["indices"]["shape"] == list(indices.shape) and body["indices"]["dtype"] == "int64"
        for name, buffer in module.named_buffers():
            torch.testing.assert_close(torch.from_numpy(decode(body["buffers"][name])), buffer, check_dtype=False)
        if state:
            bumped = 6 if training else 5
            assert body["buffers"]["num_batches_tracked"]["data"] == bumped
            assert decode(body["buffers"]["running_mean"]).tolist() == state["running_mean"]  # as they were
            assert decode(body["buffers"]["running_var"]).tolist() == state["running_var"]
        if "statistics" in body and (training or not state):  # batch statistics of no values: NaN, as torch.mean
            assert np.isnan(decode(body["statistics"]["mean"])).all()
        comparison = body["comparison"]
        assert comparison["allclose"] and comparison["max_abs_diff"] == 0.0
        assert comparison.get("indices_equal", True)


def test_batchnorm_in_training_counts_every_empty_batch(client):
    """Three empty batches fed back one after another: num_batches_tracked 3, statistics untouched."""
    module = torch.nn.BatchNorm2d(3)
    buffers: dict = {}
    for _ in range(3):
        body = post_layer(client, "batchnorm2d", {"config": {"num_features": 3}, "parameters": buffers, "training": True,
                                                  "input": {"random": "normal", "shape": [0, 3, 2, 2]}, "compare": True,
                                                  "backend": "reference"})
        buffers = body["buffers"]
        with torch.no_grad():
            module(torch.empty(0, 3, 2, 2))
    for name, buffer in module.named_buffers():
        torch.testing.assert_close(torch.from_numpy(decode(buffers[name])), buffer, check_dtype=False)
    assert buffers["num_batches_tracked"]["data"] == 3


# -- every request form and every response form carries an empty tensor ---------------------------

EMPTY = np.empty((0, 2, 5), dtype=np.float32)
CONV = {"in_channels": 2, "out_channels": 3, "kernel_size": 3}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", ["data", "flat-data", "base64", "random"])
def test_every_request_form_carries_an_empty_input(client, form, dtype):
    x = EMPTY.astype(dtype)
    value = {"data": {"data": [], "shape": [0, 2, 5], "dtype": dtype},
             "flat-data": {"data": [], "shape": [0, 2, 5], "dtype": dtype},
             "base64": as_base64(x),
             "random": {"random": "uniform", "shape": [0, 2, 5], "seed": 3, "dtype": dtype}}[form]
    body = post_layer(client, "conv1d", {"config": CONV, "input": value, "compare": True, "encoding": "base64"})
    assert body["input_shape"] == [0, 2, 5]
    assert body["output"] == {"shape": [0, 3, 3], "dtype": dtype, "base64": ""}
    assert body["comparison"]["allclose"]


def test_nested_lists_with_a_zero_inner_dimension(client):
    """Bare nested lists can say (2, 0, 4)... no: [[], []] is (2, 0); a leading zero needs {data, shape}."""
    body = post_layer(client, "relu", {"config": {}, "input": [[], []], "compare": True})
    assert body["output"] == {"shape": [2, 0], "dtype": "float32", "data": [[], []]}
    body = post_layer(client, "linear", {"config": {"in_features": 4, "out_features": 1}, "compare": True,
                                         "input": {"data": [[], []], "shape": [2, 0, 4]}})
    assert body["output"] == {"shape": [2, 0, 1], "dtype": "float32", "data": [[], []]}


@pytest.mark.parametrize("encoding", ["list", "base64", "none"])
def test_every_response_encoding_presents_an_empty_output(client, encoding):
    body = post_layer(client, "maxpool1d", {"config": {"kernel_size": 2, "return_indices": True}, "encoding": encoding,
                                            "input": {"random": "normal", "shape": [0, 2, 5]}})
    output, indices = body["output"], body["indices"]
    assert output["shape"] == indices["shape"] == [0, 2, 2]
    assert (output["dtype"], indices["dtype"]) == ("float32", "int64")
    if encoding == "none":
        assert output["summary"] == {"min": "NaN", "max": "NaN", "mean": "NaN", "std": "NaN"}
    else:
        assert decode(output).shape == decode(indices).shape == (0, 2, 2)


def test_msgpack_carries_empty_tensors_both_ways(client):
    weight = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float64)
    request = {"config": {"in_features": 5, "out_features": 3, "bias": False}, "compare": True,
               "input": wire.tensor(np.empty((0, 5))), "parameters": {"weight": wire.tensor(weight)}}
    response = client.post("/v1/layers/linear", content=wire.packb(request),
                           headers={"content-type": "application/msgpack"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/msgpack"
    body = msgpack.unpackb(response.content)
    assert body["output"]["shape"] == [0, 3] and body["output"]["dtype"] == "float64"
    assert body["output"]["bytes"] == b""
    assert wire.array(body["output"]).shape == (0, 3)
    assert wire.array(body["parameters"]["weight"]).tobytes() == weight.tobytes()
    assert body["comparison"]["allclose"]


# -- where torch refuses a zero size, a 422 says so ------------------------------------------------

REFUSED = [
    # A zero spatial size convolves only in an empty batch (torch: "Only zero batch or zero channel inputs ...").
    ("conv1d", {"in_channels": 2, "out_channels": 3, "kernel_size": 1, "padding": 1}, (1, 2, 0), ["zero length", "N = 0"]),
    ("conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 1, "padding": 1}, (2, 0, 5), ["zero height", "N = 0"]),
    ("conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 1, "padding": 1}, (1, 2, 5, 0), ["zero width"]),
    # ... and the kernel must fit the padded input even then (torch: "Kernel size can't be greater ...").
    ("conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3}, (0, 2, 0, 0), ["less than 1"]),
    # Zero channels: not the in_channels / num_features the layer has.
    ("conv3d", {"in_channels": 2, "out_channels": 3, "kernel_size": 1}, (1, 0, 2, 2, 2), ["0 channels"]),
    # Zero features: Linear's last dimension is in_features.
    ("linear", {"in_features": 4, "out_features": 3}, (2, 0), ["0 features"]),
    ("linear", {"in_features": 4, "out_features": 3}, (0,), ["0 features"]),
    # Pooling: every dimension but N at least 1, batched or not.
    ("maxpool1d", {"kernel_size": 1}, (0, 2, 0), ["zero length"]),
    ("maxpool2d", {"kernel_size": 1}, (1, 0, 3, 3), ["zero channels"]),
    ("maxpool3d", {"kernel_size": 1}, (2, 0, 3, 3), ["zero depth"]),
    ("avgpool1d", {"kernel_size": 1}, (0, 5), ["zero channels"]),
    ("avgpool2d", {"kernel_size": 1, "padding": 0}, (0, 2, 3, 0), ["zero width"]),
    ("avgpool3d", {"kernel_size": 1}, (1, 1, 1, 0, 1), ["zero height"]),
    # Flatten's dimensions must exist, empty or not.
    ("flatten", {}, (0,), ["config.start_dim"]),
]


@pytest.mark.parametrize("kind, config, shape, words", REFUSED, ids=[f"{c[0]}-{list(c[2])}" for c in REFUSED])
def test_zero_sizes_torch_refuses_are_422(client, kind, config, shape, words):
    with pytest.raises(Exception):  # the oracle: torch refuses this input too
        TORCH_MODULES[kind](**config)(torch.empty(shape))
    for backend in BACKENDS:
        error = post_layer(client, kind, {"config": config, "input": {"data": [], "shape": list(shape)},
                                          "backend": backend, "compare": True}, status=422)
        field = "config.start_dim" if kind == "flatten" else "input"
        assert_names(error, field, words)
        assert "expected" in error and "actual" in error


def test_batchnorm_with_zero_channels_is_422_though_torch_passes_it(client):
    """A deliberate difference: torch's batch_norm returns before any check when the input has no
    elements, so BatchNorm1d(3) takes a (2, 0) input (and counts it in training). That input does not
    have the layer's channels, and the first non-empty batch of that shape fails; a 422 says so now."""
    module = torch.nn.BatchNorm1d(3)
    assert module(torch.empty(2, 0)).shape == (2, 0)  # torch passes it
    error = post_layer(client, "batchnorm1d", {"config": {"num_features": 3}, "input": [[], []]}, status=422)
    assert_names(error, "input", ["0 channels", "num_features is 3"])
    assert (error["expected"], error["actual"]) == (3, 0)
