"""Pooling: torch.nn.MaxPool1d/2d/3d(kernel_size, stride=None, padding=0, dilation=1,
return_indices=False, ceil_mode=False) and torch.nn.AvgPool1d/2d/3d(kernel_size, stride=None,
padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None); AvgPool1d has no
divisor_override."""

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, StrictBool, StrictInt, ValidationInfo, create_model, field_validator
from pydantic_core import PydanticCustomError

from app.errors import ShapeMismatch
from app.layers.base import LayerSpec, Shape
from app.layers.window_config import WindowConfig, int_or_tuple
from app.shapes import DIM_NAMES, DIM_WORDS, Window, expand, split_input_shape, symmetric


class PoolConfigBase(WindowConfig):
    """The checks PyTorch's pooling makes on its arguments; the fields are added per kind below."""

    @field_validator("padding", check_fields=False)
    @classmethod
    def _padding_at_most_half_kernel(cls, padding: Any, info: ValidationInfo) -> Any:
        kernel = info.data.get("kernel_size")
        if kernel is not None:
            for name, p, k in zip(DIM_NAMES[cls.dims], expand(padding, cls.dims), expand(kernel, cls.dims)):
                if p > k // 2:
                    raise PydanticCustomError(
                        "pool_padding",
                        "padding {p} is more than half the kernel size {k} in {word} "
                        "(PyTorch: pad should be at most half of kernel size)",
                        {"p": p, "k": k, "word": DIM_WORDS[name]},
                    )
        return padding

    @field_validator("divisor_override", check_fields=False)
    @classmethod
    def _divisor_not_zero(cls, divisor: int | None) -> int | None:
        if divisor == 0:
            raise PydanticCustomError("divisor", "divisor_override must not be 0 (PyTorch: divisor must be not zero)")
        return divisor

    if TYPE_CHECKING:  # the fields the models below add (the average-pool ones on AvgPool only)
        stride: int | tuple[int, ...] | None
        padding: int | tuple[int, ...]
        ceil_mode: bool
        return_indices: bool
        count_include_pad: bool


def _common_fields(dims: int) -> dict[str, Any]:
    size, non_negative = int_or_tuple(dims, 1, name="Size"), int_or_tuple(dims, 0, name="Padding")
    names = ", ".join(DIM_NAMES[dims])
    return {
        "kernel_size": (size, Field(description=f"Size of the window ({names}).", examples=[2])),
        "stride": (size | None, Field(None, description="Step of the window; null means kernel_size.")),
        "padding": (
            non_negative,
            Field(
                0,
                description="Implicit padding on both sides (-inf for max, 0 for average); "
                "at most half the kernel size.",
            ),
        ),
    }


def _ceil_mode() -> tuple[Any, Any]:
    return (
        StrictBool,
        Field(
            False,
            description="Round the output size up (ceil) instead of down; a last "
            "window that would start in the right padding is dropped.",
        ),
    )


def _max_config(dims: int) -> type[PoolConfigBase]:
    model = create_model(
        f"MaxPool{dims}dConfig",
        __base__=PoolConfigBase,
        __doc__=f"torch.nn.MaxPool{dims}d's constructor arguments.",
        **_common_fields(dims),
        dilation=(int_or_tuple(dims, 1, name="Size"), Field(1, description="Spacing between window elements.")),
        return_indices=(
            StrictBool,
            Field(
                False,
                description="Also return the argmax `indices` (flat per input plane, "
                "as PyTorch numbers them; for MaxUnpool).",
            ),
        ),
        ceil_mode=_ceil_mode(),
    )
    model.dims = dims
    return model


def _avg_config(dims: int) -> type[PoolConfigBase]:
    extra: dict[str, Any] = {}
    if dims > 1:  # as in PyTorch, AvgPool1d has no divisor_override
        extra["divisor_override"] = (
            StrictInt | None,
            Field(None, description="Divide every sum by this instead of the window size (non-zero)."),
        )
    model = create_model(
        f"AvgPool{dims}dConfig",
        __base__=PoolConfigBase,
        __doc__=f"torch.nn.AvgPool{dims}d's constructor arguments.",
        **_common_fields(dims),
        ceil_mode=_ceil_mode(),
        count_include_pad=(StrictBool, Field(True, description="Count the zero padding in the divisor.")),
        **extra,
    )
    model.dims = dims
    return model


MaxPool1dConfig, MaxPool2dConfig, MaxPool3dConfig = (_max_config(dims) for dims in (1, 2, 3))
AvgPool1dConfig, AvgPool2dConfig, AvgPool3dConfig = (_avg_config(dims) for dims in (1, 2, 3))


def window(config: PoolConfigBase) -> Window:
    kernel = expand(config.kernel_size, config.dims)
    stride = kernel if config.stride is None else expand(config.stride, config.dims)
    dilation = expand(getattr(config, "dilation", 1), config.dims)
    return Window(kernel, stride, symmetric(config.padding, config.dims), dilation, config.ceil_mode)


def _torch_name(config: PoolConfigBase) -> str:
    return type(config).__name__.removesuffix("Config")


def output_shape(config: PoolConfigBase, input_shape: Shape) -> Shape:
    """(N, C, *spatial) or (C, *spatial) -> the same leading dimensions, (*out) spatial."""
    batched, _, spatial = split_input_shape(input_shape, config.dims, _torch_name(config))
    _check_no_zero_sizes(config, input_shape, batched)
    win = window(config)
    if isinstance(config, AvgPool3dConfig):
        # avg_pool3d alone checks the unpadded input against the kernel.
        for name, size, k in zip(win.names, spatial, win.kernel):
            if size < k:
                raise ShapeMismatch(
                    f"input {DIM_WORDS[name]} {size} is smaller than the kernel size {k}: AvgPool3d needs every "
                    "input dimension at least the kernel size, before padding (PyTorch: input image smaller than kernel size)",
                    field="input",
                    expected=f"input {DIM_WORDS[name]} >= {k}",
                    actual=size,
                )
    out = win.check(spatial)
    if "dilation" in type(config).model_fields:
        _refuse_padding_only_windows(_torch_name(config), win, spatial)
    return (*input_shape[: -config.dims], *out)


def _refuse_padding_only_windows(torch_name: str, win: Window, spatial: Shape) -> None:
    """A deliberate difference from torch: a max-pool window that reads only padding is a 422.

    torch 2.13 accepts such a window (a dilation that steps over the whole input, e.g.
    MaxPool1d(2, stride=1, padding=1, dilation=3) on a length-2 input: positions -1 and 2); its
    forward gives -inf and an index outside the input plane, and autograd's backward then writes
    the gradient at that index, out of bounds: silent memory corruption, or an abort ("double
    free or corruption") that takes the whole server down. Such a window has no maximum and no
    input element to send a gradient to, so it is refused here, from config and input shape,
    before anything is computed, on every backend, forward and backward alike. (Average pooling
    has no dilation, and with padding <= kernel_size / 2 each of its windows reads the input.)
    """
    windows = win.padding_only_windows(spatial)
    if not windows:
        return
    name, index, positions = windows[0]
    dim = win.names.index(name)
    word = DIM_WORDS[name]
    raise ShapeMismatch(
        f"{torch_name} window {index} along the {word} reads only padding: positions {positions} of an input "
        f"{word} {spatial[dim]} (kernel_size {win.kernel[dim]}, stride {win.stride[dim]}, padding {win.padding[dim][0]}, "
        f"dilation {win.dilation[dim]}); it has no maximum (torch gives -inf, an index outside the input and an "
        "out-of-bounds write in its backward). Use a smaller dilation or padding, or a larger input",
        field="input",
        expected=f"every window reads at least one input element along the {word}",
        actual=f"window {index} reads positions {positions} of 0..{spatial[dim] - 1}",
    )


def _check_no_zero_sizes(config: PoolConfigBase, input_shape: Shape, batched: bool) -> None:
    """torch pools an empty batch (N = 0) but refuses a zero channel or spatial size."""
    names = ("C", *DIM_NAMES[config.dims])
    for dim, size in enumerate(input_shape[int(batched) :], start=int(batched)):
        if size == 0:
            word = "channels" if names[dim - int(batched)] == "C" else DIM_WORDS[names[dim - int(batched)]]
            raise ShapeMismatch(
                f"input has a zero {word} (dimension {dim} of shape {list(input_shape)}); {_torch_name(config)} "
                'needs every dimension but the batch size N to be at least 1 (PyTorch: "Expected ... tensor '
                'with optional 0 dim batch size for input")',
                field="input",
                expected=f"input {word} >= 1",
                actual=list(input_shape),
            )


def work(config: PoolConfigBase, input_shape: Shape, out_shape: Shape) -> int:
    """torchinfo counts no MACs for pooling, yet every output element reads a whole window."""
    return math.prod(out_shape) * math.prod(window(config).kernel)


NOTEBOOK_BATCH = {"random": "uniform", "shape": [100, 3, 120, 160], "seed": 0}
SIGNAL = [[[1.0, -3.0, 2.0, 5.0, -1.0, 4.0, 0.0]]]  # (1, 1, 7)
IMAGE = [[[[1.0, -2.0, 3.0, 0.5], [-4.0, 5.0, -6.0, 2.0], [7.0, -8.0, 9.0, 1.0]]]]  # (1, 1, 3, 4)

EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "maxpool1d": {
        "indices": {
            "summary": "MaxPool1d(2, padding=1, ceil_mode=True, return_indices=True) on a (1, 1, 7) signal",
            "value": {
                "config": {"kernel_size": 2, "padding": 1, "ceil_mode": True, "return_indices": True},
                "input": SIGNAL,
                "compare": True,
            },
        }
    },
    "maxpool2d": {
        "notebook": {
            "summary": "MaxPool2d (3, 2)",
            "value": {"config": {"kernel_size": [3, 2]}, "input": NOTEBOOK_BATCH, "encoding": "none"},
        },
        "small": {
            "summary": "MaxPool2d(2, stride=1, padding=1) on a (1, 1, 3, 4) image with negative values",
            "value": {
                "config": {"kernel_size": 2, "stride": 1, "padding": 1, "return_indices": True},
                "input": IMAGE,
                "compare": True,
            },
        },
    },
    "maxpool3d": {
        "clip": {
            "summary": "MaxPool3d((1, 2, 2)) on a random (1, 2, 2, 4, 4) clip",
            "value": {
                "config": {"kernel_size": [1, 2, 2]},
                "input": {"random": "normal", "shape": [1, 2, 2, 4, 4], "seed": 0},
                "backend": "reference",
                "compare": True,
            },
        }
    },
    "avgpool1d": {
        "signal": {
            "summary": "AvgPool1d(3, stride=2, padding=1, count_include_pad=False) on a (1, 1, 7) signal",
            "value": {
                "config": {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
                "input": SIGNAL,
                "compare": True,
            },
        }
    },
    "avgpool2d": {
        "notebook": {
            "summary": "AvgPool2d (3, 2) on a random (100, 3, 120, 160) batch, encoding none",
            "value": {"config": {"kernel_size": [3, 2]}, "input": NOTEBOOK_BATCH, "encoding": "none"},
        },
        "small": {
            "summary": "AvgPool2d(2, ceil_mode=True) on a (1, 1, 3, 4) image: the last row's windows are clipped",
            "value": {"config": {"kernel_size": 2, "ceil_mode": True}, "input": IMAGE, "compare": True},
        },
    },
    "avgpool3d": {
        "clip": {
            "summary": "AvgPool3d(2, divisor_override=4) on a random (1, 2, 2, 4, 4) clip",
            "value": {
                "config": {"kernel_size": 2, "divisor_override": 4},
                "input": {"random": "normal", "shape": [1, 2, 2, 4, 4], "seed": 0},
                "compare": True,
            },
        }
    },
}


def _spec(kind: str, dims: int, model: type[PoolConfigBase]) -> LayerSpec:
    is_max = kind.startswith("max")
    names = ", ".join(f"{n}_in" for n in DIM_NAMES[dims])
    outs = ", ".join(f"{n}_out" for n in DIM_NAMES[dims])
    what = "maximum" if is_max else "average"
    formula = (
        "`H_out = floor((H_in + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1`"
        if is_max
        else "`H_out = floor((H_in + 2*padding - kernel_size) / stride) + 1`"
    )
    return LayerSpec(
        kind=kind,
        torch_name=model.__name__.removesuffix("Config"),
        config_model=model,
        summary=f"{model.__name__.removesuffix('Config')}: {dims}-D {what} pooling over (N, C, {names})",
        description=f"torch.nn.{model.__name__.removesuffix('Config')}. Input `(N, C, {names})` or unbatched `(C, {names})`; "
        f"output `(N, C, {outs})` with, per dimension, {formula} (ceil with ceil_mode, dropping a last window "
        "that would start in the right padding). No parameters. "
        + (
            "Padding is -inf; with return_indices the response has `indices`."
            if is_max
            else "The divisor counts the padding unless count_include_pad is false; divisor_override replaces it."
        ),
        output_shape=output_shape,
        parameter_shapes=lambda config: {},
        work=work,
        window=window,
        examples=EXAMPLES[kind],
    )


SPECS = [
    *(
        _spec(f"maxpool{dims}d", dims, model)
        for dims, model in zip((1, 2, 3), (MaxPool1dConfig, MaxPool2dConfig, MaxPool3dConfig))
    ),
    *(
        _spec(f"avgpool{dims}d", dims, model)
        for dims, model in zip((1, 2, 3), (AvgPool1dConfig, AvgPool2dConfig, AvgPool3dConfig))
    ),
]
