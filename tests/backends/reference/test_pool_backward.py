"""The reference MaxPool1d/2d/3d and AvgPool1d/2d/3d backward against torch.autograd over the
option grid (sampled with fixed seeds), and against central finite differences in float64."""

import itertools
import math
import random

import numpy as np
import pytest
import torch

from app.backends.reference.pool import avg_pool, avg_pool_backward, max_pool, max_pool_backward
from app.errors import ShapeMismatch
from app.layers.pool import window
from app.layers.registry import LAYERS
from tests.backends.reference.against_torch import assert_grad_close
from tests.backends.reference.finite_differences import assert_matches_finite_differences

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def reference_grad(kind: str, config: dict, x: np.ndarray, grad_output: np.ndarray) -> np.ndarray:
    """The reference forward (for max-pool's indices) and backward, through the layer's window arithmetic."""
    parsed = LAYERS[kind].config_model.model_validate(config)
    win = window(parsed)
    padding = [left for left, _ in win.padding]
    if kind.startswith("max"):
        _, indices = max_pool(x, win.kernel, win.stride, padding, win.dilation, parsed.ceil_mode, return_indices=True)
        return max_pool_backward(grad_output, indices, x.shape, win.kernel, win.stride, win.dilation)
    return avg_pool_backward(grad_output, x.shape, win.kernel, win.stride, padding,
                             parsed.count_include_pad, getattr(parsed, "divisor_override", None))


def check_against_autograd(kind: str, config: dict, x: torch.Tensor, seed: int) -> None:
    module = getattr(torch.nn, LAYERS[kind].torch_name)(**config)
    x = x.detach().requires_grad_()
    y = module(x)
    y = y[0] if isinstance(y, tuple) else y
    grad_output = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    y.backward(grad_output)
    mine = reference_grad(kind, config, x.detach().numpy(), grad_output.numpy())
    # an input element sums the gradients of the windows that read it (max-pool: that chose it)
    assert_grad_close(mine, x.grad, terms=math.prod(window(LAYERS[kind].config_model.model_validate(config)).kernel),
                      what=f"{LAYERS[kind].torch_name}({config}) on {list(x.shape)} {x.dtype}")


def accepted(kind: str, config: dict, shape: tuple[int, ...]) -> bool:
    """Whether the layer takes this input (max-pool refuses windows that read only padding)."""
    try:
        LAYERS[kind].output_shape(LAYERS[kind].config_model.model_validate(config), shape)
    except ShapeMismatch:
        return False
    return True


KERNELS = {1: 3, 2: (3, 2), 3: (2, 3, 2)}
SIZES = {1: (8,), 2: (7, 6), 3: (5, 6, 4)}
BATCHES = [(2,), (), (0,)]  # batched, unbatched, an empty batch
MAX_GRID = list(itertools.product((1, 2, 3), (False, True), (0, 1), (None, 1, 2), (1, 2), range(3), DTYPES))
AVG_GRID = [case for case in itertools.product((1, 2, 3), (False, True), (0, 1), (None, 1, 2), (True, False),
                                               (None, 3, -2), range(3), DTYPES) if case[0] > 1 or case[5] is None]


@pytest.mark.parametrize("dims, ceil_mode, padding, stride, dilation, batch, dtype",
                         random.Random(0).sample(MAX_GRID, 60))
def test_max_pool_grid_matches_autograd(dims, ceil_mode, padding, stride, dilation, batch, dtype):
    case = MAX_GRID.index((dims, ceil_mode, padding, stride, dilation, batch, dtype))
    config = {"kernel_size": KERNELS[dims], "stride": stride, "padding": padding, "dilation": dilation,
              "ceil_mode": ceil_mode}
    gen = torch.Generator().manual_seed(case)
    x = torch.randn((*BATCHES[batch], 3, *SIZES[dims]), generator=gen, dtype=DTYPES[dtype]) - 1.0  # -inf padding, not 0
    check_against_autograd(f"maxpool{dims}d", config, x, seed=case)


@pytest.mark.parametrize("dims, ceil_mode, padding, stride, count_include_pad, divisor_override, batch, dtype",
                         random.Random(0).sample(AVG_GRID, 60))
def test_avg_pool_grid_matches_autograd(dims, ceil_mode, padding, stride, count_include_pad, divisor_override, batch, dtype):
    case = AVG_GRID.index((dims, ceil_mode, padding, stride, count_include_pad, divisor_override, batch, dtype))
    config = {"kernel_size": KERNELS[dims], "stride": stride, "padding": padding, "ceil_mode": ceil_mode,
              "count_include_pad": count_include_pad}
    if dims > 1:
        config["divisor_override"] = divisor_override
    gen = torch.Generator().manual_seed(case)
    x = torch.randn((*BATCHES[batch], 3, *SIZES[dims]), generator=gen, dtype=DTYPES[dtype])
    check_against_autograd(f"avgpool{dims}d", config, x, seed=case)


def random_pool_case(seed: int) -> tuple[str, dict, tuple[int, ...], str]:
    """A random pooling config the layer accepts, and an input that fits it."""
    rng = random.Random(seed)
    while True:
        dims = rng.choice((1, 2, 3))
        is_max = rng.random() < 0.5
        kernel = [rng.randint(1, 4) for _ in range(dims)]
        stride = rng.choice([None, [rng.randint(1, 4) for _ in range(dims)]])
        padding = [rng.randint(0, k // 2) for k in kernel]
        dilation = [rng.randint(1, 3) for _ in range(dims)] if is_max else [1] * dims
        config: dict = {"kernel_size": kernel, "stride": stride, "padding": padding, "ceil_mode": rng.random() < 0.5}
        if is_max:
            config["dilation"] = dilation
        else:
            config["count_include_pad"] = rng.random() < 0.5
            if dims > 1 and rng.random() < 0.3:
                config["divisor_override"] = rng.choice([1, 2, 5, -3])
        sizes = []
        for k, p, d in zip(kernel, padding, dilation, strict=True):
            low = max(1, d * (k - 1) + 1 - 2 * p, k if (dims == 3 and not is_max) else 1)  # avg_pool3d: size >= kernel
            sizes.append(rng.randint(low, low + 5))
        shape = (*rng.choice([(1,), (2,), (), (0,)]), rng.randint(1, 3), *sizes)
        kind = f"{'max' if is_max else 'avg'}pool{dims}d"
        if accepted(kind, config, shape):
            return kind, config, shape, rng.choice(list(DTYPES))


@pytest.mark.parametrize("seed", range(60))
def test_random_pool_configs_match_autograd(seed):
    kind, config, shape, dtype = random_pool_case(seed)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPES[dtype]) * 3
    check_against_autograd(kind, config, x, seed=seed)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_pool_ties_and_overlaps_accumulate_like_autograd(dims):
    """Few distinct values (many ties) and overlapping windows (stride 1): a position that is the
    maximum of several windows gets the sum of their gradients, the tie going where torch's index says."""
    gen = torch.Generator().manual_seed(dims)
    x = torch.randint(-2, 2, (2, 2, *SIZES[dims]), generator=gen).to(torch.float64)
    config = {"kernel_size": 3, "stride": 1, "padding": 1}
    check_against_autograd(f"maxpool{dims}d", config, x, seed=dims)
    module = getattr(torch.nn, f"MaxPool{dims}d")(**config)
    x.requires_grad_()
    module(x).sum().backward()
    assert x.grad.max() > 1  # some position did collect several windows' gradients


def test_max_pool_window_of_only_padding_sends_its_gradient_nowhere():
    """Such a window is refused by the layer (a 422); the formula alone drops its gradient instead of
    writing outside the input, which is what crashes torch's backward."""
    x = np.array([[[0.5, -1.0]]])
    kernel, stride, padding, dilation = (2,), (1,), (1,), (3,)
    out, indices = max_pool(x, kernel, stride, padding, dilation, return_indices=True)
    assert out[0, 0, 0] == -np.inf and indices[0, 0, 0] >= 2  # window 0 reads positions -1 and 2
    grad = max_pool_backward(np.ones_like(out), indices, x.shape, kernel, stride, dilation)
    np.testing.assert_array_equal(grad, np.zeros_like(x))
    assert not accepted("maxpool1d", {"kernel_size": 2, "stride": 1, "padding": 1, "dilation": 3}, (1, 1, 2))


FD_CASES = {
    1: {"kernel": (3,), "stride": (2,), "padding": (1,), "dilation": (2,), "size": (9,)},
    2: {"kernel": (3, 2), "stride": (1, 2), "padding": (1, 1), "dilation": (1, 2), "size": (5, 6)},
    3: {"kernel": (2, 2, 3), "stride": (1, 2, 2), "padding": (1, 0, 1), "dilation": (1, 1, 1), "size": (3, 4, 5)},
}


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_pool_matches_finite_differences(dims, ceil_mode):
    case = FD_CASES[dims]
    rng = np.random.default_rng(dims)
    # distinct values, far apart compared with the step: no maximum changes hands within a difference
    x = rng.permutation(math.prod(case["size"]) * 2).astype(np.float64)[:math.prod(case["size"]) * 2].reshape(2, *case["size"]) * 0.1

    def forward(x):
        return max_pool(x, case["kernel"], case["stride"], case["padding"], case["dilation"], ceil_mode)[0]

    _, indices = max_pool(x, case["kernel"], case["stride"], case["padding"], case["dilation"], ceil_mode, True)
    grad_output = rng.standard_normal(indices.shape)
    grad = max_pool_backward(grad_output, indices, x.shape, case["kernel"], case["stride"], case["dilation"])
    assert_matches_finite_differences(forward, {"x": x}, grad_output, {"x": grad})


@pytest.mark.parametrize("count_include_pad, divisor_override", [(True, None), (False, None), (False, 5)])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_avg_pool_matches_finite_differences(dims, ceil_mode, count_include_pad, divisor_override):
    case = FD_CASES[dims]
    rng = np.random.default_rng(dims)
    x = rng.standard_normal((2, *case["size"]))

    def forward(x):
        return avg_pool(x, case["kernel"], case["stride"], case["padding"], ceil_mode, count_include_pad, divisor_override)

    grad_output = rng.standard_normal(forward(x).shape)
    grad = avg_pool_backward(grad_output, x.shape, case["kernel"], case["stride"], case["padding"],
                             count_include_pad, divisor_override)
    assert_matches_finite_differences(forward, {"x": x}, grad_output, {"x": grad})
