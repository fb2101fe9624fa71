"""The reference backend: each layer family's NumPy formulas (`app.backends.reference`), and the
adapters that turn a layer's config into those formulas' plain arguments. No torch here."""

from collections.abc import Callable
from typing import Any

import numpy as np

from app.backends.base import ForwardResult, State
from app.backends.reference.activation import flatten, relu
from app.backends.reference.batchnorm import batch_norm
from app.backends.reference.conv import conv
from app.backends.reference.linear import linear
from app.backends.reference.pool import avg_pool, max_pool
from app.layers.activation import flatten_dims
from app.layers.base import LayerSpec
from app.layers.conv import window as conv_window
from app.layers.pool import window as pool_window

Adapter = Callable[[Any, np.ndarray, State, bool], ForwardResult]
"""(config, x, state, training) -> the layer's forward pass through its formula."""


def linear_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    return ForwardResult(linear(x, state["weight"], state.get("bias")))


def conv_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    win = conv_window(config)
    batched = x.ndim == config.dims + 2
    y = conv(x if batched else x[None], state["weight"], state.get("bias"), win.stride, win.padding,
             win.dilation, config.groups, config.padding_mode)
    return ForwardResult(y if batched else y[0])


def max_pool_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    win = pool_window(config)
    out, indices = max_pool(x, win.kernel, win.stride, [left for left, _ in win.padding], win.dilation,
                            config.ceil_mode, config.return_indices)
    return ForwardResult(out, extras={} if indices is None else {"indices": indices})


def avg_pool_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    win = pool_window(config)
    return ForwardResult(avg_pool(x, win.kernel, win.stride, [left for left, _ in win.padding], config.ceil_mode,
                                  config.count_include_pad, getattr(config, "divisor_override", None)))


def batch_norm_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    y, mean, var, buffers = batch_norm(
        x, state.get("weight"), state.get("bias"), state.get("running_mean"), state.get("running_var"),
        state.get("num_batches_tracked"), training=training, momentum=config.momentum, eps=config.eps)
    return ForwardResult(y, buffers=buffers, extras={"mean": mean, "var": var})


def relu_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    return ForwardResult(relu(x))


def flatten_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    start, end = flatten_dims(config, x.shape)
    return ForwardResult(flatten(x, start, end))


FORWARD: dict[str, Adapter] = {
    "linear": linear_forward,
    **{f"conv{d}d": conv_forward for d in (1, 2, 3)},
    **{f"maxpool{d}d": max_pool_forward for d in (1, 2, 3)},
    **{f"avgpool{d}d": avg_pool_forward for d in (1, 2, 3)},
    **{f"batchnorm{d}d": batch_norm_forward for d in (1, 2, 3)},
    "relu": relu_forward,
    "flatten": flatten_forward,
}
"""Every layer kind's forward adapter (tests check it covers the registry)."""


class ReferenceBackend:
    name = "reference"

    def forward(self, spec: LayerSpec, config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
        # Copies keep `state` untouched (BatchNorm updates its running statistics in place).
        return FORWARD[spec.kind](config, x, {k: v.copy() for k, v in state.items()}, training)
