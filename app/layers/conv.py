"""Convolution: torch.nn.Conv1d/2d/3d(in_channels, out_channels, kernel_size, stride=1, padding=0,
dilation=1, groups=1, bias=True, padding_mode="zeros")."""

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, StrictBool, StrictInt, ValidationInfo, create_model, field_validator
from pydantic_core import PydanticCustomError

from app.errors import ShapeMismatch
from app.layers.base import LayerSpec, Shape
from app.layers.window_config import WindowConfig, int_or_tuple
from app.shapes import DIM_NAMES, DIM_WORDS, Window, expand, same_padding, split_input_shape, symmetric

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


class ConvConfigBase(WindowConfig):
    """The checks torch.nn.ConvNd's constructor makes; the fields are added per dimension below."""

    if TYPE_CHECKING:  # the fields _config_model adds, as the type checker should see them
        in_channels: int
        out_channels: int
        stride: int | tuple[int, ...]
        padding: int | tuple[int, ...] | Literal["valid", "same"]
        dilation: int | tuple[int, ...]
        groups: int
        bias: bool
        padding_mode: PaddingMode

    @field_validator("groups", check_fields=False)
    @classmethod
    def _groups_divide_channels(cls, groups: int, info: ValidationInfo) -> int:
        for name in ("in_channels", "out_channels"):
            channels = info.data.get(name)
            if channels is not None and channels % groups:
                raise PydanticCustomError(
                    "groups",
                    "{name}={channels} is not divisible by groups={groups}: each group convolves "
                    "{name}/groups channels (PyTorch: {name} must be divisible by groups)",
                    {"name": name, "channels": channels, "groups": groups},
                )
        return groups

    @field_validator("padding", check_fields=False)
    @classmethod
    def _same_needs_stride_one(cls, padding: Any, info: ValidationInfo) -> Any:
        stride = info.data.get("stride")
        if padding == "same" and stride is not None and any(s != 1 for s in expand(stride, cls.dims)):
            raise PydanticCustomError(
                "same_padding",
                'padding="same" needs stride 1 in every dimension, got stride={stride} '
                "(PyTorch: padding='same' is not supported for strided convolutions)",
                {"stride": stride},
            )
        return padding


def _config_model(dims: int) -> type[ConvConfigBase]:
    size, padding_type = (
        int_or_tuple(dims, 1, name="Size"),
        int_or_tuple(dims, 0, ("valid", "same"), name="ConvPadding"),
    )
    names = ", ".join(DIM_NAMES[dims])
    model = create_model(
        f"Conv{dims}dConfig",
        __base__=ConvConfigBase,
        __doc__=f"torch.nn.Conv{dims}d's constructor arguments. An int size means the same in every "
        f"dimension ({names}); a list gives one per dimension.",
        in_channels=(StrictInt, Field(gt=0, description="Channels of the input (its dimension C).", examples=[3])),
        out_channels=(
            StrictInt,
            Field(gt=0, description="Channels of the output: the number of filters.", examples=[16]),
        ),
        kernel_size=(size, Field(description=f"Size of the convolving kernel ({names}).", examples=[3])),
        stride=(size, Field(1, description="Step of the window.")),
        padding=(
            padding_type,
            Field(
                0,
                description="Padding added to both sides of each spatial dimension, or "
                '"valid" (none) or "same" (output size = input size; needs stride 1; an odd '
                "total puts the extra one on the right).",
            ),
        ),
        dilation=(size, Field(1, description="Spacing between kernel elements.")),
        groups=(
            StrictInt,
            Field(
                1,
                gt=0,
                description="Blocked connections: in_channels and out_channels are split "
                "into `groups` groups, each convolved separately. Must divide both.",
            ),
        ),
        bias=(StrictBool, Field(True, description="Learn an additive bias per output channel.")),
        padding_mode=(
            PaddingMode,
            Field("zeros", description="How padding is filled: zeros, reflected, replicated edge, or wrapped around."),
        ),
    )
    model.dims = dims
    return model


Conv1dConfig, Conv2dConfig, Conv3dConfig = (_config_model(dims) for dims in (1, 2, 3))


def window(config: ConvConfigBase) -> Window:
    kernel, dilation = expand(config.kernel_size, config.dims), expand(config.dilation, config.dims)
    if config.padding == "same":
        padding = same_padding(kernel, dilation)
    elif config.padding == "valid":
        padding = symmetric(0, config.dims)
    else:
        padding = symmetric(config.padding, config.dims)
    return Window(kernel, expand(config.stride, config.dims), padding, dilation)


def _torch_name(config: ConvConfigBase) -> str:
    return f"Conv{config.dims}d"


def output_shape(config: ConvConfigBase, input_shape: Shape) -> Shape:
    """(N, C_in, *spatial) or (C_in, *spatial) -> (N, C_out, *out) or (C_out, *out)."""
    batched, channels, spatial = split_input_shape(input_shape, config.dims, _torch_name(config))
    if channels != config.in_channels:
        raise ShapeMismatch(
            f"input has {channels} channels (dimension {int(batched)} of shape {list(input_shape)}); "
            f"config.in_channels is {config.in_channels}",
            field="input",
            expected=config.in_channels,
            actual=channels,
        )
    _check_zero_sizes(config, input_shape, batched, spatial)
    win = window(config)
    if config.padding_mode in ("reflect", "circular"):
        _check_padding_fits(config.padding_mode, win, spatial)
    out = win.check(spatial)
    return ((input_shape[0],) if batched else ()) + (config.out_channels, *out)


def _check_zero_sizes(config: ConvConfigBase, input_shape: Shape, batched: bool, spatial: Shape) -> None:
    """torch convolves an empty batch (N = 0) whatever its spatial sizes (padding may make room for
    the kernel), but refuses a zero spatial size in a non-empty batch or an unbatched input."""
    if batched and input_shape[0] == 0:
        return
    for index, (name, size) in enumerate(zip(DIM_NAMES[config.dims], spatial)):
        if size == 0:
            dim = len(input_shape) - config.dims + index
            raise ShapeMismatch(
                f"input has a zero {DIM_WORDS[name]} (dimension {dim} of shape {list(input_shape)}); "
                f"Conv{config.dims}d takes a zero spatial size only in an empty batch (N = 0) (PyTorch: "
                '"Only zero batch or zero channel inputs are supported")',
                field="input",
                expected=f"input {DIM_WORDS[name]} >= 1, or N = 0",
                actual=list(input_shape),
            )


def _check_padding_fits(mode: str, win: Window, spatial: Shape) -> None:
    """reflect mirrors inside the input: padding < size; circular wraps around once at most: padding <= size."""
    for name, size, (left, right) in zip(win.names, spatial, win.padding):
        too_far = max(left, right) >= size if mode == "reflect" else max(left, right) > size
        if too_far:
            need = (
                f"smaller than the input {DIM_WORDS[name]}"
                if mode == "reflect"
                else f"at most the input {DIM_WORDS[name]} (it wraps around once at most)"
            )
            raise ShapeMismatch(
                f"padding_mode={mode!r} needs padding {need}: padding is ({left}, {right}), "
                f"input {DIM_WORDS[name]} is {size}",
                field="input",
                expected=f"input {DIM_WORDS[name]} > {max(left, right)}"
                if mode == "reflect"
                else f"input {DIM_WORDS[name]} >= {max(left, right)}",
                actual=size,
            )


def parameter_shapes(config: ConvConfigBase) -> dict[str, Shape]:
    """weight (C_out, C_in/groups, *kernel_size), bias (C_out,)."""
    kernel = expand(config.kernel_size, config.dims)
    shapes = {"weight": (config.out_channels, config.in_channels // config.groups, *kernel)}
    if config.bias:
        shapes["bias"] = (config.out_channels,)
    return shapes


def macs(config: ConvConfigBase, input_shape: Shape, out_shape: Shape) -> int:
    """torchinfo's count: (weight + bias elements) x N x output positions. An unbatched input
    counts as N = 1 (torchinfo itself would take C_out for N there)."""
    positions = math.prod(out_shape[-config.dims :])
    batch = out_shape[0] if len(out_shape) == config.dims + 2 else 1
    return sum(math.prod(s) for s in parameter_shapes(config).values()) * batch * positions


EXAMPLES = {
    1: {
        "signal": {
            "summary": "Conv1d 1 to 1, kernel 3, padding 1, reflect, on a (1, 1, 6) signal",
            "value": {
                "config": {
                    "in_channels": 1,
                    "out_channels": 1,
                    "kernel_size": 3,
                    "padding": 1,
                    "padding_mode": "reflect",
                },
                "input": [[[1.0, 2.0, 3.0, -1.0, 0.5, 2.0]]],
                "parameters": {"weight": [[[0.25, 0.5, 0.25]]], "bias": [0.0]},
                "compare": True,
            },
        },
    },
    2: {
        "notebook": {
            "summary": "Conv2d 3 to 16, kernel 3, stride 2, on a random (100, 3, 120, 160) batch, encoding none",
            "value": {
                "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2},
                "input": {"random": "uniform", "shape": [100, 3, 120, 160], "seed": 0},
                "encoding": "none",
            },
        },
        "notebook_mse_loss": {
            "summary": "The notebook's Conv2d(3, 16, 3, stride=2) with an MSE loss: its gradients, on a (2, 3, 12, 16) batch",
            "value": {
                "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2},
                "input": {"random": "uniform", "shape": [2, 3, 12, 16], "seed": 0},
                "loss": {
                    "function": "mse_loss",
                    "reduction": "mean",
                    "target": {"random": "normal", "shape": [2, 16, 5, 7], "seed": 1},
                },
                "encoding": "none",
            },
        },
        "small": {
            "summary": 'Conv2d 1 to 2, kernel 2, padding "same", on a (1, 1, 3, 3) image, compared',
            "value": {
                "config": {"in_channels": 1, "out_channels": 2, "kernel_size": 2, "padding": "same"},
                "input": [[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]],
                "seed": 0,
                "compare": True,
            },
        },
    },
    3: {
        "video": {
            "summary": "Conv3d 2 to 4, kernel (1, 3, 3), groups 2, on a random (1, 2, 2, 4, 4) clip",
            "value": {
                "config": {"in_channels": 2, "out_channels": 4, "kernel_size": [1, 3, 3], "groups": 2},
                "input": {"random": "normal", "shape": [1, 2, 2, 4, 4], "seed": 0},
                "backend": "reference",
                "compare": True,
            },
        },
    },
}


def _spec(dims: int, model: type[ConvConfigBase]) -> LayerSpec:
    names = [f"{n}_in" for n in DIM_NAMES[dims]]
    return LayerSpec(
        kind=f"conv{dims}d",
        torch_name=f"Conv{dims}d",
        config_model=model,
        summary=f"Conv{dims}d: {dims}-D convolution (cross-correlation) over (N, C_in, {', '.join(names)})",
        description=f"torch.nn.Conv{dims}d. Input `(N, C_in, {', '.join(names)})` or unbatched `(C_in, {', '.join(names)})`; "
        f"output `(N, C_out, {', '.join(n + '_out' for n in DIM_NAMES[dims])})` with, per dimension, "
        "`H_out = floor((H_in + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1`; "
        "weight `(C_out, C_in/groups, *kernel_size)`, bias `(C_out,)`. The reference backend pads, "
        "lays the windows out as columns (im2col) and multiplies by the weight once per group.",
        output_shape=output_shape,
        parameter_shapes=parameter_shapes,
        macs=macs,
        window=window,
        examples=EXAMPLES[dims],
    )


SPECS = [_spec(dims, model) for dims, model in zip((1, 2, 3), (Conv1dConfig, Conv2dConfig, Conv3dConfig))]
