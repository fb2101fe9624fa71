"""POST /v1/layers/batchnorm{1,2,3}d end to end (in-process ASGI app) against torch.nn.BatchNorm*."""

import numpy as np
import pytest
import torch

from tests.wire import assert_names, decode, listed_layers, post_layer

BACKENDS = ["torch", "reference"]
MODULES = {"batchnorm1d": torch.nn.BatchNorm1d, "batchnorm2d": torch.nn.BatchNorm2d, "batchnorm3d": torch.nn.BatchNorm3d}


def as_torch(tensor: dict) -> torch.Tensor:
    return torch.from_numpy(decode(tensor))


def randn(*shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    """What the wire form {"random": "normal", "shape": shape, "seed": seed} draws: torch.manual_seed(seed); torch.randn(shape)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_notebook_batchnorm1d_equals_the_hand_written_formula(client, backend):
    body = post_layer(client, "batchnorm1d", {"config": {"num_features": 5, "affine": True},
                                               "input": {"random": "normal", "shape": [10, 5], "seed": 0},
                                               "backend": backend, "compare": True})
    inputs = randn(10, 5)
    batchNorm1 = torch.nn.BatchNorm1d(5, affine=True)
    with torch.no_grad():
        outputs = batchNorm1(inputs)
        by_hand = ((inputs - inputs.mean(dim=0)) / torch.sqrt(inputs.var(dim=0, unbiased=False) + batchNorm1.eps)
                   * batchNorm1.weight + batchNorm1.bias)
    torch.testing.assert_close(as_torch(body["output"]), outputs)
    torch.testing.assert_close(as_torch(body["output"]), by_hand)
    torch.testing.assert_close(as_torch(body["statistics"]["mean"]), inputs.mean(dim=0))
    torch.testing.assert_close(as_torch(body["statistics"]["var"]), inputs.var(dim=0, unbiased=False))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(as_torch(body["buffers"][name]), getattr(batchNorm1, name))
    assert body["buffers"]["num_batches_tracked"] == {"shape": [], "dtype": "int64", "data": 1}
    assert body["comparison"]["allclose"] and body["comparison"]["buffers_max_abs_diff"] < 1e-6
    assert body["config"] == {"num_features": 5, "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True, "bias": True}
    assert body["input_shape"] == body["output_shape"] == [10, 5] and body["parameter_count"] == 10
    assert sorted(body["parameters"]) == ["bias", "weight"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_notebook_batchnorm2d_equals_the_per_channel_formula(client, backend):
    body = post_layer(client, "batchnorm2d", {"config": {"num_features": 3}, "input": {"random": "normal", "shape": [2, 3, 2, 2]},
                                               "backend": backend, "compare": True})
    inputs = randn(2, 3, 2, 2)
    batchNorm2d = torch.nn.BatchNorm2d(3, affine=True)
    with torch.no_grad():
        outputs = batchNorm2d(inputs)
        # The notebook's cell, channel by channel.
        means = torch.tensor([inputs[:, 0].mean(), inputs[:, 1].mean(), inputs[:, 2].mean()]).view(-1, 1, 1).expand_as(inputs)
        vars = torch.tensor([inputs[:, c].var(unbiased=False) for c in range(3)]).view(-1, 1, 1).expand_as(inputs)
        by_hand = (batchNorm2d.weight.view(-1, 1, 1).expand_as(inputs) * (inputs - means) / torch.sqrt(vars + batchNorm2d.eps)
                   + batchNorm2d.bias.view(-1, 1, 1).expand_as(inputs))
    torch.testing.assert_close(as_torch(body["output"]), outputs)
    torch.testing.assert_close(as_torch(body["output"]), by_hand)
    torch.testing.assert_close(as_torch(body["statistics"]["var"]), vars[0, :, 0, 0])
    torch.testing.assert_close(as_torch(body["buffers"]["running_var"]), batchNorm2d.running_var)
    assert body["comparison"]["allclose"]


@pytest.mark.parametrize("encoding", ["list", "base64"])
@pytest.mark.parametrize("kind,shape,momentum", [("batchnorm1d", (6, 3, 4), None), ("batchnorm2d", (3, 3, 4, 5), 0.3),
                                                 ("batchnorm3d", (2, 3, 2, 3, 2), 0.1)])
def test_chained_calls_feed_buffers_back(client, kind, shape, momentum, encoding):
    """Each call's `buffers` (and `parameters`) go into the next call as `parameters`, alternating
    backends; after k steps the running statistics equal one torch module trained k steps."""
    module = MODULES[kind](3, momentum=momentum, dtype=torch.float64)
    config = {"num_features": 3, "momentum": momentum}
    parameters: dict = {}
    for step in range(4):
        body = post_layer(client, kind, {"config": config, "parameters": parameters, "encoding": encoding,
                                         "input": {"random": "normal", "shape": list(shape), "seed": step, "dtype": "float64"},
                                         "backend": BACKENDS[step % 2], "compare": True})
        with torch.no_grad():
            expected = module(randn(*shape, seed=step, dtype=torch.float64))
        torch.testing.assert_close(as_torch(body["output"]), expected)
        assert body["comparison"]["allclose"], body["comparison"]
        parameters = {**body["parameters"], **body["buffers"]}
    assert decode(parameters["num_batches_tracked"]).shape == () and int(decode(parameters["num_batches_tracked"])) == 4
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(as_torch(parameters[name]), getattr(module, name))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_evaluation_mode(client, backend, track_running_stats):
    """Given running statistics normalize in evaluation mode and stay as they are; untracked, the batch's do."""
    x = randn(4, 2, 3, seed=5)
    module = torch.nn.BatchNorm1d(2, track_running_stats=track_running_stats).eval()
    parameters = {"weight": [1.5, -0.5], "bias": [0.25, 1.0]}
    if track_running_stats:
        parameters |= {"running_mean": [0.3, -0.2], "running_var": [2.0, 0.5], "num_batches_tracked": 7}
    module.load_state_dict({k: torch.tensor(v) for k, v in parameters.items()})
    body = post_layer(client, "batchnorm1d", {"config": {"num_features": 2, "track_running_stats": track_running_stats},
                                               "input": x.tolist(), "parameters": parameters, "training": False,
                                               "backend": backend, "compare": True})
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(as_torch(body["output"]), expected)
    assert body["comparison"]["allclose"]
    if track_running_stats:
        torch.testing.assert_close(as_torch(body["statistics"]["mean"]), torch.tensor([0.3, -0.2]))
        torch.testing.assert_close(as_torch(body["statistics"]["var"]), torch.tensor([2.0, 0.5]))
        torch.testing.assert_close(as_torch(body["buffers"]["running_var"]), torch.tensor([2.0, 0.5]))
        assert body["buffers"]["num_batches_tracked"]["data"] == 7
    else:
        assert "buffers" not in body
        torch.testing.assert_close(as_torch(body["statistics"]["var"]), x.var(dim=(0, 2), unbiased=False))


def test_statistics_agree_between_backends(client):
    request = {"config": {"num_features": 4, "affine": False}, "input": {"random": "uniform", "shape": [3, 4, 5, 6, 2], "seed": 9}}
    torch_body = post_layer(client, "batchnorm3d", request)
    reference_body = post_layer(client, "batchnorm3d", request | {"backend": "reference"})
    assert torch_body["parameters"] == {} and torch_body["parameter_count"] == 0
    for name in ("mean", "var"):
        torch.testing.assert_close(as_torch(reference_body["statistics"][name]), as_torch(torch_body["statistics"][name]))


def test_one_value_per_channel_is_fine_in_evaluation_with_running_statistics(client):
    body = post_layer(client, "batchnorm2d", {"config": {"num_features": 2}, "input": [[[[1.0]], [[2.0]]]], "training": False})
    torch.testing.assert_close(as_torch(body["output"]), torch.tensor([[[[1.0]], [[2.0]]]]) / (1 + 1e-5) ** 0.5)


def test_listed_with_defaults(client):
    kinds = listed_layers(client)
    for kind, torch_name in (("batchnorm1d", "BatchNorm1d"), ("batchnorm2d", "BatchNorm2d"), ("batchnorm3d", "BatchNorm3d")):
        assert kinds[kind]["torch"] == f"torch.nn.{torch_name}"
        assert kinds[kind]["defaults"] == {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True, "bias": True}


ONE_ROW = [[1.0, 2.0, 3.0]]
TWO_ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]]


@pytest.mark.parametrize("kind,body,field,words", [
    ("batchnorm1d", {"config": {"num_features": 4}, "input": TWO_ROWS}, "input", ["3 channels", "num_features is 4"]),
    ("batchnorm2d", {"config": {"num_features": 2}, "input": {"random": "normal", "shape": [2, 3, 4, 4]}}, "input",
     ["3 channels", "num_features is 2"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": ONE_ROW}, "input",
     ["1 value per channel", "Expected more than 1 value per channel when training, got input size [1, 3]"]),
    ("batchnorm3d", {"config": {"num_features": 3}, "input": {"random": "normal", "shape": [1, 3, 1, 1, 1]}}, "input",
     ["Expected more than 1 value per channel"]),
    ("batchnorm1d", {"config": {"num_features": 3, "track_running_stats": False}, "input": ONE_ROW, "training": False},
     "input", ["without running statistics", "more than 1"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": [[[[1.0, 2.0]]] * 3] * 2}, "input", ["2D or 3D", "got 4D"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": [1.0, 2.0, 3.0]}, "input", ["2D or 3D", "got 1D"]),
    ("batchnorm2d", {"config": {"num_features": 3}, "input": TWO_ROWS}, "input", ["4D input (N, C, H, W)", "got 2D"]),
    ("batchnorm3d", {"config": {"num_features": 3}, "input": {"random": "normal", "shape": [2, 3, 4, 4]}}, "input",
     ["5D input (N, C, D, H, W)", "got 4D"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": TWO_ROWS, "parameters": {"running_mean": [0.0, 0.0]}},
     "parameters.running_mean", ["shape [2]", "needs [3]"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": TWO_ROWS, "parameters": {"running_var": [[1.0, 1.0, 1.0]]}},
     "parameters.running_var", ["shape [1, 3]", "needs [3]"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": TWO_ROWS, "parameters": {"num_batches_tracked": [2]}},
     "parameters.num_batches_tracked", ["shape [1]", "needs []", "scalar"]),
    ("batchnorm1d", {"config": {"num_features": 3}, "input": TWO_ROWS, "parameters": {"num_batches_tracked": 2.5}},
     "parameters.num_batches_tracked", ["integer"]),
    ("batchnorm1d", {"config": {"num_features": 3, "momentum": None}, "input": TWO_ROWS, "parameters": {"num_batches_tracked": -1}},
     "parameters.num_batches_tracked", ["non-negative integer"]),
    ("batchnorm1d", {"config": {"num_features": 3, "track_running_stats": False}, "input": TWO_ROWS,
                     "parameters": {"running_mean": [0.0, 0.0, 0.0]}}, "parameters.running_mean", ["not a tensor", "weight"]),
    ("batchnorm1d", {"config": {"num_features": 3, "affine": False}, "input": TWO_ROWS, "parameters": {"weight": [1.0, 1.0, 1.0]}},
     "parameters.weight", ["not a tensor", "running_mean"]),
    ("batchnorm1d", {"config": {"num_features": 3, "eps": 0}, "input": TWO_ROWS}, "config.eps", ["positive", "training"]),
    ("batchnorm1d", {"config": {"num_features": 3, "eps": -1e-5}, "input": TWO_ROWS}, "config.eps", ["greater than or equal to 0"]),
    ("batchnorm1d", {"config": {"num_features": 3, "momentum": "0.1"}, "input": TWO_ROWS}, "config.momentum", ["number"]),
    ("batchnorm1d", {"config": {"num_features": 0}, "input": TWO_ROWS}, "config.num_features", ["greater than 0"]),
    ("batchnorm1d", {"config": {"num_features": 3.0}, "input": TWO_ROWS}, "config.num_features", ["integer"]),
    ("batchnorm1d", {"config": {"num_features": 3, "affine": 1}, "input": TWO_ROWS}, "config.affine", ["boolean"]),
    ("batchnorm1d", {"config": {"num_features": 3, "bias": 0}, "input": TWO_ROWS}, "config.bias", ["boolean"]),
])
def test_bad_input_is_422_naming_the_field(client, kind, body, field, words):
    for backend in BACKENDS:
        payload = post_layer(client, kind, body | {"backend": backend}, 422)
        assert_names(payload, field, words)


def test_evaluation_with_zero_eps_and_running_statistics_is_allowed(client):
    """PyTorch refuses eps = 0 only when batch statistics are used."""
    body = post_layer(client, "batchnorm1d", {"config": {"num_features": 3, "eps": 0}, "input": TWO_ROWS, "training": False, "compare": True})
    torch.testing.assert_close(as_torch(body["output"]), torch.tensor(TWO_ROWS))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum", [0.0, 1.0, 1.5, -0.2])
def test_any_momentum_torch_accepts_is_accepted(client, backend, momentum):
    body = post_layer(client, "batchnorm1d", {"config": {"num_features": 3, "momentum": momentum},
                                              "input": {"random": "normal", "shape": [6, 3], "seed": 4}, "backend": backend})
    module = torch.nn.BatchNorm1d(3, momentum=momentum)
    expected = module(randn(6, 3, seed=4)).detach()
    torch.testing.assert_close(as_torch(body["output"]), expected)
    torch.testing.assert_close(as_torch(body["buffers"]["running_var"]), module.running_var)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_false_keeps_only_the_weight_like_torch(client, backend):
    body = post_layer(client, "batchnorm2d", {"config": {"num_features": 3, "bias": False},
                                              "input": {"random": "normal", "shape": [2, 3, 4, 4], "seed": 1},
                                              "parameters": {"weight": [0.5, 2.0, -1.0]}, "backend": backend})
    module = torch.nn.BatchNorm2d(3, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    assert set(body["parameters"]) == {"weight"} and body["parameter_count"] == 3
    torch.testing.assert_close(as_torch(body["output"]), module(randn(2, 3, 4, 4, seed=1)).detach())


@pytest.mark.parametrize("kind,shape", [("batchnorm1d", (4, 5)), ("batchnorm2d", (2, 5, 3, 3)), ("batchnorm3d", (2, 1, 2, 3, 2))])
@pytest.mark.parametrize("training", [True, False])
def test_without_per_channel_tensors_any_channel_count_is_accepted_like_torch(client, kind, shape, training):
    """affine=False and track_running_stats=False: torch never reads num_features."""
    config = {"num_features": 3, "affine": False, "track_running_stats": False}
    module = MODULES[kind](**config).train(training)
    expected = module(randn(*shape, seed=2))
    for backend in BACKENDS:
        body = post_layer(client, kind, {"config": config, "input": {"random": "normal", "shape": list(shape), "seed": 2},
                                         "training": training, "backend": backend, "compare": True})
        assert body["output_shape"] == list(shape) and body["comparison"]["allclose"] is True
        torch.testing.assert_close(as_torch(body["output"]), expected)


@pytest.mark.parametrize("config", [{"affine": False}, {"track_running_stats": False}])
def test_with_per_channel_tensors_the_channels_must_match_as_in_torch(client, config):
    config = {"num_features": 3, **config}
    with pytest.raises(RuntimeError):
        torch.nn.BatchNorm1d(**config)(randn(4, 5))
    assert_names(post_layer(client, "batchnorm1d", {"config": config, "input": {"random": "normal", "shape": [4, 5]}}, 422),
                 "input", ["5 channels", "num_features is 3"])
