"""The SDK's gradients: every layer method and sequential, sync and async, in-process and over uvicorn
(the `sdk` fixture), against torch.autograd."""

import numpy as np
import pytest
import torch
from torch import nn

from app.client import layer

rng = np.random.default_rng(15)


def test_conv2d_gradients_with_grad_output(sdk):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    g = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    result = sdk.conv2d(x, in_channels=3, out_channels=4, kernel_size=3, stride=2, seed=3, gradients=True, grad_output=g)
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, stride=2)
    xt = torch.tensor(x, requires_grad=True)
    out = conv(xt)
    out.backward(torch.tensor(g))
    torch.testing.assert_close(torch.from_numpy(result.gradients["input"]), xt.grad)
    torch.testing.assert_close(torch.from_numpy(result.gradients["weight"]), conv.weight.grad)
    torch.testing.assert_close(torch.from_numpy(result.gradients["bias"]), conv.bias.grad)
    assert result.grad_fn == type(out.grad_fn).__name__ and result.loss is None


@pytest.mark.parametrize("method, arguments", [
    ("linear", {"in_features": 6, "out_features": 2}),
    ("maxpool1d", {"kernel_size": 2}),
    ("avgpool1d", {"kernel_size": 3, "stride": 1}),
    ("batchnorm1d", {"num_features": 3}),
    ("relu", {}),
    ("flatten", {}),
])
def test_every_method_takes_a_loss(sdk, method, arguments):
    x = rng.standard_normal((4, 3, 6))
    result = getattr(sdk, method)(x, **arguments, loss={"function": "sum", "reduction": "mean"}, backend="reference")
    assert result.loss == pytest.approx(float(result.output.mean()), rel=1e-12)
    assert result.gradients["input"].shape == x.shape
    assert result.grad_fn is None


def test_sequential_cross_entropy_rows_and_input(sdk):
    x = rng.standard_normal((3, 5))
    target = np.array([0, 2, 1])
    result = sdk.sequential([layer("linear", in_features=5, out_features=4), layer("relu"),
                             layer("linear", in_features=4, out_features=3)], x, seed=1,
                            loss={"function": "cross_entropy", "target": target})
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    xt = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.tensor(target))
    loss.backward()
    assert result.loss == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(torch.from_numpy(result.gradients["input"]), xt.grad)
    torch.testing.assert_close(torch.from_numpy(result.layers[2].gradients["weight"]), model[2].weight.grad)
    assert result.layers[1].gradients == {}
