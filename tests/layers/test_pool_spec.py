"""Max-pool windows that read only padding: found from config and input shape (app/shapes.py),
and refused by the layer's shape check with a 422 that names the window (app/layers/pool.py)."""

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from app.errors import ShapeMismatch
from app.layers.registry import LAYERS
from app.shapes import Window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def padding_only_cases_1d() -> list[tuple[int, int, int, int, int, bool]]:
    """(kernel, stride, padding, dilation, length, ceil_mode) the 1-D search finds a padding-only window in."""
    found = []
    for k, s, d, size, ceil_mode in itertools.product(range(1, 6), range(1, 5), range(1, 6), range(1, 9), (False, True)):
        for p in range(k // 2 + 1):
            win = Window((k,), (s,), ((p, p),), (d,), ceil_mode)
            if win.output_sizes((size,))[0] >= 1 and win.padding_only_windows((size,)):
                found.append((k, s, p, d, size, ceil_mode))
    return found


def test_the_search_finds_the_issues_example_and_others():
    cases = padding_only_cases_1d()
    assert (2, 1, 1, 3, 2, False) in cases  # MaxPool1d(2, stride=1, padding=1, dilation=3) on a length-2 input
    assert len(cases) > 20 and any(k > 2 for k, *_ in cases) and any(ceil for *_, ceil in cases)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_padding_only_windows_are_where_torch_gives_minus_inf(ceil_mode):
    """Over every small 1-D config (torch's forward alone is safe): a window is padding-only exactly
    when torch's max over a finite input is -inf, and exactly then its index lies outside the input."""
    for k, s, d, size in itertools.product(range(1, 6), range(1, 5), range(1, 6), range(1, 9)):
        for p in range(k // 2 + 1):
            win = Window((k,), (s,), ((p, p),), (d,), ceil_mode)
            if win.output_sizes((size,))[0] < 1:
                continue
            out, indices = F.max_pool1d(torch.rand(1, 1, size), k, s, p, d, ceil_mode, return_indices=True)
            theirs = torch.nonzero(torch.isinf(out[0, 0])).flatten().tolist()
            outside = torch.nonzero((indices[0, 0] < 0) | (indices[0, 0] >= size)).flatten().tolist()
            mine = [i for _, i, _ in win.padding_only_windows((size,))]
            assert mine == theirs == outside, (k, s, p, d, size, ceil_mode)


@pytest.mark.parametrize("seed", range(20))
def test_a_multi_dimensional_window_is_padding_only_when_one_dimension_is(seed):
    """Windows are products of per-dimension positions: torch's -inf outputs in 2-D and 3-D are the
    windows padding-only along some dimension."""
    rng = random.Random(seed)
    dims = rng.choice((2, 3))
    bad = rng.choice(padding_only_cases_1d())
    per_dim = [bad]
    for _ in range(dims - 1):  # a dimension whose windows all read the input (no padding, size >= span)
        k, d = rng.randint(1, 3), rng.randint(1, 2)
        per_dim.append((k, rng.randint(1, 2), 0, d, d * (k - 1) + 1 + rng.randint(0, 2), bad[5]))
    rng.shuffle(per_dim)
    kernel, stride, padding, dilation, sizes = ([case[i] for case in per_dim] for i in range(5))
    win = Window(tuple(kernel), tuple(stride), tuple((p, p) for p in padding), tuple(dilation), bad[5])
    out = getattr(F, f"max_pool{dims}d")(torch.rand(1, 1, *sizes), kernel, stride, padding, dilation, bad[5])
    minus_inf = torch.isinf(out[0, 0])
    expected = torch.zeros_like(minus_inf)
    for name, index, _ in win.padding_only_windows(sizes):
        expected.select(win.names.index(name), index).fill_(True)
    assert torch.equal(minus_inf, expected)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_layer_refuses_such_a_window_naming_it(dims):
    spec = LAYERS[f"maxpool{dims}d"]
    config = spec.config_model.model_validate({"kernel_size": 2, "stride": 1, "padding": 1, "dilation": [1] * (dims - 1) + [3]})
    with pytest.raises(ShapeMismatch) as caught:
        spec.output_shape(config, (1, 2, *[4] * (dims - 1), 2))
    error = caught.value
    word = {1: "length", 2: "width", 3: "width"}[dims]
    assert f"window 0 along the {word} reads only padding: positions [-1, 2]" in error.detail
    assert error.status_code == 422 and error.field == "input"
    # one more input element and the window reads it: accepted, as torch computes it
    assert spec.output_shape(config, (1, 2, *[4] * (dims - 1), 3))[-1] == 2


def test_average_pooling_windows_always_read_the_input():
    """padding <= kernel_size / 2 and no dilation: no average-pool window is padding-only, so no check."""
    for k, s, size, ceil_mode in itertools.product(range(1, 7), range(1, 7), range(1, 9), (False, True)):
        for p in range(k // 2 + 1):
            win = Window((k,), (s,), ((p, p),), (1,), ceil_mode)
            if win.output_sizes((size,))[0] >= 1:
                assert not win.padding_only_windows((size,)), (k, s, p, size, ceil_mode)
