"""The reference BatchNorm1d/2d/3d backward against torch.autograd over the option grid (training
and evaluation, affine with and without bias or not at all, running statistics tracked or not,
both dtypes), and against central finite differences in float64."""

import itertools
import math

import numpy as np
import pytest
import torch

from app.backends.reference.batchnorm import batch_norm, batch_norm_backward
from tests.backends.reference.against_torch import assert_grad_close
from tests.backends.reference.finite_differences import assert_matches_finite_differences

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = [(6, 4), (5, 4, 3), (3, 4, 3, 2), (2, 4, 2, 3, 2)]  # C = 4 everywhere
MODULES = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}
AFFINE = {"none": {"affine": False}, "weight and bias": {"affine": True}, "weight only": {"affine": True, "bias": False}}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_module(shape, dtype, seed, **options) -> torch.nn.Module:
    """A module whose every tensor is random, so weight, bias and the running statistics matter."""
    gen = torch.Generator().manual_seed(seed)
    module = MODULES[len(shape)](shape[1], dtype=dtype, **options)
    with torch.no_grad():
        if module.weight is not None:
            module.weight.copy_(torch.randn(shape[1], generator=gen, dtype=dtype))
        if module.bias is not None:
            module.bias.copy_(torch.randn(shape[1], generator=gen, dtype=dtype))
        if module.track_running_stats:
            module.running_mean.copy_(torch.randn(shape[1], generator=gen, dtype=dtype))
            module.running_var.copy_(torch.rand(shape[1], generator=gen, dtype=dtype) + 0.5)
    return module


def reference_grads(module: torch.nn.Module, x: np.ndarray, grad_output: np.ndarray, training: bool):
    """The reference forward (for the statistics that normalized) and backward, as the layer runs them."""
    state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    _, mean, var, _ = batch_norm(x, state.get("weight"), state.get("bias"), state.get("running_mean"),
                                 state.get("running_var"), state.get("num_batches_tracked"), training=training,
                                 momentum=module.momentum, eps=module.eps)
    return batch_norm_backward(grad_output, x, state.get("weight"), mean, var,
                               batch_statistics=training or not module.track_running_stats, eps=module.eps,
                               bias=module.bias is not None)


GRID = list(itertools.product(SHAPES, (True, False), AFFINE, (True, False), DTYPES))


@pytest.mark.parametrize("shape, training, affine, track_running_stats, dtype", GRID)
def test_matches_autograd(shape, training, affine, track_running_stats, dtype):
    case = GRID.index((shape, training, affine, track_running_stats, dtype))
    module = make_module(shape, DTYPES[dtype], case, track_running_stats=track_running_stats, **AFFINE[affine])
    module.train(training)
    gen = torch.Generator().manual_seed(case)
    x = (torch.randn(shape, generator=gen, dtype=DTYPES[dtype]) * 2 + 0.5).requires_grad_()
    y = module(x)
    grad_output = torch.randn(shape, generator=gen, dtype=DTYPES[dtype])
    y.backward(grad_output)
    dx, dweight, dbias = reference_grads(module, x.detach().numpy(), grad_output.numpy(), training)
    count = shape[0] * math.prod(shape[2:])  # values per channel: what every statistic sums
    what = f"{type(module).__name__}({AFFINE[affine]}, track_running_stats={track_running_stats}) " \
           f"{'training' if training else 'eval'} on {list(shape)} {dtype}"
    assert_grad_close(dx, x.grad, terms=count, what=f"{what}: input")
    assert_grad_close(dweight, None if module.weight is None else module.weight.grad, terms=count, what=f"{what}: weight")
    assert_grad_close(dbias, None if module.bias is None else module.bias.grad, terms=count, what=f"{what}: bias")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3, 2)])
def test_empty_batch_gives_zero_parameter_gradients_as_torch(shape, training):
    module = make_module(shape, torch.float64, 0)
    module.train(training)
    x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    y = module(x)
    y.backward(torch.zeros_like(y))
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    # an empty batch has no statistics of its own: any will do, none is read
    dx, dweight, dbias = batch_norm_backward(np.zeros(shape), x.detach().numpy(), state["weight"], state["running_mean"],
                                             state["running_var"], batch_statistics=training, eps=module.eps)
    assert_grad_close(dx, x.grad, terms=1, what="input")
    assert_grad_close(dweight, module.weight.grad, terms=1, what="weight")
    assert_grad_close(dbias, module.bias.grad, terms=1, what="bias")


@pytest.mark.parametrize("offset", [1e3, -3e4])
def test_float32_far_from_zero_stays_close_to_the_exact_gradient(offset):
    """x - E[x] is formed first, so a large mean does not cancel the gradient's small terms away:
    float32 stays as close to torch's float64 gradient as torch's own float32 does, or closer."""
    shape = (8, 3, 5, 5)
    gen = torch.Generator().manual_seed(1)
    exact_module = make_module(shape, torch.float64, 1)
    x64 = (torch.randn(shape, generator=gen, dtype=torch.float64) + offset).requires_grad_()
    grad_output = torch.randn(shape, generator=gen, dtype=torch.float64)
    exact_module(x64).backward(grad_output)
    module = make_module(shape, torch.float32, 1)
    x32 = x64.detach().float().requires_grad_()
    module(x32).backward(grad_output.float())
    mine, _, _ = reference_grads(module, x32.detach().numpy(), grad_output.float().numpy(), True)
    exact = x64.grad.numpy()
    mine_error = np.abs(mine - exact).max()
    torch_error = np.abs(x32.grad.numpy() - exact).max()
    assert mine_error <= max(2 * torch_error, 1e-4 * np.abs(exact).max()), (mine_error, torch_error)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 2), (3, 2, 4), (2, 2, 2, 3)])
def test_matches_finite_differences(shape, training, bias):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape) * 2 + 1
    weight, beta = rng.standard_normal(2), rng.standard_normal(2)
    running_mean, running_var = rng.standard_normal(2), rng.random(2) + 0.5

    def forward(x, weight, bias=None):
        return batch_norm(x, weight, bias, running_mean, running_var, np.asarray(3), training=training, eps=1e-3)[0]

    _, mean, var, _ = batch_norm(x, weight, beta, running_mean, running_var, np.asarray(3), training=training, eps=1e-3)
    grad_output = rng.standard_normal(shape)
    dx, dweight, dbias = batch_norm_backward(grad_output, x, weight, mean, var, batch_statistics=training, eps=1e-3,
                                             bias=bias)
    inputs = {"x": x, "weight": weight} | ({"bias": beta} if bias else {})
    analytic = {"x": dx, "weight": dweight} | ({"bias": dbias} if bias else {})
    assert (dbias is None) != bias
    assert_matches_finite_differences(forward, inputs, grad_output, analytic)


def test_without_affine_matches_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 2))
    grad_output = rng.standard_normal(x.shape)

    def forward(x):
        return batch_norm(x, None, None, None, None, None, training=True)[0]

    _, mean, var, _ = batch_norm(x, None, None, None, None, None, training=True)
    dx, dweight, dbias = batch_norm_backward(grad_output, x, None, mean, var, batch_statistics=True)
    assert dweight is None and dbias is None
    assert_matches_finite_differences(forward, {"x": x}, grad_output, {"x": dx})
