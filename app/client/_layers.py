"""One method per layer kind, written once for both clients.

Each method has the torch.nn constructor's keyword arguments with PyTorch's defaults (so IDEs and
`help()` show real signatures) and forwards them to `_layer`, which Client implements by sending
and AsyncClient by returning an awaitable. `R` is what a call returns: `LayerResult` for Client,
`Awaitable[LayerResult]` for AsyncClient.

A request's `config` holds the arguments the caller set to something other than PyTorch's default,
as a hand-written request would; the server fills in the rest (and returns the full config).
"""

import inspect
from collections.abc import Mapping
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack

from app.client.codec import Encoding

R = TypeVar("R")

Tensor = Any
"""A NumPy array, a torch.Tensor (when torch is installed), a nested list, or a wire-form dict
such as `random_tensor((10, 4), seed=0)`."""
Size1 = int | tuple[int]
Size2 = int | tuple[int, int]
Size3 = int | tuple[int, int, int]
ConvPadding = Literal["valid", "same"]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


class LayerOptions(TypedDict, total=False):
    """The request options every layer method takes as keywords; the server's default when left out."""

    parameters: Mapping[str, Tensor]
    """Tensors by state_dict name (weight, bias, running_mean, ...); the rest as torch initializes them."""
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


def _config(kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A layer method's call (its `locals()`) -> the constructor arguments not at PyTorch's default."""
    defaults = _DEFAULTS[kind]
    return {
        name: value
        for name, value in arguments.items()
        if name not in ("self", "x", "options") and not _is_default(value, defaults.get(name, inspect.Parameter.empty))
    }


def _is_default(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default  # type: 1 and True are not the same argument


class LayerMethods(Generic[R]):
    def _layer(self, kind: str, x: Tensor, config: dict[str, Any], options: LayerOptions) -> R:
        raise NotImplementedError

    def linear(
        self, x: Tensor, *, in_features: int, out_features: int, bias: bool = True, **options: Unpack[LayerOptions]
    ) -> R:
        """torch.nn.Linear: `y = x @ weight.T + bias`. x `(*, in_features)` -> `(*, out_features)`;
        weight `(out_features, in_features)`."""
        return self._layer("linear", x, _config("linear", locals()), options)

    # -- convolution: x (N, C_in, *spatial) or (C_in, *spatial); weight (C_out, C_in / groups, *kernel_size)

    def conv1d(
        self,
        x: Tensor,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: Size1,
        stride: Size1 = 1,
        padding: Size1 | ConvPadding = 0,
        dilation: Size1 = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.Conv1d: `L_out = floor((L_in + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1`."""
        return self._layer("conv1d", x, _config("conv1d", locals()), options)

    def conv2d(
        self,
        x: Tensor,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: Size2,
        stride: Size2 = 1,
        padding: Size2 | ConvPadding = 0,
        dilation: Size2 = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.Conv2d: `H_out = floor((H_in + 2*padding[0] - dilation[0]*(kernel_size[0]-1) - 1) / stride[0]) + 1`,
        W_out likewise."""
        return self._layer("conv2d", x, _config("conv2d", locals()), options)

    def conv3d(
        self,
        x: Tensor,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: Size3,
        stride: Size3 = 1,
        padding: Size3 | ConvPadding = 0,
        dilation: Size3 = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.Conv3d: D_out, H_out, W_out as Conv2d's formula, per dimension."""
        return self._layer("conv3d", x, _config("conv3d", locals()), options)

    # -- max pooling: stride defaults to kernel_size (None); padding is -inf; see result.indices

    def maxpool1d(
        self,
        x: Tensor,
        *,
        kernel_size: Size1,
        stride: Size1 | None = None,
        padding: Size1 = 0,
        dilation: Size1 = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.MaxPool1d."""
        return self._layer("maxpool1d", x, _config("maxpool1d", locals()), options)

    def maxpool2d(
        self,
        x: Tensor,
        *,
        kernel_size: Size2,
        stride: Size2 | None = None,
        padding: Size2 = 0,
        dilation: Size2 = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.MaxPool2d, e.g. the notebook's `MaxPool2d(kernel_size=(3, 2))`."""
        return self._layer("maxpool2d", x, _config("maxpool2d", locals()), options)

    def maxpool3d(
        self,
        x: Tensor,
        *,
        kernel_size: Size3,
        stride: Size3 | None = None,
        padding: Size3 = 0,
        dilation: Size3 = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.MaxPool3d."""
        return self._layer("maxpool3d", x, _config("maxpool3d", locals()), options)

    # -- average pooling: AvgPool1d has no divisor_override, as in PyTorch

    def avgpool1d(
        self,
        x: Tensor,
        *,
        kernel_size: Size1,
        stride: Size1 | None = None,
        padding: Size1 = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.AvgPool1d."""
        return self._layer("avgpool1d", x, _config("avgpool1d", locals()), options)

    def avgpool2d(
        self,
        x: Tensor,
        *,
        kernel_size: Size2,
        stride: Size2 | None = None,
        padding: Size2 = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.AvgPool2d."""
        return self._layer("avgpool2d", x, _config("avgpool2d", locals()), options)

    def avgpool3d(
        self,
        x: Tensor,
        *,
        kernel_size: Size3,
        stride: Size3 | None = None,
        padding: Size3 = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        **options: Unpack[LayerOptions],
    ) -> R:
        """torch.nn.AvgPool3d."""
        return self._layer("avgpool3d", x, _config("avgpool3d", locals()), options)

    # -- batch normalization: `y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias`, per channel.
    # momentum=None is a cumulative moving average (PyTorch's meaning). `bias` is keyword-only in
    # torch 2.13's constructor: bias=False keeps the affine weight without a bias.

    def batchnorm1d(
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
    ) -> R:
        """torch.nn.BatchNorm1d on `(N, C)` or `(N, C, L)`. The result's `buffers` (running statistics)
        can be passed back as `parameters=` for the next step; `statistics` are the batch's."""
        return self._layer("batchnorm1d", x, _config("batchnorm1d", locals()), options)

    def batchnorm2d(
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
    ) -> R:
        """torch.nn.BatchNorm2d on `(N, C, H, W)`."""
        return self._layer("batchnorm2d", x, _config("batchnorm2d", locals()), options)

    def batchnorm3d(
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
    ) -> R:
        """torch.nn.BatchNorm3d on `(N, C, D, H, W)`."""
        return self._layer("batchnorm3d", x, _config("batchnorm3d", locals()), options)

    # -- glue

    def relu(self, x: Tensor, *, inplace: bool = False, **options: Unpack[LayerOptions]) -> R:
        """torch.nn.ReLU: `max(x, 0)` elementwise. `inplace` is there because the constructor has it;
        over HTTP it changes nothing."""
        return self._layer("relu", x, _config("relu", locals()), options)

    def flatten(self, x: Tensor, *, start_dim: int = 1, end_dim: int = -1, **options: Unpack[LayerOptions]) -> R:
        """torch.nn.Flatten: dims start_dim..end_dim become one."""
        return self._layer("flatten", x, _config("flatten", locals()), options)


LAYER_KINDS = tuple(name for name in vars(LayerMethods) if not name.startswith("_"))
"""Every kind with a method: ('linear', 'conv1d', ..., 'flatten')."""
_DEFAULTS = {
    kind: {name: p.default for name, p in inspect.signature(getattr(LayerMethods, kind)).parameters.items()}
    for kind in LAYER_KINDS
}
