"""The reference Conv1d/2d/3d against torch.nn.Conv1d/2d/3d on random data over the option grid.

Each case builds the torch module directly from the same constructor arguments, fills its weight
and bias with random (also negative) values, and runs the reference backend on the same state.
"""

import itertools
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.backends.reference.conv import pad
from app.backends.reference_backend import ReferenceBackend
from app.layers.registry import LAYERS

DTYPES = {"float32": torch.float32, "float64": torch.float64}
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")]


def check_against_torch(dims: int, config: dict, input_shape: tuple[int, ...], dtype: str, seed: int) -> None:
    spec = LAYERS[f"conv{dims}d"]
    parsed = spec.config_model.model_validate(config)
    gen = torch.Generator().manual_seed(seed)
    module = getattr(torch.nn, f"Conv{dims}d")(**config, dtype=DTYPES[dtype])
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=DTYPES[dtype]))
        x = torch.randn(input_shape, generator=gen, dtype=DTYPES[dtype])
        theirs = module(x)
    state = {name: tensor.numpy() for name, tensor in module.state_dict().items()}
    assert {k: v.shape for k, v in state.items()} == spec.parameter_shapes(parsed)
    assert spec.output_shape(parsed, tuple(x.shape)) == tuple(theirs.shape)
    mine = ReferenceBackend().forward(spec, parsed, x.numpy(), state, True).output
    assert mine.dtype == x.numpy().dtype
    torch.testing.assert_close(
        torch.from_numpy(mine), theirs,
        msg=lambda m: f"Conv{dims}d({config}) on {list(input_shape)} {dtype}\nmine:\n{mine}\ntheirs:\n{theirs.numpy()}\n{m}")


KERNELS = {1: 3, 2: (3, 2), 3: (2, 3, 1)}
SIZES = {1: (7,), 2: (6, 5), 3: (4, 5, 3)}
PADDINGS = [1, "same", 2, 0, "valid", (1, 0, 2)]
GRID = list(itertools.product((1, 2, 3), PADDING_MODES, (1, 2), (1, 2), (1, 2), (True, False), DTYPES))


@pytest.mark.parametrize("dims, padding_mode, groups, dilation, stride, batched, dtype", GRID)
def test_grid_matches_torch(dims, padding_mode, groups, dilation, stride, batched, dtype):
    case = GRID.index((dims, padding_mode, groups, dilation, stride, batched, dtype))
    padding = PADDINGS[case % len(PADDINGS)]
    if padding == "same" and stride > 1:
        padding = 1
    if isinstance(padding, tuple):
        padding = padding[:dims]
    config = {"in_channels": 2 * groups, "out_channels": 3 * groups, "kernel_size": KERNELS[dims], "stride": stride,
              "padding": padding, "dilation": dilation, "groups": groups, "bias": case % 3 != 0,
              "padding_mode": padding_mode}
    shape = ((2,) if batched else ()) + (2 * groups, *SIZES[dims])
    check_against_torch(dims, config, shape, dtype, seed=case)


def random_case(seed: int) -> tuple[int, dict, tuple[int, ...], str]:
    """A random config torch accepts (sizes as ints or lists), and an input big enough for it."""
    rng = random.Random(seed)
    dims = rng.choice((1, 2, 3))
    groups = rng.choice((1, 1, 2, 3))

    def size(low: int, high: int) -> tuple[int | list[int], list[int]]:
        if rng.random() < 0.3:
            value = rng.randint(low, high)
            return value, [value] * dims
        values = [rng.randint(low, high) for _ in range(dims)]
        return values, values

    kernel_size, kernel = size(1, 4)
    dilation_arg, dilation = size(1, 3)
    stride_arg, _ = size(1, 3)
    padding_arg, pads = size(0, 3)
    pads = [(p, p) for p in pads]
    choice = rng.random()
    if choice < 0.2:
        padding_arg, stride_arg = "same", 1
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]
    elif choice < 0.3:
        padding_arg, pads = "valid", [(0, 0)] * dims
    mode = rng.choice(PADDING_MODES)
    sizes = []
    for k, d, (left, right) in zip(kernel, dilation, pads):
        low = max(1, d * (k - 1) + 1 - left - right, max(left, right) + (mode == "reflect"))
        sizes.append(rng.randint(low, low + 4))
    config = {"in_channels": groups * rng.randint(1, 3), "out_channels": groups * rng.randint(1, 3),
              "kernel_size": kernel_size, "stride": stride_arg, "padding": padding_arg, "dilation": dilation_arg,
              "groups": groups, "bias": rng.random() < 0.7, "padding_mode": mode}
    batch = (rng.randint(1, 3),) if rng.random() < 0.7 else ()
    return dims, config, batch + (config["in_channels"], *sizes), rng.choice(list(DTYPES))


@pytest.mark.parametrize("seed", range(120))
def test_random_configs_match_torch(seed):
    check_against_torch(*random_case(seed), seed=seed)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_pad_matches_torch_pad(mode, dims):
    x = torch.randn(2, 3, *[4, 5, 3][:dims], dtype=torch.float64)
    padding = [(1, 2), (3, 0), (2, 2)][:dims]
    flat = [p for pair in reversed(padding) for p in pair]  # F.pad lists the last dimension first
    theirs = F.pad(x, flat, mode="constant" if mode == "zeros" else mode)
    mine = pad(x.numpy(), tuple(padding), mode)
    np.testing.assert_array_equal(mine, theirs.numpy(), err_msg=f"mine vs theirs, mode {mode}")


def test_odd_same_padding_puts_the_extra_on_the_right():
    """kernel 4: total padding 3, PyTorch pads 1 on the left and 2 on the right."""
    x = torch.arange(6.0, dtype=torch.float64).reshape(1, 1, 6)
    weight = torch.tensor([[[1.0, 10.0, 100.0, 1000.0]]], dtype=torch.float64)
    theirs = F.conv1d(x, weight, padding="same")
    spec = LAYERS["conv1d"]
    config = spec.config_model.model_validate({"in_channels": 1, "out_channels": 1, "kernel_size": 4,
                                               "padding": "same", "bias": False})
    mine = ReferenceBackend().forward(spec, config, x.numpy(), {"weight": weight.numpy()}, True).output
    np.testing.assert_array_equal(mine, theirs.numpy())
    assert mine[0, 0, 0] == 0 * 10 + 1 * 100 + 2 * 1000  # window [pad, x0, x1, x2]


@pytest.mark.parametrize("budget", [2 * 9 * 16 * 2, 2 * 9 * 4 * 2, 1])
def test_im2col_in_blocks_gives_the_same_result(monkeypatch, budget):
    """The im2col copy is bounded by doing a few samples, or a few output rows, at a time."""
    import app.backends.reference.conv as reference_conv

    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    module = torch.nn.Conv2d(2, 4, 3, groups=2, dtype=torch.float64)
    theirs = module(x).detach()
    monkeypatch.setattr(reference_conv, "IM2COL_BUDGET", budget)  # 2 samples, 2 rows, 1 row per product
    mine = reference_conv.conv(x.numpy(), module.weight.detach().numpy(), module.bias.detach().numpy(),
                               (1, 1), ((0, 0), (0, 0)), (1, 1), 2)
    torch.testing.assert_close(torch.from_numpy(mine), theirs)
