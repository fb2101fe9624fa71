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


class Backend(Protocol):
    name: str

    def forward(self, spec: LayerSpec, config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
        """Run one layer on a batch; `state` is not modified."""
        ...
