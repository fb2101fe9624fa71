"""The reference batch_norm against torch.nn.BatchNorm1d/2d/3d on random data, over the option space."""

import numpy as np
import pytest
import torch

from app.backends.reference.batchnorm import batch_norm

SHAPES = [(6, 4), (5, 4, 3), (3, 4, 3, 2), (2, 4, 2, 3, 2)]  # C = 4 everywhere
MODULES = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}


def make_module(shape, dtype, seed, **options) -> torch.nn.Module:
    """A module whose every tensor is random, so weight, bias and each buffer matter."""
    gen = torch.Generator().manual_seed(seed)
    module = MODULES[len(shape)](shape[1], dtype=dtype, **options)
    with torch.no_grad():
        if module.affine:
            module.weight.copy_(torch.randn(shape[1], generator=gen, dtype=dtype))
            module.bias.copy_(torch.randn(shape[1], generator=gen, dtype=dtype))
        if module.track_running_stats:
            module.running_mean.copy_(torch.randn(shape[1], generator=gen, dtype=dtype))
            module.running_var.copy_(torch.rand(shape[1], generator=gen, dtype=dtype) + 0.5)
            module.num_batches_tracked.fill_(4)
    return module


def state_of(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def run_reference(module: torch.nn.Module, x: np.ndarray, state: dict[str, np.ndarray], training: bool):
    return batch_norm(x, state.get("weight"), state.get("bias"), state.get("running_mean"), state.get("running_var"),
                      state.get("num_batches_tracked"), training=training, momentum=module.momentum, eps=module.eps)


def close(mine: np.ndarray, theirs: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(torch.from_numpy(np.asarray(mine)), theirs, msg=lambda m: f"{what}, mine vs torch: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [None, 0.1, 0.3])
@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_matches_torch(shape, training, affine, track_running_stats, momentum, dtype):
    seed = len(shape) * 100 + training * 8 + affine * 4 + track_running_stats * 2
    module = make_module(shape, dtype, seed, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype) * 2 + 0.5
    state = state_of(module)
    y, mean, var, buffers = run_reference(module, x.numpy(), state, training)

    module.train(training)
    with torch.no_grad():
        expected = module(x)
    close(y, expected, "output")
    assert y.dtype == x.numpy().dtype and y.shape == x.shape
    if training or not track_running_stats:
        batch_var, batch_mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], correction=0)
        close(mean, batch_mean, "batch mean")
        close(var, batch_var, "batch variance (biased)")
    else:
        close(mean, module.running_mean, "running mean used")
        close(var, module.running_var, "running variance used")
    assert set(buffers) == ({"running_mean", "running_var", "num_batches_tracked"} if track_running_stats else set())
    for name, value in buffers.items():
        close(value, getattr(module, name), name)
    if track_running_stats:
        assert buffers["num_batches_tracked"].dtype == np.int64 and buffers["num_batches_tracked"].shape == ()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [None, 0.1, 0.3])
@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 5, 6)])
def test_chained_steps_keep_running_statistics_equal_to_torch(shape, momentum, dtype):
    """k successive calls, each fed the previous buffers; an evaluation step in between changes nothing."""
    module = MODULES[len(shape)](shape[1], momentum=momentum, dtype=dtype)
    state = state_of(module)
    gen = torch.Generator().manual_seed(7)
    for step, training in enumerate([True, True, False, True, True, True]):
        x = torch.randn(shape, generator=gen, dtype=dtype) * (step + 1) - step
        y, _, _, buffers = run_reference(module, x.numpy(), state, training)
        module.train(training)
        with torch.no_grad():
            expected = module(x)
        close(y, expected, f"output at step {step}")
        state.update(buffers)
    assert int(state["num_batches_tracked"]) == int(module.num_batches_tracked) == 5
    close(state["running_mean"], module.running_mean, "running_mean after 6 steps")
    close(state["running_var"], module.running_var, "running_var after 6 steps")


@pytest.mark.parametrize("offset", [1e3, -3e4])
def test_statistics_stay_accurate_far_from_zero(offset):
    """A large mean next to a small spread: no cancellation in the variance (float32 input).

    The float32 output itself carries rounding of order eps * |x| / std here, in torch too, so it is
    checked against float64 truth: no worse than torch's own error.
    """
    module = torch.nn.BatchNorm2d(3)
    x = torch.randn((8, 3, 16, 16), generator=torch.Generator().manual_seed(3)) + offset
    y, _, var, buffers = run_reference(module, x.numpy(), state_of(module), True)
    with torch.no_grad():
        expected = module(x)
        truth = torch.nn.BatchNorm2d(3, dtype=torch.float64)(x.double())
    batch_var = torch.var(x.double(), dim=(0, 2, 3), correction=0)
    np.testing.assert_allclose(var, batch_var.numpy(), rtol=1e-6)
    mine_error = np.abs(y - truth.numpy()).max()
    torch_error = (expected.double() - truth).abs().max().item()
    assert mine_error <= torch_error + 1e-6, (mine_error, torch_error)
    close(buffers["running_var"], module.running_var, "running_var")


def test_one_value_per_channel_is_refused_like_torch():
    x = np.ones((1, 4, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        batch_norm(x, None, None, None, None, None, training=True)
    # Evaluation with running statistics needs no batch statistics.
    y, *_ = batch_norm(x, None, None, np.zeros(4, np.float32), np.ones(4, np.float32), np.array(0), training=False)
    assert y.shape == x.shape


def test_inputs_are_not_modified():
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    before = (x.copy(), running_mean.copy(), running_var.copy())
    batch_norm(x, None, None, running_mean, running_var, np.array(2), training=True, momentum=None)
    for a, b in zip(before, (x, running_mean, running_var)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("infinite", [float("inf"), float("-inf")])
def test_an_infinite_running_mean_gives_torchs_infinities_in_evaluation(dtype, infinite):
    """(x - inf) / sqrt(var + eps) is -inf: the rounding correction of the mean must not turn it into NaN."""
    module = make_module((5, 4, 3), dtype, seed=7).eval()
    with torch.no_grad():
        module.running_mean[1] = infinite
    x = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(8), dtype=dtype)
    y, *_ = run_reference(module, x.numpy(), state_of(module), training=False)
    expected = module(x).detach()
    assert torch.isinf(expected[:, 1]).all()
    close(y, expected, "output")
