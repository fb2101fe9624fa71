"""One method per layer kind, written once for both clients and once per layer family.

A family's call signature is a Protocol (`ConvMethod`, `PoolMethod`, ...): the torch.nn constructor's
keyword arguments with PyTorch's defaults, generic in the size type (`tuple[int, int]` for the 2-d
kinds). `LayerMethods` declares each kind as its family's protocol, e.g. `conv2d: ConvMethod[tuple[int, int], R]`,
so type checkers and IDEs see the real keywords; at import, one helper turns each declaration into a
method with that signature (for `help()` and `inspect.signature`) which forwards to `_layer`. Client
implements `_layer` by sending, AsyncClient by returning an awaitable. `R` is what a call returns:
`LayerResult` for Client, `Awaitable[LayerResult]` for AsyncClient.

A request's `config` holds the arguments the caller set to something other than PyTorch's default,
as a hand-written request would; the server fills in the rest (and returns the full config).
"""

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar, Unpack, get_args, get_origin

from app.client.codec import Encoding

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T", contravariant=True)  # a call's argument type: contravariant, as type checkers require
"""A family's size tuple: `tuple[int]`, `tuple[int, int]` or `tuple[int, int, int]`; an int means the same in every dimension."""

Tensor = Any
"""A NumPy array, a torch.Tensor (when torch is installed), a nested list, or a wire-form dict
such as `random_tensor((10, 4), seed=0)`."""
ConvPadding = Literal["valid", "same"]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


class RequestOptions(TypedDict, total=False):
    """The request options a layer and a stack take as keywords; the server's default when left out."""

    seed: int
    """torch.manual_seed before the module is built (server default 0)."""
    backend: Literal["torch", "reference"]
    """`torch` (torch.nn, the default) or `reference` (the NumPy formulas)."""
    compare: bool
    """Also compute with the other backend; see `result.comparison`."""
    training: bool
    """Training mode (default True, like a fresh module); matters for BatchNorm."""
    encoding: Encoding
    """How tensors come back: the codec's (base64) by default; `none` for a summary only."""
    device: str
    """`cpu` or `cuda` for the torch backend, where the server offers it."""
    gradients: bool
    """Also the backward pass: `result.gradients` (input and trainable parameters), `result.grad_fn`."""
    grad_output: Tensor
    """The upstream gradient, of the output's shape (implies gradients); default all ones (output.sum())."""
    loss: Mapping[str, Any]
    """`{"function": "mse_loss" | "cross_entropy" | "sum", "target": ..., "reduction": "mean" | "sum"}`
    (implies gradients); its value is `result.loss`."""


class LayerOptions(RequestOptions, total=False):
    """The request options every layer method takes as keywords."""

    parameters: Mapping[str, Tensor]
    """Tensors by state_dict name (weight, bias, running_mean, ...); the rest as torch initializes them."""


class StackOptions(RequestOptions, total=False):
    """The request options `sequential()` takes as keywords (each `layer(...)` carries its own parameters)."""

    return_intermediates: bool
    """Also every layer's output (`result.intermediates`)."""


# -- the families' signatures. A method's docstring is its family's, with the kind's torch.nn class
# in place of the family's (torch.nn.MaxPool2d for maxpool2d where the family says torch.nn.PoolNd).


class LinearMethod(Protocol[R_co]):
    def __call__(
        self, x: Tensor, *, in_features: int, out_features: int, bias: bool = True, **options: Unpack[LayerOptions]
    ) -> R_co:
        """torch.nn.Linear: `y = x @ weight.T + bias`. x `(*, in_features)` -> `(*, out_features)`;
        weight `(out_features, in_features)`."""
        ...


class ConvMethod(Protocol[T, R_co]):
    def __call__(
        self,
        x: Tensor,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int | T,
        stride: int | T = 1,
        padding: int | T | ConvPadding = 0,
        dilation: int | T = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        **options: Unpack[LayerOptions],
    ) -> R_co:
        """torch.nn.ConvNd: x `(N, C_in, *spatial)` or `(C_in, *spatial)`; weight `(C_out, C_in / groups, *kernel_size)`.
        Each spatial size: `L_out = floor((L_in + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1`."""
        ...


class PoolMethod(Protocol[T, R_co]):
    def __call__(
        self,
        x: Tensor,
        *,
        kernel_size: int | T,
        stride: int | T | None = None,
        padding: int | T = 0,
        dilation: int | T = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        **options: Unpack[LayerOptions],
    ) -> R_co:
        """torch.nn.PoolNd: stride defaults to kernel_size (None). Max pooling pads with -inf and takes
        `dilation` and `return_indices` (see `result.indices`); average pooling takes `count_include_pad`
        and (but for AvgPool1d, as in PyTorch) `divisor_override`."""
        ...


class BatchNormMethod(Protocol[R_co]):
    def __call__(
        self,
        x: Tensor,
        *,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        bias: bool = True,
        **options: Unpack[LayerOptions],
    ) -> R_co:
        """torch.nn.BatchNormNd: `y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias`, per channel, on
        `(N, C)` or `(N, C, L)` (1d), `(N, C, H, W)` (2d), `(N, C, D, H, W)` (3d). momentum=None is a
        cumulative moving average (PyTorch's meaning); `bias` is keyword-only in torch 2.13's constructor:
        bias=False keeps the affine weight without a bias. The result's `buffers` (running statistics)
        can be passed back as `parameters=` for the next step; `statistics` are the batch's."""
        ...


class ReLUMethod(Protocol[R_co]):
    def __call__(self, x: Tensor, *, inplace: bool = False, **options: Unpack[LayerOptions]) -> R_co:
        """torch.nn.ReLU: `max(x, 0)` elementwise. `inplace` is there because the constructor has it;
        over HTTP it changes nothing."""
        ...


class FlattenMethod(Protocol[R_co]):
    def __call__(self, x: Tensor, *, start_dim: int = 1, end_dim: int = -1, **options: Unpack[LayerOptions]) -> R_co:
        """torch.nn.Flatten: dims start_dim..end_dim become one."""
        ...


class LayerMethods(Generic[R]):
    """Every layer kind as a method: its family's signature, sized for the kind."""

    linear: LinearMethod[R]
    conv1d: ConvMethod[tuple[int], R]
    conv2d: ConvMethod[tuple[int, int], R]
    conv3d: ConvMethod[tuple[int, int, int], R]
    maxpool1d: PoolMethod[tuple[int], R]
    maxpool2d: PoolMethod[tuple[int, int], R]
    maxpool3d: PoolMethod[tuple[int, int, int], R]
    avgpool1d: PoolMethod[tuple[int], R]
    avgpool2d: PoolMethod[tuple[int, int], R]
    avgpool3d: PoolMethod[tuple[int, int, int], R]
    batchnorm1d: BatchNormMethod[R]
    batchnorm2d: BatchNormMethod[R]
    batchnorm3d: BatchNormMethod[R]
    relu: ReLUMethod[R]
    flatten: FlattenMethod[R]

    def _layer(self, kind: str, x: Tensor, config: dict[str, Any], options: LayerOptions) -> R:
        raise NotImplementedError


_MAX_ONLY, _AVERAGE_ONLY = ("dilation", "return_indices"), ("count_include_pad", "divisor_override")
NOT_IN_TORCH = {
    **{f"maxpool{n}d": _AVERAGE_ONLY for n in (1, 2, 3)},
    **{f"avgpool{n}d": _MAX_ONLY for n in (2, 3)},
    "avgpool1d": (*_MAX_ONLY, "divisor_override"),
}
"""Keywords of a family's protocol that a kind's torch.nn constructor does not take: not in its
method's signature, and a TypeError when passed."""


def _config(kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A layer method's call (its bound arguments) -> the constructor arguments not at PyTorch's default."""
    defaults = _DEFAULTS[kind]
    return {
        name: value
        for name, value in arguments.items()
        if name not in ("self", "x", "options") and not _is_default(value, defaults.get(name, inspect.Parameter.empty))
    }


def _is_default(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default  # type: 1 and True are not the same argument


_TORCH_FAMILIES = {"maxpool": "MaxPool", "avgpool": "AvgPool", "batchnorm": "BatchNorm", "relu": "ReLU"}


def torch_name(kind: str) -> str:
    """The torch.nn class of a kind: `conv2d` -> `Conv2d`, `maxpool1d` -> `MaxPool1d`, `relu` -> `ReLU`."""
    family, dims = (kind[:-2], kind[-2:]) if kind[-2:-1].isdigit() else (kind, "")
    return _TORCH_FAMILIES.get(family, family.capitalize()) + dims


def _sized(annotation: Any, bindings: dict[Any, Any]) -> Any:
    """`int | T` with T bound to `tuple[int, int]` -> `int | tuple[int, int]`; other annotations as they are."""
    if isinstance(annotation, TypeVar):
        return bindings.get(annotation, annotation)
    parameters = getattr(annotation, "__parameters__", ())
    return annotation[tuple(bindings[p] for p in parameters)] if parameters else annotation


def _layer_method(kind: str, declared: Any) -> Callable[..., Any]:
    """The method for `kind`, from its declaration `FamilyMethod[size, R]`: the family's signature with
    the size filled in, forwarding the call's config and options to `self._layer`."""
    family = get_origin(declared)
    bindings = dict(zip(family.__parameters__, get_args(declared), strict=True))
    call = inspect.signature(family.__call__)
    signature = call.replace(
        parameters=[
            p.replace(annotation=_sized(p.annotation, bindings))
            for p in call.parameters.values()
            if p.name not in NOT_IN_TORCH.get(kind, ())
        ],
        return_annotation=_sized(call.return_annotation, bindings),
    )

    def method(self: LayerMethods[Any], *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        return self._layer(kind, arguments["x"], _config(kind, arguments), arguments.get("options", {}))

    method.__name__, method.__qualname__ = kind, f"LayerMethods.{kind}"
    method.__signature__ = signature  # type: ignore[attr-defined]  # what help() and inspect.signature show
    method.__doc__ = re.sub(r"torch\.nn\.\w+", f"torch.nn.{torch_name(kind)}", family.__call__.__doc__ or "", count=1)
    return method


LAYER_KINDS = tuple(LayerMethods.__annotations__)
"""Every kind with a method: ('linear', 'conv1d', ..., 'flatten')."""
for _kind in LAYER_KINDS:
    setattr(LayerMethods, _kind, _layer_method(_kind, LayerMethods.__annotations__[_kind]))
_DEFAULTS = {
    kind: {name: p.default for name, p in inspect.signature(getattr(LayerMethods, kind)).parameters.items()}
    for kind in LAYER_KINDS
}
