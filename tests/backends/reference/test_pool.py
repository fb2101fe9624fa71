"""The reference MaxPool1d/2d/3d and AvgPool1d/2d/3d against torch.nn on random data over the option grid.

Inputs are mostly negative, so a max-pool that pads with 0 instead of -inf is caught; indices are
compared exactly, as are ties, NaN and infinities.
"""

import itertools
import random

import numpy as np
import pytest
import torch

from app.backends.reference.pool import avg_pool, max_pool
from app.backends.reference_backend import ReferenceBackend
from app.errors import ShapeMismatch
from app.layers.registry import LAYERS

DTYPES = {"float32": torch.float32, "float64": torch.float64}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def check_against_torch(kind: str, config: dict, x: torch.Tensor) -> None:
    """The reference backend, through the layer spec, against the torch.nn module built from `config`."""
    spec = LAYERS[kind]
    parsed = spec.config_model.model_validate(config)
    module = getattr(torch.nn, spec.torch_name)(**config)
    theirs = module(x)
    theirs, their_indices = theirs if isinstance(theirs, tuple) else (theirs, None)
    assert spec.output_shape(parsed, tuple(x.shape)) == tuple(theirs.shape)
    result = ReferenceBackend().forward(spec, parsed, x.numpy(), {}, True)
    mine = result.output

    def report(message: str) -> str:
        return f"{spec.torch_name}({config}) on {list(x.shape)} {x.dtype}\nmine:\n{mine}\ntheirs:\n{theirs.numpy()}\n{message}"

    assert mine.dtype == x.numpy().dtype
    torch.testing.assert_close(torch.from_numpy(mine), theirs, equal_nan=True, msg=report)
    if their_indices is None:
        assert "indices" not in result.extras
    else:
        mine_indices = result.extras["indices"]
        assert mine_indices.dtype == np.int64
        np.testing.assert_array_equal(mine_indices, their_indices.numpy(), err_msg=report("indices differ"))


def mostly_negative(shape: tuple[int, ...], dtype: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=DTYPES[dtype]) - 1.0


KERNELS = {1: 3, 2: (3, 2), 3: (2, 3, 2)}
SIZES = {1: (8,), 2: (7, 6), 3: (5, 6, 4)}
MAX_GRID = list(itertools.product((1, 2, 3), (False, True), (0, 1), (None, 1, 2), (1, 2), (True, False), DTYPES))


@pytest.mark.parametrize("dims, ceil_mode, padding, stride, dilation, batched, dtype", MAX_GRID)
def test_max_pool_grid_matches_torch(dims, ceil_mode, padding, stride, dilation, batched, dtype):
    case = MAX_GRID.index((dims, ceil_mode, padding, stride, dilation, batched, dtype))
    x = mostly_negative(((2,) if batched else ()) + (3, *SIZES[dims]), dtype, seed=case)
    for return_indices in (False, True):
        config = {"kernel_size": KERNELS[dims], "stride": stride, "padding": padding, "dilation": dilation,
                  "ceil_mode": ceil_mode, "return_indices": return_indices}
        check_against_torch(f"maxpool{dims}d", config, x)


AVG_GRID = [case for case in itertools.product((1, 2, 3), (False, True), (0, 1), (None, 1, 2), (True, False),
                                               (None, 3), (True, False), DTYPES)
            if case[0] > 1 or case[5] is None]


@pytest.mark.parametrize("dims, ceil_mode, padding, stride, count_include_pad, divisor_override, batched, dtype", AVG_GRID)
def test_avg_pool_grid_matches_torch(dims, ceil_mode, padding, stride, count_include_pad, divisor_override, batched, dtype):
    case = AVG_GRID.index((dims, ceil_mode, padding, stride, count_include_pad, divisor_override, batched, dtype))
    config = {"kernel_size": KERNELS[dims], "stride": stride, "padding": padding, "ceil_mode": ceil_mode,
              "count_include_pad": count_include_pad}
    if dims > 1:
        config["divisor_override"] = divisor_override
    x = mostly_negative(((2,) if batched else ()) + (3, *SIZES[dims]), dtype, seed=case)
    check_against_torch(f"avgpool{dims}d", config, x)


def random_pool_case(seed: int) -> tuple[str, dict, tuple[int, ...], str]:
    """A random pooling config torch accepts, and an input that fits it."""
    rng = random.Random(seed)
    dims = rng.choice((1, 2, 3))
    is_max = rng.random() < 0.5
    kernel = [rng.randint(1, 4) for _ in range(dims)]
    stride = rng.choice([None, [rng.randint(1, 4) for _ in range(dims)]])
    padding = [rng.randint(0, k // 2) for k in kernel]
    dilation = [rng.randint(1, 3) for _ in range(dims)] if is_max else [1] * dims
    config: dict = {"kernel_size": kernel if rng.random() < 0.8 else kernel[0], "stride": stride,
                    "padding": padding, "ceil_mode": rng.random() < 0.5}
    if not isinstance(config["kernel_size"], list):
        kernel = [kernel[0]] * dims
        padding = config["padding"] = [min(p, kernel[0] // 2) for p in padding]
    if is_max:
        config.update(dilation=dilation, return_indices=rng.random() < 0.5)
    else:
        config["count_include_pad"] = rng.random() < 0.5
        if dims > 1 and rng.random() < 0.3:
            config["divisor_override"] = rng.choice([1, 2, 5, -3])
    sizes = []
    for k, p, d in zip(kernel, padding, dilation):
        low = max(1, d * (k - 1) + 1 - 2 * p, k if (dims == 3 and not is_max) else 1)  # avg_pool3d: size >= kernel
        sizes.append(rng.randint(low, low + 5))
    batch = (rng.randint(1, 2),) if rng.random() < 0.7 else ()
    kind = f"{'max' if is_max else 'avg'}pool{dims}d"
    return kind, config, batch + (rng.randint(1, 3), *sizes), rng.choice(list(DTYPES))


@pytest.mark.parametrize("seed", range(150))
def test_random_pool_configs_match_torch(seed):
    kind, config, shape, dtype = random_pool_case(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=DTYPES[dtype]) * 3
    try:
        check_against_torch(kind, config, x)
    except ShapeMismatch as refused:  # the deliberate difference (app/layers/pool.py): torch gives -inf there
        assert "reads only padding" in refused.detail
        theirs = getattr(torch.nn, LAYERS[kind].torch_name)(**config)(x)
        assert torch.isneginf(theirs[0] if isinstance(theirs, tuple) else theirs).any()


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_pool_pads_with_minus_infinity(dims):
    """All values negative: a window over the padding still returns an input value, never 0."""
    x = -torch.rand(1, 2, *[5] * dims, dtype=torch.float64) - 1.0
    config = {"kernel_size": 2, "stride": 1, "padding": 1, "return_indices": True}
    check_against_torch(f"maxpool{dims}d", config, x)
    out, _ = max_pool(x.numpy(), [2] * dims, [1] * dims, [1] * dims, [1] * dims)
    assert (out < 0).all()


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_ties_nan_and_infinities_like_torch(dims, ceil_mode):
    """Ties take the first maximum, a NaN wins (the last NaN of the window), an all -inf window
    points at its first position inside the input: the order torch's loop gives."""
    rng = np.random.default_rng(dims)
    x = rng.integers(-2, 3, size=(2, 2, *[6] * dims)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[rng.random(x.shape) < 0.05] = np.inf
    for dilation in (1, 2):
        config = {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": dilation, "ceil_mode": ceil_mode,
                  "return_indices": True}
        check_against_torch(f"maxpool{dims}d", config, torch.from_numpy(x))


def test_max_pool_indices_are_flat_per_plane_in_unpadded_coordinates():
    x = np.array([[[[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]]]])  # (1, 1, 2, 3)
    out, indices = max_pool(x, (2, 2), (1, 1), (1, 1), (1, 1), return_indices=True)
    assert out.tolist() == [[[[1.0, 1.0, 3.0, 3.0], [1.0, 5.0, 5.0, 3.0], [-4.0, 5.0, 5.0, -6.0]]]]
    assert indices.tolist() == [[[[0, 0, 2, 2], [0, 4, 4, 2], [3, 4, 4, 5]]]]


def test_ceil_mode_drops_a_window_starting_in_the_right_padding():
    """Length 5, kernel 2, stride 2, padding 1: ceil gives 4 windows, the 4th would start at 6 of
    the padded input (its right padding), so torch keeps 3."""
    x = torch.arange(5.0).reshape(1, 1, 5) - 10
    theirs = torch.nn.functional.avg_pool1d(x, 2, 2, 1, ceil_mode=True)
    mine = avg_pool(x.numpy(), (2,), (2,), (1,), ceil_mode=True)
    assert mine.shape == theirs.shape == (1, 1, 3)
    np.testing.assert_array_equal(mine, theirs.numpy())


def test_avg_pool_ceil_mode_divisor_counts_only_input_and_padding():
    """The overhanging window of ceil_mode counts the padding (count_include_pad) but not positions
    past it, as PyTorch's divisor does."""
    x = torch.ones(1, 1, 4, dtype=torch.float64)
    for count_include_pad in (True, False):
        theirs = torch.nn.functional.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=count_include_pad)
        mine = avg_pool(x.numpy(), (3,), (2,), (1,), True, count_include_pad)
        np.testing.assert_array_equal(mine, theirs.numpy())
    # windows [-1, 1], [1, 3], [3, 5]: the last one has input 3, padding 4 and 5 past the end
    assert mine.tolist() == [[[1.0, 1.0, 1.0]]]
    assert avg_pool(x.numpy(), (3,), (2,), (1,), True, True).tolist() == [[[2 / 3, 1.0, 0.5]]]
