"""The reference backend: each layer family's NumPy formulas (`app.backends.reference`)."""

from typing import TYPE_CHECKING, Any

import numpy as np

from app.backends.base import ForwardResult, State

if TYPE_CHECKING:
    from app.layers.base import LayerSpec


class ReferenceBackend:
    name = "reference"

    def forward(self, spec: "LayerSpec", config: Any, x: np.ndarray, state: State, training: bool) -> ForwardResult:
        # Each spec adapts its config to its plain formula function; copies keep `state` untouched.
        return spec.reference(config, x, {k: v.copy() for k, v in state.items()}, training)
