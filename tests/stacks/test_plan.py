"""The stack plan (app.stacks.plan) against torch and torchinfo: shapes, parameters, MACs, memory, receptive fields."""

import math
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AvgPoolNd, _MaxPoolNd
from torchinfo import summary

from app.config import Settings
from app.errors import LayerlabError
from app.layers.registry import LAYERS
from app.schemas.stacks import ShapesOptions
from app.stacks.plan import plan_shapes
from tests.stacking import STACKS, TORCH_MODULES, torch_module, torch_sequential

SETTINGS = Settings()


def test_every_served_kind_has_a_torch_oracle():
    """The stacks below use every kind; none may be missing from the registry (nor unknown to the oracle)."""
    assert set(LAYERS) == set(TORCH_MODULES)
    assert set(LAYERS) == {layer["kind"] for _, layers in STACKS.values() for layer in layers}


def plan(input_shape, layers, dtype="float32"):
    planned = plan_shapes(ShapesOptions.model_validate({"input_shape": list(input_shape), "layers": layers,
                                                         "dtype": dtype}), SETTINGS)
    return planned.layers, planned.totals


def torchinfo_macs(leaf) -> int:
    """torchinfo's count; for a Linear on (N, L, ..., in_features) torchinfo counts only the N rows of
    output_size[0], the service every row (documented in app.layers.linear.macs)."""
    if leaf.class_name == "Linear":
        return leaf.macs * math.prod(leaf.output_size[1:-1])
    return leaf.macs


@pytest.mark.parametrize("name", sorted(STACKS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_and_totals_equal_torchinfo_summary(name, dtype):
    input_shape, layers = STACKS[name]
    if dtype == "float64" and math.prod(input_shape) > 10**5:
        input_shape = (2, *input_shape[1:])  # same arithmetic, a smaller batch for torchinfo's real forward pass
    torch_dtype = getattr(torch, dtype)
    model = torch_sequential(layers, dtype=torch_dtype)
    info = summary(model, input_data=torch.randn(input_shape, dtype=torch_dtype), verbose=0, device="cpu")
    leaves = [row for row in info.summary_list if row.is_leaf_layer]

    rows, totals = plan(input_shape, layers, dtype)
    assert len(rows) == len(leaves) == len(layers)
    for row, leaf in zip(rows, leaves):
        assert leaf.class_name == row.entry.spec.torch_name
        assert list(row.input_shape) == leaf.input_size, name
        assert list(row.output_shape) == leaf.output_size, name
        assert row.parameter_count == leaf.num_params, name
        assert row.macs == torchinfo_macs(leaf), (name, row.entry.spec.kind)
        assert {k: list(v) for k, v in row.parameter_shapes.items()} == \
            {k: list(p.shape) for k, p in leaf.module.named_parameters()}
        assert {k: list(v) for k, v in row.buffer_shapes.items()} == \
            {k: list(b.shape) for k, b in leaf.module.named_buffers()}
    assert totals["parameter_count"] == info.total_params
    assert totals["macs"] == sum(torchinfo_macs(leaf) for leaf in leaves)
    if all(len(leaf.output_size) == 2 for leaf in leaves if leaf.class_name == "Linear"):
        assert totals["macs"] == info.total_mult_adds
    # torchinfo's total_input is sys.getsizeof(storage): the bytes plus the Python object's header
    input_bytes = math.prod(input_shape) * (8 if dtype == "float64" else 4)
    assert totals["input_bytes"] == input_bytes and 0 <= info.total_input - input_bytes <= 128
    assert totals["forward_backward_pass_bytes"] == info.total_output_bytes
    assert totals["parameter_bytes"] == info.total_param_bytes
    itemsize = input_bytes // math.prod(input_shape)
    assert totals["output_bytes"] == sum(leaf.output_bytes for leaf in leaves) == \
        sum(math.prod(leaf.output_size) * itemsize for leaf in leaves)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert totals["buffer_bytes"] == buffers
    assert totals["estimated_total_bytes"] == input_bytes + info.total_output_bytes + info.total_param_bytes


def test_notebook_numbers():
    rows, _ = plan((100, 3, 120, 160), STACKS["notebook_conv"][1])
    assert rows[0].output_shape == (100, 16, 59, 79) and rows[0].parameter_shapes["weight"] == (16, 3, 3, 3)
    assert rows[0].receptive_field == [3, 3] and rows[0].jump == [2, 2]
    rows, _ = plan((100, 3, 120, 160), STACKS["notebook_maxpool"][1])
    assert rows[0].output_shape == (100, 3, 40, 80)
    assert rows[0].receptive_field == [3, 2] and rows[0].jump == [3, 2]


def test_shapes_allocate_nothing_of_tensor_size():
    """The notebook's conv output is 30 MB of float32; planning it must not come near that."""
    tracemalloc.start()
    try:
        plan((100, 3, 120, 160), STACKS["notebook_conv_then_pool"][1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak


def test_without_windows_there_is_no_receptive_field():
    rows, _ = plan(*STACKS["flatten_mlp"])
    assert all(row.receptive_field is None and row.jump is None for row in rows)


def test_flatten_formula_line():
    rows, _ = plan((6, 3, 2, 5), [{"kind": "flatten"}, {"kind": "relu"}])
    assert rows[0].formula == ["(6, 3, 2, 5) -> (6, 30): dims 1..3 merged, 3*2*5 = 30"]
    assert rows[1].formula == []


# ---------------------------------------------------------------- receptive fields

def recurrence(modules: list[nn.Module]) -> list[tuple[list[int] | None, list[int] | None]]:
    """The standard recurrence, written from the torch modules' own attributes."""
    windowed = (_ConvNd, _MaxPoolNd, _AvgPoolNd)
    first = next((m for m in modules if isinstance(m, windowed)), None)
    if first is None:
        return [(None, None)] * len(modules)
    rank = len(first.kernel_size) if isinstance(first.kernel_size, tuple) else int(type(first).__name__[-2])

    def per_dim(value):
        return list(value) if isinstance(value, (tuple, list)) else [value] * rank

    r, j, out = [1] * rank, [1] * rank, []
    for m in modules:
        if r is not None:
            if isinstance(m, windowed):
                k, s = per_dim(m.kernel_size), per_dim(m.stride)
                d = per_dim(getattr(m, "dilation", 1))
                r = [ri + (ki - 1) * di * ji for ri, ki, di, ji in zip(r, k, d, j)]
                j = [ji * si for ji, si in zip(j, s)]
            elif not isinstance(m, (nn.ReLU, _BatchNorm)):
                r = j = None
        out.append((r, j))
    return out


@pytest.mark.parametrize("name", ["lenet", "conv1d_stack", "conv3d_stack", "conv_bn_lenet", "notebook_conv_then_pool"])
def test_receptive_fields_follow_the_recurrence(name):
    input_shape, layers = STACKS[name]
    rows, _ = plan(input_shape, layers)
    expected = recurrence([torch_module(layer) for layer in layers])
    assert [(row.receptive_field, row.jump) for row in rows] == expected


def test_lenet_receptive_fields_by_hand():
    rows, _ = plan(*STACKS["lenet"])
    assert [row.receptive_field for row in rows[:7]] == [[5, 5], [5, 5], [6, 6], [14, 14], [14, 14], [16, 16], None]
    assert [row.jump for row in rows[:7]] == [[1, 1], [1, 1], [2, 2], [2, 2], [2, 2], [4, 4], None]


FOOTPRINT_STACKS = [
    ((1, 2, 97), [
        {"kind": "conv1d", "config": {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "dilation": 2}},
        {"kind": "relu"},
        {"kind": "avgpool1d", "config": {"kernel_size": 3, "stride": 2}},
        {"kind": "conv1d", "config": {"in_channels": 3, "out_channels": 2, "kernel_size": 4, "stride": 3}},
    ]),
    ((1, 1, 61, 67), [
        {"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": [3, 5], "stride": [1, 2]}},
        {"kind": "batchnorm2d", "config": {"num_features": 2}},
        {"kind": "avgpool2d", "config": {"kernel_size": 2}},
        {"kind": "conv2d", "config": {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "dilation": [2, 1],
                                      "padding": 1}},
        {"kind": "relu"},
    ]),
]


@pytest.mark.parametrize("input_shape,layers", FOOTPRINT_STACKS)
def test_receptive_field_is_the_gradient_footprint(input_shape, layers):
    """Independent of any formula: with positive weights, an output element's gradient reaches exactly its
    receptive field, and the next output element's footprint starts one jump later."""
    rows, _ = plan(input_shape, layers)
    model = torch_sequential(layers, dtype=torch.float64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.1)
    x = (torch.rand(input_shape, dtype=torch.float64) + 0.5).requires_grad_()
    y = model(x)
    spatial = y.shape[2:]
    center = [n // 2 for n in spatial]

    def footprint(position):
        (grad,) = torch.autograd.grad(y[(0, slice(None), *position)].sum(), x, retain_graph=True)
        nonzero = torch.nonzero(grad[0].sum(0))
        return nonzero.min(0).values.tolist(), nonzero.max(0).values.tolist()

    low, high = footprint(center)
    assert rows[-1].receptive_field == [h - lo + 1 for lo, h in zip(low, high)]
    for dim in range(len(spatial)):
        shifted = list(center)
        shifted[dim] += 1
        assert footprint(shifted)[0][dim] - low[dim] == rows[-1].jump[dim]


# ---------------------------------------------------------------- random stacks against torch

def random_layer(rng: np.random.Generator, shape: tuple[int, ...], kinds: list[str]) -> dict:
    """A config drawn around the current shape, invalid now and then on purpose."""
    kind = str(rng.choice(kinds))
    rank = len(shape) - 2
    wrong = rng.random() < 0.08

    def ints(low, high):  # an int or a per-dimension tuple
        return int(rng.integers(low, high + 1)) if rng.random() < 0.5 else [int(v) for v in rng.integers(low, high + 1, rank)]

    if kind == "relu":
        return {"kind": kind, "config": {"inplace": bool(rng.random() < 0.3)}}
    if kind == "flatten":
        n = max(len(shape), 1)
        return {"kind": kind, "config": {"start_dim": int(rng.integers(-n - wrong, n + wrong)),
                                         "end_dim": int(rng.integers(-n - wrong, n + wrong))}}
    if kind == "linear":
        return {"kind": kind, "config": {"in_features": shape[-1] + wrong, "out_features": int(rng.integers(1, 6)),
                                         "bias": bool(rng.random() < 0.7)}}
    channels = shape[1] + wrong
    if kind.startswith("batchnorm"):
        return {"kind": kind, "config": {"num_features": channels, "affine": bool(rng.random() < 0.7)}}
    if kind.startswith("conv"):
        out = int(rng.integers(1, 5))
        groups = int(rng.choice([g for g in (1, 2, 3) if channels % g == 0 and out % g == 0] or [1]))
        config = {"in_channels": channels, "out_channels": out, "kernel_size": ints(1, 3 + 2 * wrong),
                  "stride": ints(1, 2), "dilation": ints(1, 2), "groups": groups, "bias": bool(rng.random() < 0.7),
                  "padding_mode": str(rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))}
        choice = rng.random()
        config["padding"] = "same" if choice < 0.15 else "valid" if choice < 0.25 else ints(0, 2)
        if config["padding"] == "same" and rng.random() < 0.8:
            config["stride"] = 1
        return {"kind": kind, "config": config}
    kernel = int(rng.integers(1, 4))
    config = {"kernel_size": kernel, "stride": None if rng.random() < 0.4 else ints(1, 3),
              "padding": int(rng.integers(0, kernel // 2 + 1 + wrong)), "ceil_mode": bool(rng.random() < 0.4)}
    if kind.startswith("maxpool"):
        config["dilation"] = ints(1, 2)
    else:
        config["count_include_pad"] = bool(rng.random() < 0.5)
        if rank > 1 and rng.random() < 0.3:
            config["divisor_override"] = int(rng.integers(1, 5))
    return {"kind": kind, "config": config}


def random_stack(seed: int) -> tuple[tuple[int, ...], list[dict]]:
    rng = np.random.default_rng(seed)
    rank = int(rng.choice([1, 2, 3]))
    windowed = [f"conv{rank}d", f"maxpool{rank}d", f"avgpool{rank}d", f"batchnorm{rank}d"]
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), *[int(v) for v in rng.integers(4, 12, rank)])
    layers, x = [], torch.randn(shape)
    for _ in range(int(rng.integers(1, 7))):
        kinds = [*windowed, "relu"] if x.dim() == rank + 2 else []
        kinds = kinds or ["relu", "flatten", "linear"]
        if rng.random() < 0.15:
            kinds = ["flatten", "linear"]
        layer = random_layer(rng, tuple(x.shape), kinds)
        layers.append(layer)
        try:
            x = torch_module(layer).eval()(x)
        except Exception:
            break
    return shape, layers


def torch_shapes(input_shape, layers):
    """(output shapes, index of the first layer torch rejects or None)."""
    x, shapes = torch.randn(input_shape), []
    for index, layer in enumerate(layers):
        try:
            x = torch_module(layer).eval()(x)
        except Exception:
            return shapes, index
        shapes.append(tuple(x.shape))
    return shapes, None


@pytest.mark.parametrize("seed", range(60))
def test_random_stacks_match_torch_shapes(seed):
    input_shape, layers = random_stack(seed)
    expected, failing = torch_shapes(input_shape, layers)
    if failing is None:
        rows, _ = plan(input_shape, layers)
        assert [row.output_shape for row in rows] == expected, layers
    else:
        with pytest.raises(LayerlabError) as caught:
            plan(input_shape, layers)
        assert caught.value.status_code == 422
        assert caught.value.field.startswith(f"layers[{failing}]"), (caught.value.body(), layers[failing])
