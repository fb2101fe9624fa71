"""The interface every backend implements, and what a forward pass returns. No torch here.

Backends know layers (a `LayerSpec` and its parsed config); layers know no backend.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from app.layers.base import LayerSpec

State = dict[str, np.ndarray]
"""A layer's tensors by `state_dict` name: weight, bias, running_mean, ..."""


@dataclass
class ForwardResult:
    output: np.ndarray
    buffers: State = field(default_factory=dict)
    """Buffers after the pass (BatchNorm's running statistics), by state_dict name."""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Other tensors a layer returns: max-pool `indices`, BatchNorm `statistics`..."""


@dataclass
class GradientResult:
    """One layer's backward pass: dL/dx, and dL/d(parameter) for each trainable parameter by state_dict name."""

    input: np.ndarray
    parameters: State = field(default_factory=dict)
    grad_fn: str | None = None
    """The output's autograd node as torch names it ("AddmmBackward0"); None from the reference backend."""


@dataclass(frozen=True)
class ForwardPass:
    """One layer's forward pass as its backward pass needs it: what it read, and what it returned."""

    spec: LayerSpec
    config: Any
    x: np.ndarray
    state: State
    training: bool
    result: ForwardResult


class Backend(Protocol):
    name: str

    def forward(
        self, spec: LayerSpec, config: Any, x: np.ndarray, state: State, training: bool, out: np.ndarray | None = None
    ) -> ForwardResult:
        """Run one layer on a batch; `state` is not modified. With `out` (an array of the output's shape
        and dtype), the output is written there and `out` is the result's output."""
        ...

    def backward(self, forward: ForwardPass, grad_output: np.ndarray) -> GradientResult:
        """The gradients of one layer's pass given dL/d(output); its `state` is not modified and buffers
        are not updated again."""
        ...

    def loss(
        self, function: str, output: np.ndarray, target: np.ndarray | None, reduction: str
    ) -> tuple[float, np.ndarray]:
        """torch.nn.functional's `function` ("mse_loss", "cross_entropy", "sum") of the output and dL/d(output)."""
        ...
