"""Gradients on an empty batch (N = 0), through /v1/layers/{kind} and /v1/sequential, both backends,
against torch.autograd on the same empty input.

What autograd gives there: an empty input gradient of the input's shape, and every parameter's
gradient of the parameter's shape, all zeros (a sum over no values). BatchNorm of an empty input is
`x * weight + bias` in torch (its grad_fn says AddBackward0), so its weight gradient is 0 too, not
the NaN the statistics of no values would give. A loss with reduction "mean" over no values is NaN,
with "sum" 0; the gradients stay zero either way.
"""

import numpy as np
import pytest
import torch

from tests.api.routes.test_layers_empty_batch import CASES, GIVEN_BUFFERS, IDS
from tests.stacking import TORCH_MODULES, torch_sequential
from tests.wire import decode, post_json, post_layer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def empty(shape, dtype: str = "float32") -> dict:
    """An empty tensor in the base64 form: its bytes are "" and the shape says what is empty."""
    return {"base64": "", "shape": list(shape), "dtype": dtype}


def torch_gradients(kind: str, config: dict, shape, parameters: dict, training: bool, dtype: str):
    """The output, the gradient of every tensor by name (input and parameters), and the buffers after
    the pass: torch.nn and autograd, upstream gradient all ones (output.sum()), as the request's default."""
    module = TORCH_MODULES[kind](**config).to(DTYPES[dtype])
    module.load_state_dict({k: torch.as_tensor(v) for k, v in parameters.items()}, strict=False)
    module.train(training)
    x = torch.empty(shape, dtype=DTYPES[dtype], requires_grad=True)
    out = module(x)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch.ones_like(out))
    gradients = {"input": x.grad, **{name: p.grad for name, p in module.named_parameters()}}
    return out, gradients, dict(module.named_buffers())


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("kind, config, shape", CASES, ids=IDS)
def test_layer_gradients_on_an_empty_batch_equal_autograd(client, kind, config, shape, backend):
    trainings = [True, False] if kind.startswith("batchnorm") else [True]
    dtype = "float64" if len(shape) % 2 else "float32"
    for training in trainings:
        state = {}
        if kind.startswith("batchnorm") and config.get("track_running_stats", True):
            state = {k: v[: config["num_features"]] if isinstance(v, list) else v for k, v in GIVEN_BUFFERS.items()}
        body = post_layer(client, kind, {"config": config, "input": empty(shape, dtype), "parameters": state,
                                         "backend": backend, "compare": True, "training": training,
                                         "gradients": True, "encoding": "base64"})
        parameters = {name: decode(tensor) for name, tensor in body["parameters"].items()}
        out, expected, buffers = torch_gradients(kind, config, shape, {**parameters, **state}, training, dtype)
        assert body["output"]["shape"] == list(out.shape)
        assert set(body["gradients"]) == set(expected)
        for name, grad in expected.items():
            got = decode(body["gradients"][name])
            assert got.shape == tuple(grad.shape) and got.dtype == grad.numpy().dtype, name
            np.testing.assert_array_equal(got, grad.numpy(), err_msg=name)  # zeros, or empty
        assert decode(body["gradients"]["input"]).size == 0
        for name, buffer in buffers.items():  # the backward pass moves no statistic: still as torch's forward left them
            np.testing.assert_array_equal(decode(body["buffers"][name]), buffer.numpy(), err_msg=name)
        if backend == "torch":
            assert body["grad_fn"] == type(out.grad_fn).__name__
        comparison = body["comparison"]
        assert comparison["allclose"] and all(g["allclose"] for g in comparison["gradients"].values()), comparison


def test_an_empty_grad_output_starts_the_backward_pass(client):
    """grad_output of the output's shape, empty as the output is: "" in base64, as any empty tensor."""
    config = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}
    for backend in ("torch", "reference"):
        body = post_layer(client, "conv2d", {"config": config, "input": empty((0, 2, 4, 4)), "backend": backend,
                                             "grad_output": empty((0, 3, 4, 4)), "compare": True})
        assert {name: tensor["shape"] for name, tensor in body["gradients"].items()} == {
            "input": [0, 2, 4, 4], "weight": [3, 2, 3, 3], "bias": [3]}
        assert not decode(body["gradients"]["weight"]).any() and not decode(body["gradients"]["bias"]).any()
        error = post_layer(client, "conv2d", {"config": config, "input": empty((0, 2, 4, 4)), "backend": backend,
                                              "grad_output": empty((1, 3, 4, 4))}, status=422)
        assert error["field"] == "grad_output" and error["expected"] == [0, 3, 4, 4]


LOSSES = [
    ("mse_loss", "mean", empty((0, 4), "float64")),
    ("mse_loss", "sum", empty((0, 4), "float64")),
    ("cross_entropy", "mean", []),  # class indices of shape (0,)
    ("cross_entropy", "sum", []),
    ("cross_entropy", "mean", empty((0, 4), "float64")),  # class probabilities
    ("sum", "mean", None),
    ("sum", "sum", None),
]


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("function, reduction, target", LOSSES, ids=[f"{f}-{r}-{i}" for i, (f, r, _) in enumerate(LOSSES)])
def test_losses_of_an_empty_batch_equal_torch(client, backend, function, reduction, target):
    loss: dict = {"function": function, "reduction": reduction}
    if target is not None:
        loss["target"] = target
    body = post_layer(client, "linear", {"config": {"in_features": 5, "out_features": 4}, "backend": backend,
                                         "input": empty((0, 5), "float64"), "loss": loss, "compare": True})
    module = TORCH_MODULES["linear"](5, 4).double()
    module.load_state_dict({k: torch.as_tensor(decode(v)) for k, v in body["parameters"].items()})
    x = torch.empty(0, 5, dtype=torch.float64, requires_grad=True)
    out = module(x)
    if function == "sum":
        value = out.sum() if reduction == "sum" else out.mean()
    else:
        torch_target = torch.empty(0, dtype=torch.long) if target == [] else torch.empty(0, 4, dtype=torch.float64)
        value = getattr(torch.nn.functional, function)(out, torch_target, reduction=reduction)
    value.backward()
    if np.isnan(value.item()):  # the mean of no values
        assert reduction == "mean" and body["loss"] == "NaN"
    else:
        assert body["loss"] == value.item() == 0.0
    for name, grad in (("input", x.grad), ("weight", module.weight.grad), ("bias", module.bias.grad)):
        np.testing.assert_array_equal(decode(body["gradients"][name]), grad.numpy(), err_msg=name)
    assert all(g["allclose"] for g in body["comparison"]["gradients"].values())


STACK = [
    {"kind": "conv2d", "config": {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 1}},
    {"kind": "batchnorm2d", "config": {"num_features": 4}},
    {"kind": "relu"},
    {"kind": "maxpool2d", "config": {"kernel_size": 2}},
    {"kind": "flatten"},
    {"kind": "linear", "config": {"in_features": 16, "out_features": 3}},
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_stack_gradients_on_an_empty_batch_equal_autograd(client, backend, training):
    body = post_json(client, "/v1/sequential", {
        "layers": STACK, "input": empty((0, 2, 4, 4), "float64"), "seed": 4, "backend": backend, "compare": True,
        "training": training, "loss": {"function": "cross_entropy", "target": [], "reduction": "sum"},
        "encoding": "base64"})
    model = torch_sequential(STACK, seed=4, dtype=torch.float64).train(training)
    x = torch.empty(0, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(model(x), torch.empty(0, dtype=torch.long), reduction="sum")
    loss.backward()
    assert body["loss"] == loss.item() == 0.0
    assert body["output_shape"] == [0, 3]
    assert decode(body["gradients"]["input"]).shape == (0, 2, 4, 4)
    for row, module in zip(body["layers"], model):
        assert set(row.get("gradients", {})) == {name for name, _ in module.named_parameters()}
        for name, parameter in module.named_parameters():
            np.testing.assert_array_equal(decode(row["gradients"][name]), parameter.grad.numpy(), err_msg=name)
        for name, buffer in module.named_buffers():
            np.testing.assert_array_equal(decode(row["buffers"][name]), buffer.numpy(), err_msg=name)
    assert body["comparison"]["all_layers_allclose"] is True
