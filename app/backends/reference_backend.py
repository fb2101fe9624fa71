"""The reference backend: each layer family's NumPy formulas (`app.backends.reference`), and the
adapters that turn a layer's config into those formulas' plain arguments. No torch here."""

from collections.abc import Callable
from typing import Any

import numpy as np

from app.backends.base import ForwardPass, ForwardResult, GradientResult, State
from app.backends.reference.activation import flatten, flatten_backward, relu, relu_backward
from app.backends.reference.batchnorm import batch_norm, batch_norm_backward
from app.backends.reference.conv import conv, conv_backward
from app.backends.reference.linear import linear, linear_backward
from app.backends.reference.loss import cross_entropy, mse_loss, sum_loss
from app.backends.reference.pool import avg_pool, avg_pool_backward, max_pool, max_pool_backward
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
    y = conv(
        x if batched else x[None],
        state["weight"],
        state.get("bias"),
        win.stride,
        win.padding,
        win.dilation,
        config.groups,
        config.padding_mode,
    )
    return ForwardResult(y if batched else y[0])


def max_pool_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    win = pool_window(config)
    out, indices = max_pool(
        x,
        win.kernel,
        win.stride,
        [left for left, _ in win.padding],
        win.dilation,
        config.ceil_mode,
        config.return_indices,
    )
    return ForwardResult(out, extras={} if indices is None else {"indices": indices})


def avg_pool_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    win = pool_window(config)
    return ForwardResult(
        avg_pool(
            x,
            win.kernel,
            win.stride,
            [left for left, _ in win.padding],
            config.ceil_mode,
            config.count_include_pad,
            getattr(config, "divisor_override", None),
        )
    )


def batch_norm_forward(config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    y, mean, var, buffers = batch_norm(
        x,
        state.get("weight"),
        state.get("bias"),
        state.get("running_mean"),
        state.get("running_var"),
        state.get("num_batches_tracked"),
        training=training,
        momentum=config.momentum,
        eps=config.eps,
    )
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


BackwardAdapter = Callable[[Any, np.ndarray, State, bool, ForwardResult, np.ndarray], GradientResult]
"""(config, x, state, training, the forward's result, dL/d(output)) -> the layer's gradients by its formulas."""


def _with_parameters(grad_input: np.ndarray, **grads: np.ndarray | None) -> GradientResult:
    return GradientResult(grad_input, {k: v for k, v in grads.items() if v is not None})


def linear_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    dx, dw, db = linear_backward(x, state["weight"], grad_output, bias="bias" in state)
    return _with_parameters(dx, weight=dw, bias=db)


def conv_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    win = conv_window(config)
    batched = x.ndim == config.dims + 2
    dx, dw, db = conv_backward(
        x if batched else x[None],
        state["weight"],
        grad_output if batched else grad_output[None],
        win.stride,
        win.padding,
        win.dilation,
        config.groups,
        config.padding_mode,
        bias="bias" in state,
    )
    return _with_parameters(dx if batched else dx[0], weight=dw, bias=db)


def max_pool_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    win = pool_window(config)
    indices = result.extras.get("indices")
    if indices is None:  # the forward kept no indices (return_indices false): find the arg-maxes again
        _, indices = max_pool(
            x, win.kernel, win.stride, [left for left, _ in win.padding], win.dilation, config.ceil_mode, True
        )
    assert indices is not None
    return GradientResult(max_pool_backward(grad_output, indices, x.shape, win.kernel, win.stride, win.dilation))


def avg_pool_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    win = pool_window(config)
    return GradientResult(
        avg_pool_backward(
            grad_output,
            x.shape,
            win.kernel,
            win.stride,
            [left for left, _ in win.padding],
            config.count_include_pad,
            getattr(config, "divisor_override", None),
        )
    )


def batch_norm_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    batch_statistics = training or "running_mean" not in state
    dx, dw, db = batch_norm_backward(
        grad_output,
        x,
        state.get("weight"),
        result.extras["mean"],
        result.extras["var"],
        batch_statistics=batch_statistics,
        eps=config.eps,
        bias="bias" in state,
    )
    return _with_parameters(dx, weight=dw, bias=db)


def relu_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    return GradientResult(relu_backward(x, grad_output))


def flatten_backward_adapter(
    config: Any, x: np.ndarray, state: State, training: bool, result: ForwardResult, grad_output: np.ndarray
) -> GradientResult:
    return GradientResult(flatten_backward(grad_output, x.shape))


BACKWARD: dict[str, BackwardAdapter] = {
    "linear": linear_backward_adapter,
    **{f"conv{d}d": conv_backward_adapter for d in (1, 2, 3)},
    **{f"maxpool{d}d": max_pool_backward_adapter for d in (1, 2, 3)},
    **{f"avgpool{d}d": avg_pool_backward_adapter for d in (1, 2, 3)},
    **{f"batchnorm{d}d": batch_norm_backward_adapter for d in (1, 2, 3)},
    "relu": relu_backward_adapter,
    "flatten": flatten_backward_adapter,
}
"""Every layer kind's backward adapter, calling the phase-1 formulas."""


class ReferenceBackend:
    name = "reference"

    def forward(
        self, spec: LayerSpec, config: Any, x: np.ndarray, state: State, training: bool, out: np.ndarray | None = None
    ) -> ForwardResult:
        # Copies keep `state` untouched (BatchNorm updates its running statistics in place).
        result = FORWARD[spec.kind](config, x, {k: v.copy() for k, v in state.items()}, training)
        if out is not None:
            np.copyto(out, result.output)
            result.output = out
        return result

    def backward(self, forward: ForwardPass, grad_output: np.ndarray) -> GradientResult:
        return BACKWARD[forward.spec.kind](
            forward.config, forward.x, forward.state, forward.training, forward.result, grad_output
        )

    def loss(
        self, function: str, output: np.ndarray, target: np.ndarray | None, reduction: str
    ) -> tuple[float, np.ndarray]:
        """The loss.py formulas: the loss of the output and its gradient dL/d(output)."""
        if function == "sum":
            value, grad = sum_loss(output, reduction)
        else:
            assert target is not None
            value, grad = (mse_loss if function == "mse_loss" else cross_entropy)(output, target, reduction)
        return float(value), grad
