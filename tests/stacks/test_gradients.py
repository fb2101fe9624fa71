"""Gradients through the one request path (/v1/layers/{kind} and /v1/sequential), both backends,
against direct torch.nn modules and torch.autograd on random data (the oracle).

The option grid of each kind is sampled with fixed seeds (a few cases per kind and backend) to keep
the default suite short.
"""

import random

import numpy as np
import pytest
import torch
from torch import nn

DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-9, atol=1e-10)}

# (kind, torch class, config, input shape): the option grid, sampled below
CASES = [
    ("linear", "Linear", {"in_features": 5, "out_features": 3}, [4, 5]),
    ("linear", "Linear", {"in_features": 5, "out_features": 3, "bias": False}, [5]),
    ("linear", "Linear", {"in_features": 4, "out_features": 2}, [2, 3, 4]),
    ("conv1d", "Conv1d", {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 2, "dilation": 2,
                          "padding_mode": "reflect"}, [2, 2, 9]),
    ("conv2d", "Conv2d", {"in_channels": 4, "out_channels": 2, "kernel_size": [3, 2], "stride": 2, "groups": 2,
                          "padding": 1, "padding_mode": "circular"}, [2, 4, 7, 6]),
    ("conv2d", "Conv2d", {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": "same",
                          "padding_mode": "replicate", "bias": False}, [1, 6, 6]),
    ("conv3d", "Conv3d", {"in_channels": 2, "out_channels": 2, "kernel_size": 2, "stride": [1, 2, 1]}, [1, 2, 4, 5, 3]),
    ("maxpool1d", "MaxPool1d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, [2, 3, 8]),
    ("maxpool2d", "MaxPool2d", {"kernel_size": 2, "dilation": 2, "return_indices": True}, [1, 2, 7, 7]),
    ("maxpool3d", "MaxPool3d", {"kernel_size": 2, "stride": 1}, [2, 3, 3, 4]),
    ("avgpool1d", "AvgPool1d", {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False,
                                "ceil_mode": True}, [2, 2, 8]),
    ("avgpool2d", "AvgPool2d", {"kernel_size": 3, "padding": 1, "divisor_override": 2}, [1, 2, 6, 5]),
    ("avgpool3d", "AvgPool3d", {"kernel_size": 2, "ceil_mode": True}, [1, 1, 5, 4, 3]),
    ("batchnorm1d", "BatchNorm1d", {"num_features": 3}, [5, 3]),
    ("batchnorm1d", "BatchNorm1d", {"num_features": 3, "affine": False}, [4, 3, 2]),
    ("batchnorm2d", "BatchNorm2d", {"num_features": 2, "track_running_stats": False}, [2, 2, 3, 3]),
    ("batchnorm3d", "BatchNorm3d", {"num_features": 2, "momentum": None}, [2, 2, 2, 2, 2]),
    ("relu", "ReLU", {}, [3, 4]),
    ("flatten", "Flatten", {"start_dim": 0}, [2, 3, 2]),
]


def sampled() -> list:
    """Each case once, with a backend, a dtype, training or not and an upstream gradient drawn by a fixed seed."""
    rng = random.Random(15)
    params = []
    for index, case in enumerate(CASES):
        for backend in ("torch", "reference"):
            dtype = rng.choice(["float32", "float64"])
            training = rng.random() < 0.6
            start = rng.choice(["ones", "grad_output"])
            params.append(pytest.param(case, backend, dtype, training, start, id=f"{case[0]}-{index}-{backend}-{dtype}"))
    return params


def tensor(array: np.ndarray, dtype: str) -> dict:
    if array.size == 0:  # an empty batch: nested arrays cannot say its shape
        return {"base64": "", "shape": list(array.shape), "dtype": dtype}
    return {"data": array.tolist(), "shape": list(array.shape), "dtype": dtype}


def as_array(encoded: dict) -> np.ndarray:
    if "data" not in encoded:
        return np.zeros(encoded["shape"], dtype=encoded["dtype"])
    return np.asarray(encoded["data"], dtype=encoded["dtype"]).reshape(encoded["shape"])


def torch_oracle(torch_name: str, config: dict, x: np.ndarray, parameters: dict, training: bool,
                 grad_output: np.ndarray | None, dtype: str) -> tuple[torch.Tensor, dict, dict]:
    """output, gradients by name (input and parameters), buffers after the pass: torch.nn and autograd."""
    module = getattr(nn, torch_name)(**config).to(DTYPES[dtype])
    module.load_state_dict({k: torch.as_tensor(v) for k, v in parameters.items()}, strict=False)
    module.train(training)
    xt = torch.as_tensor(x).requires_grad_(True)
    out = module(xt)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch.ones_like(out) if grad_output is None else torch.as_tensor(grad_output))
    grads = {"input": xt.grad, **{k: p.grad for k, p in module.named_parameters()}}
    return out, grads, {k: v for k, v in module.state_dict().items() if k not in dict(module.named_parameters())}


@pytest.mark.parametrize("case, backend, dtype, training, start", sampled())
def test_layer_gradients_match_torch_autograd(client, case, backend, dtype, training, start):
    kind, torch_name, config, shape = case
    rng = np.random.default_rng(len(kind) * 100 + len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    body = {"config": config, "input": tensor(x, dtype), "backend": backend, "training": training, "gradients": True}
    first = client.post(f"/v1/layers/{kind}", json={**body, "gradients": False})
    assert first.status_code == 200, first.text
    output_shape = first.json()["output_shape"]
    grad_output = None
    if start == "grad_output":
        grad_output = rng.standard_normal(output_shape).astype(dtype)
        body["grad_output"] = tensor(grad_output, dtype)
    answer = client.post(f"/v1/layers/{kind}", json=body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    parameters = {k: as_array(v) for k, v in got["parameters"].items()}
    out, expected, buffers = torch_oracle(torch_name, config, x, parameters, training, grad_output, dtype)
    np.testing.assert_allclose(as_array(got["output"]), out.detach().numpy(), **TOLERANCE[dtype])
    assert set(got["gradients"]) == set(expected)
    for name, grad in expected.items():
        assert got["gradients"][name]["shape"] == list(grad.shape), name
        np.testing.assert_allclose(as_array(got["gradients"][name]), grad.numpy(), **TOLERANCE[dtype], err_msg=name)
    # the running statistics move once, as in the forward-only call
    for name, value in buffers.items():
        np.testing.assert_allclose(as_array(got["buffers"][name]), value.numpy(), **TOLERANCE[dtype], err_msg=name)
        np.testing.assert_array_equal(as_array(got["buffers"][name]), as_array(first.json()["buffers"][name]))
    if backend == "torch":
        assert got["grad_fn"] == type(out.grad_fn).__name__
    else:
        assert got["grad_fn"] is None


LOSSES = [
    ("mse_loss", "mean", [3, 4]), ("mse_loss", "sum", [3, 4]),
    ("cross_entropy", "mean", "indices"), ("cross_entropy", "sum", "indices"),
    ("cross_entropy", "mean", "probabilities"), ("cross_entropy", "sum", "probabilities"),
    ("sum", "sum", None), ("sum", "mean", None),
]


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("function, reduction, target_form", LOSSES)
def test_losses_match_torch(client, backend, function, reduction, target_form):
    rng = np.random.default_rng(7)
    x = rng.standard_normal([3, 5])
    weight, bias = rng.standard_normal([4, 5]), rng.standard_normal([4])
    loss: dict = {"function": function, "reduction": reduction}
    if function == "mse_loss":
        target = rng.standard_normal([3, 4])
        loss["target"] = tensor(target, "float64")
    elif target_form == "indices":
        target = np.array([0, 3, 1])
        loss["target"] = target.tolist()
    elif target_form == "probabilities":
        target = rng.dirichlet(np.ones(4), size=3)
        loss["target"] = tensor(target, "float64")
    answer = client.post("/v1/layers/linear", json={
        "config": {"in_features": 5, "out_features": 4}, "input": tensor(x, "float64"), "backend": backend,
        "parameters": {"weight": tensor(weight, "float64"), "bias": tensor(bias, "float64")}, "loss": loss})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    out = torch.nn.functional.linear(xt, wt, bt)
    if function == "sum":
        value = out.sum() if reduction == "sum" else out.mean()
    else:
        fn = getattr(torch.nn.functional, function)
        value = fn(out, torch.as_tensor(target), reduction=reduction)
    value.backward()
    assert got["loss"] == pytest.approx(value.item(), rel=1e-9)
    for name, grad in (("input", xt.grad), ("weight", wt.grad), ("bias", bt.grad)):
        np.testing.assert_allclose(as_array(got["gradients"][name]), grad.numpy(), rtol=1e-9, atol=1e-12)


def random_stack(rng: random.Random) -> tuple[list[dict], list[int]]:
    """A small random conv/pool/norm/flatten/linear stack and its input shape."""
    channels = rng.choice([1, 2, 3])
    size = rng.choice([6, 7, 8])
    layers: list[dict] = [{"kind": "conv2d", "config": {"in_channels": channels, "out_channels": 4, "kernel_size": 3,
                                                         "padding": rng.choice([0, 1])}}]
    layers.append(rng.choice([{"kind": "batchnorm2d", "config": {"num_features": 4}}, {"kind": "relu"}]))
    layers.append(rng.choice([{"kind": "maxpool2d", "config": {"kernel_size": 2}},
                              {"kind": "avgpool2d", "config": {"kernel_size": 2, "ceil_mode": True}}]))
    layers.append({"kind": "flatten"})
    return layers, [rng.choice([2, 3]), channels, size, size]


@pytest.mark.parametrize("seed", range(4))
def test_random_stacks_match_torch(client, seed):
    rng = random.Random(seed)
    layers, shape = random_stack(rng)
    probe = client.post("/v1/shapes", json={"input_shape": shape, "layers": layers})
    assert probe.status_code == 200, probe.text
    features = probe.json()["output_shape"][1]
    layers.append({"kind": "linear", "config": {"in_features": features, "out_features": 3}})
    x = np.random.default_rng(seed).standard_normal(shape)
    backend = ("torch", "reference")[seed % 2]
    body = {"layers": layers, "input": tensor(x, "float64"), "backend": backend, "seed": seed, "compare": True,
            "loss": {"function": "cross_entropy", "target": [i % 3 for i in range(shape[0])]}}
    answer = client.post("/v1/sequential", json=body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["comparison"]["all_layers_allclose"] is True
    torch.manual_seed(seed)
    modules = [getattr(nn, {"conv2d": "Conv2d", "batchnorm2d": "BatchNorm2d", "relu": "ReLU", "maxpool2d": "MaxPool2d",
                            "avgpool2d": "AvgPool2d", "flatten": "Flatten", "linear": "Linear"}[layer["kind"]])(
        **layer.get("config", {})) for layer in layers]
    model = nn.Sequential(*modules).double()
    xt = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.tensor([i % 3 for i in range(shape[0])]))
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-9)
    np.testing.assert_allclose(as_array(got["gradients"]["input"]), xt.grad.numpy(), rtol=1e-8, atol=1e-12)
    for row, module in zip(got["layers"], modules):
        for name, parameter in module.named_parameters():
            np.testing.assert_allclose(as_array(row["gradients"][name]), parameter.grad.numpy(), rtol=1e-8, atol=1e-12)
        assert set(row.get("gradients", {})) == {name for name, _ in module.named_parameters()}


LINEAR = {"config": {"in_features": 4, "out_features": 2}, "input": {"random": "normal", "shape": [3, 4]}}


@pytest.mark.parametrize("extra, field", [
    ({"grad_output": [[1.0, 2.0]]}, "grad_output"),
    ({"grad_output": {"random": "normal", "shape": [3, 3]}}, "grad_output"),
    ({"grad_output": [[1.0, 2.0]] * 3, "loss": {"function": "sum"}}, None),
    ({"loss": {"function": "mse_loss"}}, "loss.target"),
    ({"loss": {"function": "mse_loss", "target": [[1.0, 2.0]]}}, "loss.target"),
    ({"loss": {"function": "cross_entropy", "target": [0, 1, 2]}}, "loss.target"),
    ({"loss": {"function": "cross_entropy", "target": [0, 1.5, 1]}}, "loss.target"),
    ({"loss": {"function": "hinge"}}, "loss.function"),
    ({"loss": {"function": "sum", "reduction": "none"}}, "loss.reduction"),
])
def test_gradient_errors_are_422_naming_the_field(client, extra, field):
    answer = client.post("/v1/layers/linear", json={**LINEAR, **extra})
    assert answer.status_code == 422, answer.text
    if field is not None:
        assert answer.json()["field"] == field
    if field == "grad_output":
        assert answer.json()["expected"] == [3, 2]


def test_grad_output_implies_gradients_and_encodings(client):
    answer = client.post("/v1/layers/linear", json={**LINEAR, "grad_output": {"random": "normal", "shape": [3, 2]},
                                                    "encoding": "base64"})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["gradients"]) == {"input", "weight", "bias"}
    assert "base64" in answer.json()["gradients"]["input"]
    none = client.post("/v1/layers/linear", json={**LINEAR, "gradients": True, "encoding": "none"}).json()
    assert "data" not in none["gradients"]["weight"] and none["gradients"]["weight"]["shape"] == [2, 4]
    plain = client.post("/v1/layers/linear", json=LINEAR).json()
    assert "gradients" not in plain and "grad_fn" not in plain


def test_gradients_count_in_the_work_limit(make_client):
    client = make_client(max_macs=2000)
    body = {"config": {"in_features": 30, "out_features": 30}, "input": {"random": "normal", "shape": [1, 30]}}
    assert client.post("/v1/layers/linear", json=body).status_code == 200
    refused = client.post("/v1/layers/linear", json={**body, "gradients": True})
    assert refused.status_code == 413, refused.text
