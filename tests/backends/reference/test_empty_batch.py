"""The reference formulas on an empty batch (N = 0) against torch.nn.functional and torch.nn on the
same empty input: the output's shape and dtype, and BatchNorm's buffers after the pass."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.backends.reference.activation import flatten, relu
from app.backends.reference.batchnorm import batch_norm, batch_norm_backward
from app.backends.reference.conv import conv
from app.backends.reference.linear import linear
from app.backends.reference.pool import avg_pool, max_pool

rng = np.random.default_rng(13)


def assert_same_empty(mine: np.ndarray, theirs: torch.Tensor) -> None:
    assert mine.shape == tuple(theirs.shape) and mine.size == 0, (mine.shape, theirs.shape)
    assert mine.dtype == theirs.numpy().dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0, 4), (3, 0, 4), (0, 2, 4)])
def test_linear(shape, dtype):
    x, weight, bias = np.empty(shape, dtype), rng.standard_normal((5, 4)).astype(dtype), np.ones(5, dtype)
    expected = F.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias))
    assert_same_empty(linear(x, weight, bias), expected)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv(dims, mode):
    x = np.empty((0, 4, *[5] * dims), np.float32)
    weight = rng.standard_normal((6, 2, *[3] * dims)).astype(np.float32)
    module = getattr(torch.nn, f"Conv{dims}d")(4, 6, 3, stride=2, padding=1, groups=2, padding_mode=mode)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight))
        expected = module(torch.from_numpy(x))
    out = conv(x, weight, module.bias.detach().numpy(), [2] * dims, ((1, 1),) * dims, [1] * dims, 2, mode)
    assert_same_empty(out, expected)


def test_conv_with_zero_spatial_sizes_in_an_empty_batch():
    """Padding makes room for a 1-wide kernel in a zero-wide input, which torch allows when N = 0."""
    x, weight = np.empty((0, 2, 0, 3), np.float32), rng.standard_normal((3, 2, 1, 1)).astype(np.float32)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1)
    assert_same_empty(conv(x, weight, None, [1, 1], ((1, 1), (1, 1)), [1, 1], 1), expected)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pools(dims, ceil_mode):
    x = np.empty((0, 2, *[6] * dims), np.float32)
    xt = torch.from_numpy(x)
    pool_max = getattr(F, f"max_pool{dims}d")
    pool_avg = getattr(F, f"avg_pool{dims}d")
    out, indices = max_pool(x, [3] * dims, [2] * dims, [1] * dims, [2] * dims, ceil_mode, return_indices=True)
    expected, expected_indices = pool_max(xt, 3, 2, 1, 2, ceil_mode=ceil_mode, return_indices=True)
    assert_same_empty(out, expected)
    assert_same_empty(indices, expected_indices)
    assert_same_empty(avg_pool(x, [3] * dims, [2] * dims, [1] * dims, ceil_mode, False),
                      pool_avg(xt, 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=False))


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 3, 4), (0,)])
def test_relu_and_flatten(shape):
    x = np.empty(shape, np.float32)
    assert_same_empty(relu(x), torch.relu(torch.from_numpy(x)))
    assert_same_empty(flatten(x, 0, len(shape) - 1), torch.flatten(torch.from_numpy(x)))


BN_SHAPES = [(0, 3), (0, 3, 4), (2, 3, 0), (0, 3, 2, 2), (0, 3, 2, 2, 2), (1, 3, 0, 2, 2)]
BN_MODULES = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_tracked(shape, training, momentum, dtype):
    """Training counts the empty batch and leaves the running statistics alone; evaluation changes nothing."""
    module = BN_MODULES[len(shape)](3, momentum=momentum, dtype=dtype)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
        module.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        module.running_var.copy_(torch.tensor([2.0, 0.25, 3.0]))
        module.num_batches_tracked.fill_(4)
    state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    x = torch.empty(shape, dtype=dtype)
    module.train(training)
    with torch.no_grad():
        expected = module(x)
    y, mean, var, buffers = batch_norm(x.numpy(), state["weight"], state["bias"], state["running_mean"],
                                       state["running_var"], state["num_batches_tracked"], training=training,
                                       momentum=momentum, eps=module.eps)
    assert_same_empty(y, expected)
    assert sorted(buffers) == ["num_batches_tracked", "running_mean", "running_var"]
    for name, buffer in module.named_buffers():
        np.testing.assert_array_equal(buffers[name], buffer.numpy())
    assert int(buffers["num_batches_tracked"]) == (5 if training else 4)
    assert mean.shape == var.shape == (3,) and mean.dtype == y.dtype
    if training:  # the mean of no values, as torch.mean(torch.empty(0)) is
        assert np.isnan(mean).all() and np.isnan(var).all()


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_untracked_and_not_affine(training):
    module = torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False).train(training)
    x = torch.empty(0, 3, 2, 2)
    y, mean, var, buffers = batch_norm(x.numpy(), None, None, None, None, None, training=training)
    assert_same_empty(y, module(x))
    assert buffers == {} and np.isnan(mean).all() and np.isnan(var).all()


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training, tracked", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_backward(shape, training, tracked, affine):
    """Autograd through torch's BatchNorm of an empty input (x·γ + β there): an empty dX, zero dγ and dβ,
    whether the statistics are the NaN ones of no values or the running ones."""
    module = BN_MODULES[len(shape)](3, affine=affine, track_running_stats=tracked, dtype=torch.float64).train(training)
    x = torch.empty(shape, dtype=torch.float64, requires_grad=True)
    out = module(x)
    out.backward(torch.ones_like(out))
    weight = module.weight.detach().numpy() if affine else None
    state = {k: v.numpy() for k, v in module.named_buffers()}
    _, mean, var, _ = batch_norm(x.detach().numpy(), weight, None, state.get("running_mean"), state.get("running_var"),
                                 state.get("num_batches_tracked"), training=training)
    batch_statistics = training or not tracked
    if not batch_statistics:
        mean, var = state["running_mean"], state["running_var"]
    grad_x, grad_weight, grad_bias = batch_norm_backward(np.ones(shape), x.detach().numpy(), weight, mean, var,
                                                         batch_statistics=batch_statistics, bias=affine)
    assert_same_empty(grad_x, x.grad)
    if affine:
        np.testing.assert_array_equal(grad_weight, module.weight.grad.numpy())
        np.testing.assert_array_equal(grad_bias, module.bias.grad.numpy())
        assert grad_weight.dtype == grad_bias.dtype == np.float64
    else:
        assert grad_weight is None and grad_bias is None
