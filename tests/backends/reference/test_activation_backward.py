"""The reference ReLU and Flatten backward against torch.autograd, and against central finite differences."""

import numpy as np
import pytest
import torch

from app.backends.reference.activation import flatten, flatten_backward, relu, relu_backward
from tests.backends.reference.against_torch import assert_grad_close
from tests.backends.reference.finite_differences import assert_matches_finite_differences

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SHAPES = [(), (5,), (3, 4), (2, 3, 4, 5), (0, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_backward_matches_autograd(shape, dtype):
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=gen, dtype=DTYPES[dtype])
    if x.numel() > 2:  # exact zeros, and a NaN: torch's gradient is 0 at 0 and passes through a NaN
        x.view(-1)[:3] = torch.tensor([0.0, -0.0, float("nan")])
    x.requires_grad_()
    y = torch.relu(x)
    grad_output = torch.randn(y.shape, generator=gen, dtype=DTYPES[dtype])
    y.backward(grad_output)
    assert_grad_close(relu_backward(x.detach().numpy(), grad_output.numpy()), x.grad, terms=1, what="relu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, start, end", [((), 0, 0), ((4,), 0, 0), ((2, 3, 4, 5), 1, 3), ((2, 3, 4), 0, 1),
                                               ((0, 3, 2), 1, 2), ((2, 3, 4), 2, 2)])
def test_flatten_backward_matches_autograd(shape, start, end, dtype):
    x = torch.randn(shape, dtype=DTYPES[dtype], requires_grad=True)
    y = torch.flatten(x, start, end)
    grad_output = torch.randn(y.shape, dtype=DTYPES[dtype])
    y.backward(grad_output)
    assert flatten(x.detach().numpy(), start, end).shape == tuple(y.shape)
    assert_grad_close(flatten_backward(grad_output.numpy(), tuple(shape)), x.grad, terms=1, what="flatten")


def test_relu_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink, where a difference would straddle it
    grad_output = rng.standard_normal(x.shape)
    assert_matches_finite_differences(relu, {"x": x}, grad_output, {"x": relu_backward(x, grad_output)})


def test_flatten_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 2))
    grad_output = rng.standard_normal((2, 6))
    assert_matches_finite_differences(lambda x: flatten(x, 1, 2), {"x": x}, grad_output,
                                      {"x": flatten_backward(grad_output, x.shape)})
