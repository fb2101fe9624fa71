"""Typed results: the response bodies with every tensor decoded to a NumPy array.

Each keeps the body as received (tensors still encoded) in `.raw`, for fields a newer server adds.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.client.codec import decode

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _number(value: Any) -> Any:
    """JSON has no NaN or infinity: the server writes them as strings."""
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _tensors(value: dict[str, Any] | None) -> dict[str, np.ndarray | None]:
    return {name: decode(tensor) for name, tensor in (value or {}).items()}


def _shapes(tensors: dict[str, Any] | None) -> dict[str, tuple[int, ...]]:
    """Shapes of response tensors as received: known even when only a summary came back."""
    return {name: tuple(tensor["shape"]) for name, tensor in (tensors or {}).items()}


@dataclass(frozen=True)
class Comparison:
    """The other backend against the requested one, with torch.testing.assert_close's tolerances."""

    backend: str
    max_abs_diff: float
    max_rel_diff: float
    allclose: bool
    rtol: float
    atol: float
    elapsed_ms: float
    indices_equal: bool | None = None
    buffers_max_abs_diff: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> "Comparison | None":
        if body is None:
            return None
        return cls(
            backend=body["backend"],
            max_abs_diff=_number(body["max_abs_diff"]),
            max_rel_diff=_number(body["max_rel_diff"]),
            allclose=body["allclose"],
            rtol=body["rtol"],
            atol=body["atol"],
            elapsed_ms=body.get("elapsed_ms", math.nan),
            indices_equal=body.get("indices_equal"),
            buffers_max_abs_diff=_number(body.get("buffers_max_abs_diff")),
            raw=body,
        )


@dataclass(frozen=True, repr=False, kw_only=True)
class PassResult:
    """What a layer's and a stack's pass both return: the comparison, the timing, the body, and with
    gradients the loss, the gradients and the output's autograd node."""

    comparison: Comparison | None
    """With `compare=True`: how far the other backend's output is."""
    elapsed_ms: float
    raw: dict[str, Any]
    gradients: dict[str, np.ndarray | None] = field(default_factory=dict)
    """With gradients: "input" and each trainable parameter's gradient, by state_dict name (a stack's
    are {"input": dL/d(input)}; each layer's parameter gradients are in `layers[i].gradients`)."""
    loss: float | None = None
    grad_fn: str | None = None
    """The output's autograd node, as torch names it ("AddmmBackward0"); None from the reference backend."""

    @staticmethod
    def _pass_fields(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "comparison": Comparison.from_json(body.get("comparison")),
            "elapsed_ms": body.get("elapsed_ms", math.nan),
            "raw": body,
            "gradients": _tensors(body.get("gradients")),
            "loss": _number(body.get("loss")),
            "grad_fn": body.get("grad_fn"),
        }


@dataclass(frozen=True, repr=False)
class LayerResult(PassResult):
    """One layer's forward pass. Tensors are NumPy arrays (None with `encoding="none"`)."""

    kind: str
    backend: str
    config: dict[str, Any]
    """Every constructor argument, the server's defaults filled in."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output: np.ndarray | None
    parameters: dict[str, np.ndarray | None]
    """Trainable tensors used (weight, bias): the ones sent, or torch's seeded initialization."""
    parameter_count: int
    buffers: dict[str, np.ndarray | None]
    """Buffers after the pass (BatchNorm's running statistics); feed them back as `parameters`."""
    indices: np.ndarray | None
    """Max-pool argmax indices (`return_indices=True`), numbered as PyTorch numbers them."""
    statistics: dict[str, np.ndarray | None]
    """Per-channel batch statistics used (BatchNorm)."""
    formula: list[str]
    """Output-size formulas with the numbers substituted."""

    @classmethod
    def from_json(cls, body: dict[str, Any], backend: str | None = None) -> "LayerResult":
        return cls(
            kind=body["kind"],
            backend=body.get("backend", backend or ""),
            config=body.get("config", {}),
            input_shape=tuple(body["input_shape"]),
            output_shape=tuple(body["output_shape"]),
            output=decode(body.get("output")),
            parameters=_tensors(body.get("parameters")),
            parameter_count=body.get("parameter_count", 0),
            buffers=_tensors(body.get("buffers")),
            indices=decode(body.get("indices")),
            statistics=_tensors(body.get("statistics")),
            formula=body.get("formula") or [],
            **cls._pass_fields(body),
        )

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """{"weight": (16, 3, 3, 3), "bias": (16,)}, with any encoding (`none` included)."""
        return _shapes(self.raw.get("parameters"))

    @property
    def summary(self) -> dict[str, float] | None:
        """min, max, mean, std of the output when it came back as a summary (`encoding="none"`)."""
        return (
            {k: _number(v) for k, v in self.raw["output"]["summary"].items()}
            if "summary" in self.raw.get("output", {})
            else None
        )

    def __repr__(self) -> str:
        parts = [
            f"kind={self.kind!r}",
            f"backend={self.backend!r}",
            f"output_shape={self.output_shape}",
            f"parameters={self.parameter_shapes}",
        ]
        if self.buffers:
            parts.append(f"buffers={_shapes(self.raw.get('buffers'))}")
        if self.comparison is not None:
            parts.append(f"allclose={self.comparison.allclose}")
        return f"LayerResult({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class ShapesResult:
    """POST /v1/shapes: one row per layer (shapes, parameter shapes, MACs, formulas), then totals."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    layers: list[dict[str, Any]]
    totals: dict[str, Any]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "ShapesResult":
        return cls(
            input_shape=tuple(body.get("input_shape", ())),
            output_shape=tuple(body.get("output_shape", ())),
            layers=body.get("layers", []),
            totals=body.get("totals", {}),
            raw=body,
        )

    def __repr__(self) -> str:
        kinds = [row.get("kind") for row in self.layers]
        return f"ShapesResult({self.input_shape} -> {self.output_shape}, layers={kinds}, totals={self.totals})"


@dataclass(frozen=True, repr=False)
class SequentialResult(PassResult):
    """POST /v1/sequential: the stack's final output and one `LayerResult` per layer
    (its `output` is set with `return_intermediates=True`)."""

    backend: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output: np.ndarray | None
    layers: list[LayerResult]
    parameter_count: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "SequentialResult":
        backend = body.get("backend", "")
        return cls(
            backend=backend,
            input_shape=tuple(body.get("input_shape", ())),
            output_shape=tuple(body.get("output_shape", ())),
            output=decode(body.get("output")),
            layers=[LayerResult.from_json(layer, backend) for layer in body.get("layers", [])],
            parameter_count=body.get("parameter_count", 0),
            **cls._pass_fields(body),
        )

    @property
    def intermediates(self) -> list[np.ndarray | None]:
        """Every layer's output, in order (with `return_intermediates=True`)."""
        return [layer.output for layer in self.layers]

    def __repr__(self) -> str:
        kinds = [layer.kind for layer in self.layers]
        return f"SequentialResult({self.input_shape} -> {self.output_shape}, layers={kinds}, backend={self.backend!r})"


@dataclass(frozen=True)
class LayerKind:
    """One entry of GET /v1/layers."""

    kind: str
    torch: str
    summary: str
    path: str
    config_schema: dict[str, Any] = field(repr=False)
    defaults: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "LayerKind":
        return cls(
            kind=body["kind"],
            torch=body.get("torch", ""),
            summary=body.get("summary", ""),
            path=body.get("path", f"/v1/layers/{body['kind']}"),
            config_schema=body.get("config_schema", {}),
            defaults=body.get("defaults", {}),
        )
