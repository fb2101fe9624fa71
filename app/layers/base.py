"""What the service needs to know about one layer kind: config, shapes, formulas. No backend here."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.shapes import Window

Shape = tuple[int, ...]


def _no_shapes(config: Any) -> dict[str, Shape]:
    return {}


def _no_macs(config: Any, input_shape: Shape, output_shape: Shape) -> int:
    return 0


def _no_formulas(config: Any, input_shape: Shape) -> list[str]:
    return []


def _window_formulas(window_of: Callable[[Any], Window]) -> Callable[[Any, Shape], list[str]]:
    def formulas(config: Any, input_shape: Shape) -> list[str]:
        window = window_of(config)
        return window.formulas(input_shape[-len(window.kernel) :])

    return formulas


@dataclass(frozen=True)
class LayerSpec:
    kind: str
    """URL name: 'linear', 'conv2d', ..."""
    torch_name: str
    """The torch.nn class: 'Linear', 'Conv2d', ..."""
    config_model: type[BaseModel]
    """The constructor's arguments, with PyTorch's names and defaults."""
    summary: str
    description: str
    output_shape: Callable[[Any, Shape], Shape]
    """Checks an input shape against the config and returns the output shape (raises a 422)."""
    parameter_shapes: Callable[[Any], dict[str, Shape]]
    """Trainable tensors by state_dict name."""
    buffer_shapes: Callable[[Any], dict[str, Shape]] = _no_shapes
    macs: Callable[[Any, Shape, Shape], int] = _no_macs
    """Multiply-adds of one forward pass (torchinfo's convention), for limits and /v1/shapes."""
    work: Callable[[Any, Shape, Shape], int] | None = None
    """Estimated operations for the LAYERLAB_MAX_MACS limit when they differ from `macs`
    (pooling: torchinfo counts 0 MACs, yet each output element reads a whole window)."""
    check_mode: Callable[[Any, Shape, bool], None] | None = None
    """(config, input_shape, training) -> None: checks that depend on the `training` flag (raises a 422;
    BatchNorm: batch statistics need more than one value per channel)."""
    formulas: Callable[[Any, Shape], list[str]] = _no_formulas
    """The output size's arithmetic with the numbers substituted (one line per spatial dimension);
    by default a sliding window's formulas."""
    window: Callable[[Any], Window] | None = None
    """Sliding-window layers (convolution, pooling): kernel, stride, padding, dilation per spatial
    dimension, from which the formulas and receptive fields follow."""
    examples: dict[str, dict[str, Any]] | None = None
    """Named request examples for the Swagger UI: {name: {"summary", "value"}}."""

    def __post_init__(self) -> None:
        if self.formulas is _no_formulas and self.window is not None:  # a sliding window's, by default
            object.__setattr__(self, "formulas", _window_formulas(self.window))

    def window_triples(self, config: Any) -> list[tuple[int, int, int]] | None:
        """(kernel, stride, dilation) per spatial dimension, for receptive fields; None for other layers."""
        if self.window is None:
            return None
        window = self.window(config)
        return list(zip(window.kernel, window.stride, window.dilation, strict=True))

    def estimated_work(self, config: Any, input_shape: Shape, output_shape: Shape) -> int:
        return (self.work or self.macs)(config, input_shape, output_shape)

    @property
    def title(self) -> str:
        return self.torch_name
