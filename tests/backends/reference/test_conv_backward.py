"""The reference Conv1d/2d/3d backward (dX, dW, db) against torch.autograd over the option grid,
and against central finite differences in float64."""

import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.backends.reference.conv import conv, conv_backward, pad_backward
from app.layers.registry import LAYERS
from tests.backends.reference.against_torch import assert_grad_close
from tests.backends.reference.finite_differences import assert_matches_finite_differences

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths:UserWarning")]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


def reference_grads(dims: int, config: dict, x: np.ndarray, weight: np.ndarray, grad_output: np.ndarray):
    """conv_backward through the layer's own window arithmetic ("same" split, defaults), an
    unbatched input as a batch of one, as the layer runs the forward."""
    from app.layers.conv import window

    parsed = LAYERS[f"conv{dims}d"].config_model.model_validate(config)
    win = window(parsed)
    batched = x.ndim == dims + 2
    dx, dw, db = conv_backward(x if batched else x[None], weight, grad_output if batched else grad_output[None],
                               win.stride, win.padding, win.dilation, parsed.groups, parsed.padding_mode, parsed.bias)
    return (dx if batched else dx[0]), dw, db


def check_against_autograd(dims: int, config: dict, input_shape: tuple[int, ...], dtype: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the module's initial weight
    module = getattr(torch.nn, f"Conv{dims}d")(**config, dtype=DTYPES[dtype])
    x = torch.randn(input_shape, generator=gen, dtype=DTYPES[dtype], requires_grad=True)
    y = module(x)
    grad_output = torch.randn(y.shape, generator=gen, dtype=DTYPES[dtype])
    y.backward(grad_output)
    dx, dw, db = reference_grads(dims, config, x.detach().numpy(), module.weight.detach().numpy(), grad_output.numpy())
    what = f"Conv{dims}d({config}) on {list(input_shape)} {dtype}"
    batch = input_shape[0] if len(input_shape) == dims + 2 else 1
    positions = math.prod(y.shape[-dims:])
    kernel = math.prod(module.weight.shape[2:])
    assert_grad_close(dx, x.grad, terms=module.weight.shape[0] // config.get("groups", 1) * kernel, what=f"{what}: input")
    assert_grad_close(dw, module.weight.grad, terms=batch * positions, what=f"{what}: weight")
    assert_grad_close(db, module.bias.grad if module.bias is not None else None, terms=batch * positions,
                      what=f"{what}: bias")


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_pad_backward_matches_autograd_of_pad(mode, dims):
    """Gradient landing in the padding: dropped for zeros, folded back onto what it copied otherwise."""
    gen = torch.Generator().manual_seed(dims)
    x = torch.randn(2, 3, *[4, 5, 4][:dims], generator=gen, dtype=torch.float64, requires_grad=True)
    padding = [(1, 2), (3, 0), (2, 3)][:dims]
    flat = [p for pair in reversed(padding) for p in pair]  # F.pad lists the last dimension first
    y = F.pad(x, flat, mode="constant" if mode == "zeros" else mode)
    grad_output = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(grad_output)
    assert_grad_close(pad_backward(grad_output.numpy(), tuple(padding), mode), x.grad, terms=1, what=f"pad {mode}")


KERNELS = {1: 3, 2: (3, 2), 3: (2, 3, 2)}
EVEN_KERNELS = {1: 4, 2: (2, 4), 3: (2, 2, 4)}
SIZES = {1: (9,), 2: (7, 8), 3: (5, 6, 5)}
# Every padding mode in every dimension, with groups, dilation and stride at once, for each kind of
# padding: symmetric, per-dimension, and "same" with an even kernel (an odd total: PyTorch puts the
# extra one on the right).
PADDINGS = ["int", "list", "same"]
MODE_GRID = list(itertools.product((1, 2, 3), PADDING_MODES, PADDINGS))


@pytest.mark.parametrize("dims, padding_mode, padding", MODE_GRID)
def test_every_padding_mode_matches_autograd(dims, padding_mode, padding):
    case = MODE_GRID.index((dims, padding_mode, padding))
    config = {"in_channels": 4, "out_channels": 6, "kernel_size": KERNELS[dims], "stride": 2, "padding": 1,
              "dilation": 2, "groups": 2, "bias": True, "padding_mode": padding_mode}
    if padding == "list":
        config["padding"] = [1, 2, 0][:dims]
    elif padding == "same":
        config.update(kernel_size=EVEN_KERNELS[dims], padding="same", stride=1, dilation=1)
    check_against_autograd(dims, config, (2, 4, *SIZES[dims]), ("float32", "float64")[case % 2], seed=case)


def random_case(seed: int) -> tuple[int, dict, tuple[int, ...], str]:
    """A random config torch accepts, and an input for it: batched, unbatched or an empty batch."""
    rng = random.Random(seed)
    dims = rng.choice((1, 2, 3))
    groups = rng.choice((1, 1, 2, 3))
    kernel = [rng.randint(1, 4) for _ in range(dims)]
    dilation = [rng.randint(1, 3) for _ in range(dims)]
    stride = [rng.randint(1, 3) for _ in range(dims)]
    padding: str | list[int] = [rng.randint(0, 3) for _ in range(dims)]
    pads = [(p, p) for p in padding]
    if rng.random() < 0.2:
        padding, stride = "same", [1] * dims
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation, strict=True)]
    mode = rng.choice(PADDING_MODES)
    sizes = []
    for k, d, (left, right) in zip(kernel, dilation, pads, strict=True):
        low = max(1, d * (k - 1) + 1 - left - right, max(left, right) + (mode == "reflect"))
        sizes.append(rng.randint(low, low + 4))
    config = {"in_channels": groups * rng.randint(1, 3), "out_channels": groups * rng.randint(1, 3),
              "kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation,
              "groups": groups, "bias": rng.random() < 0.7, "padding_mode": mode}
    batch = rng.choice([(1,), (2,), (3,), (), (), (0,)])
    return dims, config, (*batch, config["in_channels"], *sizes), rng.choice(list(DTYPES))


@pytest.mark.parametrize("seed", range(60))
def test_random_configs_match_autograd(seed):
    check_against_autograd(*random_case(seed), seed=seed)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_empty_batch_gives_zero_parameter_gradients(dims):
    config = {"in_channels": 2, "out_channels": 3, "kernel_size": 2, "padding": 1, "padding_mode": "reflect"}
    check_against_autograd(dims, config, (0, 2, *SIZES[dims]), "float64", seed=dims)


@pytest.mark.parametrize("budget", [2 * 9 * 16 * 2, 2 * 9 * 4 * 2, 1])
def test_im2col_blocks_give_the_same_gradients(monkeypatch, budget):
    """Blocks of a few samples, a few output rows, or one row at a time: the same sums."""
    import app.backends.reference.conv as reference_conv

    monkeypatch.setattr(reference_conv, "IM2COL_BUDGET", budget)
    config = {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1, "groups": 2,
              "padding_mode": "circular"}
    check_against_autograd(2, config, (5, 2, 7, 6), "float64", seed=budget)


FD_SIZES = {1: (6,), 2: (4, 5), 3: (3, 4, 3)}
FD_GRID = list(itertools.product((1, 2, 3), PADDING_MODES))


@pytest.mark.parametrize("dims, padding_mode", FD_GRID)
def test_matches_finite_differences(dims, padding_mode):
    """Strided, dilated, grouped, padded on both sides (unequally in the first dimension)."""
    rng = np.random.default_rng(FD_GRID.index((dims, padding_mode)))
    padding = ((1, 2), *[(1, 1)] * (dims - 1))
    stride, dilation = (2, *[1] * (dims - 1)), (1, *[2] * (dims - 1))
    x = rng.standard_normal((2, 2, *FD_SIZES[dims]))
    weight = rng.standard_normal((4, 1, *[2] * dims))
    bias = rng.standard_normal(4)

    def forward(x, weight, bias):
        return conv(x, weight, bias, stride, padding, dilation, 2, padding_mode)

    grad_output = rng.standard_normal(forward(x, weight, bias).shape)
    dx, dw, db = conv_backward(x, weight, grad_output, stride, padding, dilation, 2, padding_mode)
    assert_matches_finite_differences(forward, {"x": x, "weight": weight, "bias": bias}, grad_output,
                                      {"x": dx, "weight": dw, "bias": db})
