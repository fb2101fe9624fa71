"""The reference Linear backward against torch.autograd, and against central finite differences."""

import itertools

import numpy as np
import pytest
import torch

from app.backends.reference.linear import linear, linear_backward
from tests.backends.reference.against_torch import assert_grad_close
from tests.backends.reference.finite_differences import assert_matches_finite_differences

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# leading dimensions (*) of the input: unbatched, a batch, several, an empty batch
LEADING = [(), (5,), (2, 3), (0,), (4, 0, 2)]
GRID = list(itertools.product(LEADING, (True, False), DTYPES))


@pytest.mark.parametrize("leading, bias, dtype", GRID)
def test_linear_backward_matches_autograd(leading, bias, dtype):
    gen = torch.Generator().manual_seed(GRID.index((leading, bias, dtype)))
    layer = torch.nn.Linear(4, 3, bias=bias, dtype=DTYPES[dtype])
    x = torch.randn((*leading, 4), generator=gen, dtype=DTYPES[dtype], requires_grad=True)
    y = layer(x)
    grad_output = torch.randn(y.shape, generator=gen, dtype=DTYPES[dtype])
    y.backward(grad_output)
    weight = layer.weight.detach().numpy()
    dx, dw, db = linear_backward(x.detach().numpy(), weight, grad_output.numpy(), bias)
    rows = int(np.prod(leading))
    assert_grad_close(dx, x.grad, terms=3, what="input")
    assert_grad_close(dw, layer.weight.grad, terms=rows, what="weight")
    assert_grad_close(db, layer.bias.grad if bias else None, terms=rows, what="bias")


@pytest.mark.parametrize("leading", [(), (3,), (2, 2)])
def test_linear_backward_matches_finite_differences(leading):
    rng = np.random.default_rng(len(leading))
    x, weight, bias = rng.standard_normal((*leading, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    grad_output = rng.standard_normal((*leading, 3))
    dx, dw, db = linear_backward(x, weight, grad_output)
    assert_matches_finite_differences(linear, {"x": x, "weight": weight, "bias": bias}, grad_output,
                                      {"x": dx, "weight": dw, "bias": db})
