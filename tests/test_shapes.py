"""app.shapes (the output-size formulas) and the conv/pool configs against what torch accepts and produces.

Where PyTorch draws a line, the same config is tried once on each side of it: the service must
accept what torch accepts (with torch's output shape) and reject with a 422 what torch rejects.
"""

import random

import pytest
import torch
import torch.nn.functional as F

from app.errors import InvalidInput
from app.layers.registry import LAYERS
from app.stacks.plan import parse_config
from app.shapes import Window, formula, output_size, same_padding, split_input_shape

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
              pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")]


def test_notebook_conv2d_cell():
    """Conv2d(3, 16, 3, stride=2) on (100, 3, 120, 160): (100, 16, 59, 79), the notebook's own formula."""
    window = Window(kernel=(3, 3), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1))
    assert window.output_sizes((120, 160)) == (59, 79)
    assert window.formulas((120, 160)) == [
        "H_out = floor((120 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 59",
        "W_out = floor((160 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 79",
    ]


def test_notebook_maxpool2d_cell():
    """MaxPool2d((3, 2)): stride defaults to the kernel; (100, 3, 120, 160) -> (100, 3, 40, 80)."""
    spec = LAYERS["maxpool2d"]
    config = parse_config(spec, {"kernel_size": [3, 2]})
    assert spec.output_shape(config, (100, 3, 120, 160)) == (100, 3, 40, 80)
    assert spec.formulas(config, (100, 3, 120, 160)) == [
        "H_out = floor((120 + 2*0 - 1*(3-1) - 1) / 3) + 1 = 40",
        "W_out = floor((160 + 2*0 - 1*(2-1) - 1) / 2) + 1 = 80",
    ]


def test_dimension_names_per_rank():
    for dims, names in [(1, ["L"]), (2, ["H", "W"]), (3, ["D", "H", "W"])]:
        window = Window((1,) * dims, (1,) * dims, ((0, 0),) * dims, (1,) * dims)
        assert [line.split("_out")[0] for line in window.formulas((4,) * dims)] == names


@pytest.mark.parametrize("kernel, dilation, expected", [
    (3, 1, (1, 1)), (4, 1, (1, 2)), (2, 1, (0, 1)), (1, 1, (0, 0)), (3, 2, (2, 2)), (2, 3, (1, 2)), (4, 3, (4, 5)),
])
def test_same_padding_split_matches_torch(kernel, dilation, expected):
    """left = total // 2, the odd one on the right: checked on values, where the split shows."""
    assert same_padding((kernel,), (dilation,)) == (expected,)
    gen = torch.Generator().manual_seed(kernel * 10 + dilation)
    x = torch.randn(1, 1, 9, generator=gen, dtype=torch.float64)
    weight = torch.randn(1, 1, kernel, generator=gen, dtype=torch.float64)
    theirs = F.conv1d(x, weight, padding="same", dilation=dilation)
    explicit = F.conv1d(F.pad(x, list(expected)), weight, dilation=dilation)
    torch.testing.assert_close(explicit, theirs)


def test_output_size_matches_torch_pooling_shapes():
    """The formula, ceil_mode and its drop rule, against max_pool1d on random sizes."""
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        size, kernel, stride, dilation = rng.randint(1, 12), rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3)
        padding, ceil_mode = rng.randint(0, kernel // 2), rng.random() < 0.5
        mine = output_size(size, kernel, stride, (padding, padding), dilation, ceil_mode)
        try:
            theirs = F.max_pool1d(torch.zeros(1, 1, size), kernel, stride, padding, dilation, ceil_mode).shape[-1]
        except RuntimeError:
            assert mine < 1, (size, kernel, stride, padding, dilation, ceil_mode, mine)
            continue
        assert mine == theirs, f"mine {mine} vs theirs {theirs} for {(size, kernel, stride, padding, dilation, ceil_mode)}"
        checked += 1
    assert checked > 200


def test_ceil_mode_formula_says_when_the_last_window_is_dropped():
    text = formula("L", 5, 2, 2, (1, 1), 1, ceil_mode=True)
    assert text.startswith("L_out = ceil((5 + 2*1 - 1*(2-1) - 1) / 2) + 1 - 1 = 3")
    assert "right padding" in text
    assert formula("L", 6, 2, 2, (1, 1), 1, ceil_mode=True) == "L_out = ceil((6 + 2*1 - 1*(2-1) - 1) / 2) + 1 = 4"
    assert F.max_pool1d(torch.zeros(1, 5), 2, 2, 1, ceil_mode=True).shape[-1] == 3


def test_too_small_input_error_quotes_the_formula():
    window = Window((5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1))
    with pytest.raises(InvalidInput) as caught:
        window.check((3, 7))
    assert caught.value.status_code == 422
    assert "output height would be -1, less than 1" in caught.value.detail
    assert "H_out = floor((3 + 2*0 - 1*(5-1) - 1) / 1) + 1 = -1" in caught.value.detail


def test_input_rank_is_checked():
    assert split_input_shape((2, 3, 4, 5), 2, "Conv2d") == (True, 3, (4, 5))
    assert split_input_shape((3, 4, 5), 2, "Conv2d") == (False, 3, (4, 5))
    with pytest.raises(InvalidInput, match=r"Conv2d expects a 3-D \(C, H_in, W_in\) unbatched or 4-D"):
        split_input_shape((4, 5), 2, "Conv2d")


def service_outcome(kind: str, config: dict, shape: tuple[int, ...]) -> tuple[str, object]:
    """('ok', output shape) or ('rejected', message) as the service decides, before any compute."""
    spec = LAYERS[kind]
    try:
        parsed = parse_config(spec, config)
        return "ok", spec.output_shape(parsed, shape)
    except InvalidInput as exc:
        assert exc.status_code == 422
        return "rejected", exc.detail


def torch_outcome(kind: str, config: dict, shape: tuple[int, ...]) -> tuple[str, object]:
    spec = LAYERS[kind]
    try:
        module = getattr(torch.nn, spec.torch_name)(**config)
        out = module(torch.randn(shape))
        return "ok", tuple((out[0] if isinstance(out, tuple) else out).shape)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        return "rejected", f"{type(exc).__name__}: {exc}"


# (kind, config, input shape) accepted, then the nearest config or input torch rejects, and what our 422 says.
BOUNDARIES = [
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 5}, (1, 1, 5, 5),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 5}, (1, 1, 4, 5), "output height would be 0"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "dilation": 2}, (1, 5),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "dilation": 2}, (1, 4), "L_out = floor((4 + 2*0 - 2*(3-1) - 1) / 1) + 1 = 0"),
    ("conv3d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 1}, (1, 1, 1, 1),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 0}, (1, 1, 1, 1), "output depth would be -1"),
    ("conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": 1, "groups": 2}, (4, 3, 3),
     {"in_channels": 4, "out_channels": 6, "kernel_size": 1, "groups": 4}, (4, 3, 3), "out_channels=6 is not divisible by groups=4"),
    ("conv2d", {"in_channels": 6, "out_channels": 4, "kernel_size": 1, "groups": 2}, (6, 3, 3),
     {"in_channels": 6, "out_channels": 4, "kernel_size": 1, "groups": 4}, (6, 3, 3), "in_channels=6 is not divisible by groups=4"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": "same", "stride": 1}, (1, 4, 4),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": "same", "stride": [1, 2]}, (1, 4, 4), 'padding="same" needs stride 1'),
    ("conv2d", {"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (2, 3, 5, 5),
     {"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (2, 4, 5, 5), "input has 4 channels"),
    ("conv2d", {"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (3, 5, 5),
     {"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (1, 1, 3, 5, 5), "Conv2d expects a 3-D"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 2, "padding_mode": "reflect"}, (1, 3),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 2, "padding_mode": "reflect"}, (1, 2), "padding_mode='reflect' needs padding smaller"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 4, "padding": "same", "padding_mode": "reflect"}, (1, 3, 3),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 4, "padding": "same", "padding_mode": "reflect"}, (1, 2, 3), "padding is (1, 2), input height is 2"),
    ("conv1d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 3, "padding_mode": "circular"}, (1, 3),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 3, "padding_mode": "circular"}, (1, 2), "wraps around once at most"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "stride": 1}, (1, 3, 3),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "stride": 0}, (1, 3, 3), "config.stride: must be a positive integer"),
    ("conv2d", {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 0}, (1, 3, 3),
     {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": -1}, (1, 3, 3), "config.padding: must be"),
    ("maxpool2d", {"kernel_size": 4, "padding": 2}, (1, 4, 4),
     {"kernel_size": 3, "padding": 2}, (1, 4, 4), "padding 2 is more than half the kernel size 3"),
    ("maxpool2d", {"kernel_size": 3, "padding": 1, "dilation": 2}, (1, 6, 6),
     {"kernel_size": 3, "padding": 2, "dilation": 2}, (1, 6, 6), "more than half the kernel size"),
    ("maxpool1d", {"kernel_size": 5}, (1, 5), {"kernel_size": 5}, (1, 4), "output length would be 0"),
    ("maxpool3d", {"kernel_size": 2, "dilation": 3}, (1, 4, 4, 4), {"kernel_size": 2, "dilation": 3}, (1, 3, 4, 4),
     "output depth would be 0"),
    ("maxpool2d", {"kernel_size": 2}, (3, 4, 4), {"kernel_size": 2}, (4, 4), "MaxPool2d expects a 3-D"),
    ("maxpool2d", {"kernel_size": 2, "dilation": 1}, (3, 4, 4), {"kernel_size": 2, "dilation": 0}, (3, 4, 4), "config.dilation"),
    ("avgpool2d", {"kernel_size": 2, "padding": 1}, (1, 3, 3), {"kernel_size": 2, "padding": 2}, (1, 3, 3),
     "padding 2 is more than half the kernel size 2"),
    ("avgpool2d", {"kernel_size": 2, "divisor_override": -2}, (1, 3, 3), {"kernel_size": 2, "divisor_override": 0}, (1, 3, 3),
     "divisor_override must not be 0"),
    ("avgpool1d", {"kernel_size": 2}, (1, 3), {"kernel_size": 2, "divisor_override": 2}, (1, 3), "Extra inputs are not permitted"),
    ("avgpool3d", {"kernel_size": 3, "padding": 1}, (1, 3, 4, 4), {"kernel_size": 3, "padding": 1}, (1, 2, 4, 4),
     "AvgPool3d needs every input dimension at least the kernel size"),
    ("avgpool2d", {"kernel_size": 3, "padding": 1}, (1, 2, 4), {"kernel_size": 3, "padding": 0}, (1, 2, 4),
     "output height would be 0"),
    ("avgpool1d", {"kernel_size": 2, "stride": 2, "ceil_mode": True}, (1, 1), {"kernel_size": 3, "stride": 2, "ceil_mode": True}, (1, 1),
     "output length would be 0"),
]


@pytest.mark.parametrize("kind, good, good_shape, bad, bad_shape, message", BOUNDARIES,
                         ids=[f"{case[0]}-{case[5][:40]}" for case in BOUNDARIES])
def test_accepts_and_rejects_where_torch_does(kind, good, good_shape, bad, bad_shape, message):
    assert service_outcome(kind, good, good_shape) == torch_outcome(kind, good, good_shape)
    theirs = torch_outcome(kind, bad, bad_shape)
    assert theirs[0] == "rejected", f"torch accepted {bad} on {bad_shape}: {theirs}"
    verdict, detail = service_outcome(kind, bad, bad_shape)
    assert verdict == "rejected", f"the service accepted {bad} on {bad_shape}; torch says {theirs[1]}"
    assert message in detail, detail


def random_config(rng: random.Random) -> tuple[str, dict, tuple[int, ...]]:
    """A conv or pool config and input shape, each value near the edges where torch starts refusing."""
    kind = rng.choice(sorted(f"{family}{dims}d" for family in ("conv", "maxpool", "avgpool") for dims in (1, 2, 3)))
    dims = int(kind[-2])

    def sized(low: int, high: int):
        """Mostly in [low, high]; now and then one below, where torch refuses."""
        values = [rng.randint(low, high) if rng.random() > 0.04 else low - 1 for _ in range(dims)]
        return values[0] if rng.random() < 0.4 else values

    config: dict = {"kernel_size": sized(1, 4)}
    if kind.startswith("conv"):
        groups = rng.choice([1, 1, 1, 2, 3])
        config.update(in_channels=rng.randint(1, 4), out_channels=rng.randint(1, 4), groups=groups,
                      stride=sized(1, 2), dilation=sized(1, 3),
                      padding=rng.choice(["same", "valid", sized(0, 3), sized(0, 3)]),
                      padding_mode=rng.choice(["zeros", "reflect", "replicate", "circular"]))
        if config["padding"] == "same" and rng.random() < 0.8:
            config["stride"] = 1
        channels = config["in_channels"] if rng.random() < 0.8 else rng.randint(1, 4)
    else:
        kernel = [config["kernel_size"]] * dims if isinstance(config["kernel_size"], int) else config["kernel_size"]
        padding = [rng.randint(0, max(k, 0) // 2 + (rng.random() < 0.15)) for k in kernel]  # now and then over half
        config.update(stride=rng.choice([None, sized(1, 3)]), padding=padding, ceil_mode=rng.random() < 0.5)
        if kind.startswith("max"):
            config.update(dilation=sized(1, 3), return_indices=rng.random() < 0.5)
        else:
            config["count_include_pad"] = rng.random() < 0.5
            if dims > 1 and rng.random() < 0.4:
                config["divisor_override"] = rng.randint(-2, 3)
        channels = rng.randint(1, 3)
    rank = rng.choice([dims + 1, dims + 2, dims + 2, dims + 2, rng.choice([dims, dims + 3])])
    spatial = [rng.randint(1, 8) for _ in range(dims)]
    shape = ([rng.randint(1, 2)] if rank >= dims + 2 else []) + [channels] + spatial
    shape = shape[-rank:] if rank <= len(shape) else [1] * (rank - len(shape)) + shape
    return kind, config, tuple(shape)


@pytest.mark.parametrize("seed", range(40))
def test_random_configs_accepted_exactly_when_torch_accepts(seed):
    """Ten configs per seed, drawn around every boundary: same verdict, same output shape."""
    rng = random.Random(seed)
    for _ in range(10):
        kind, config, shape = random_config(rng)
        mine, theirs = service_outcome(kind, config, shape), torch_outcome(kind, config, shape)
        if kind.startswith("conv") and config["padding_mode"] != "zeros" and _negative(config["padding"]):
            assert mine[0] == "rejected"  # torch crops there; see the test below
            continue
        if kind.startswith("maxpool") and mine[0] == "rejected" and "reads only padding" in str(mine[1]):
            assert theirs[0] == "ok"  # torch gives -inf there; see tests/test_maxpool_padding_windows.py
            continue
        assert mine[0] == theirs[0], f"{kind}({config}) on {list(shape)}:\nmine: {mine}\ntheirs: {theirs}"
        if mine[0] == "ok":
            assert mine[1] == theirs[1], f"{kind}({config}) on {list(shape)}: mine {mine[1]}, theirs {theirs[1]}"


def _negative(padding) -> bool:
    return not isinstance(padding, str) and min([padding] if isinstance(padding, int) else padding) < 0


def test_negative_padding_is_refused_although_torch_crops_with_it():
    """A deliberate difference: torch refuses negative conv padding with padding_mode="zeros", but
    with the other modes F.pad crops instead, differently per mode (circular can even return
    uninitialized memory: F.pad(torch.arange(1., 6.).view(1, 1, 5), (1, -5), mode="circular")).
    The documented meaning of padding is "added to both sides", so the service asks for >= 0."""
    config = {"in_channels": 1, "out_channels": 1, "kernel_size": 1, "padding": -1, "padding_mode": "replicate"}
    assert torch_outcome("conv1d", config, (1, 1, 5)) == ("ok", (1, 1, 3))
    verdict, detail = service_outcome("conv1d", config, (1, 1, 5))
    assert verdict == "rejected" and "config.padding: must be" in detail and "non-negative" in detail
    zeros = {**config, "padding_mode": "zeros"}
    assert torch_outcome("conv1d", zeros, (1, 1, 5))[0] == service_outcome("conv1d", zeros, (1, 1, 5))[0] == "rejected"
