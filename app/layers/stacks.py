"""Stacks of layers, as `nn.Sequential` builds them: the shape arithmetic (/v1/shapes) and a run (/v1/sequential).

Generic over `LayerSpec`: every kind in the registry stacks without code here. Each layer's own
`output_shape` check runs on the previous layer's output shape, and its errors come back with the
layer's position (`layers[2].config.kernel_size`). Everything is arithmetic until the limits pass.

Receptive field and jump (effective stride), per spatial dimension, in elements of the stack's input:
    sliding-window layers (spec.window gives kernel k, stride s, dilation d):
        r_out = r_in + (k - 1) * d * j_in,    j_out = j_in * s
    layers that keep every position apart (same output shape as input, parameters at most 1-D
    per channel: ReLU, BatchNorm) keep r and j;
    any other layer (Flatten, Linear) mixes positions: r and j are null from there on.
The input has r = 1, j = 1 in each of the spatial dimensions of the first sliding-window layer;
a stack without one has no receptive field (null), and so does a later window of another rank.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
from pydantic import BaseModel

from app.backends.base import Backend, ForwardResult, State
from app.config import Settings
from app.errors import InvalidInput, LayerlabError, PayloadTooLarge
from app.layers.base import LayerSpec, Shape
from app.layers.registry import LAYERS
from app.layers.service import (
    check_device,
    check_macs,
    check_parameter_count,
    compare_results,
    decode_input,
    get_backend,
    other_backend,
    parse_config,
    resolve_state,
)
from app.tensors import DTYPES, check_elements, dtype_name

INTEGER_BUFFER_BYTES = 8  # num_batches_tracked is int64 whatever the dtype


@dataclass(frozen=True)
class StackEntry:
    """One parsed layer of a request."""

    index: int
    spec: LayerSpec
    config: BaseModel

    @property
    def field(self) -> str:
        return f"layers[{self.index}]"


@dataclass(frozen=True)
class PlannedLayer:
    """A layer's arithmetic: shapes, parameter shapes, multiply-adds, formulas, receptive field."""

    entry: StackEntry
    input_shape: Shape
    output_shape: Shape
    parameter_shapes: dict[str, Shape]
    buffer_shapes: dict[str, Shape]
    macs: int
    work: int
    formula: list[str]
    receptive_field: list[int] | None = None
    jump: list[int] | None = None

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(s) for s in self.parameter_shapes.values())

    @property
    def keeps_positions(self) -> bool:
        """Acts on each position apart from the others: no window, same shape, per-channel parameters."""
        return (self.entry.spec.window is None and self.output_shape == self.input_shape
                and all(len(s) <= 1 for s in self.parameter_shapes.values()))


def parse_layers(raw_layers: list[Any]) -> list[StackEntry]:
    """Kinds and configs (each parsed by its layer's model); errors name `layers[i]...`."""
    entries = []
    for index, layer in enumerate(raw_layers):
        spec = LAYERS.get(layer.kind)
        if spec is None:
            raise InvalidInput(f"layers[{index}].kind {layer.kind[:100]!r} is not a layer kind; supported: {sorted(LAYERS)}",
                               field=f"layers[{index}].kind", expected=sorted(LAYERS), actual=layer.kind[:100])
        entries.append(StackEntry(index, spec, parse_config(spec, layer.config, field=f"layers[{index}].config")))
    return entries


def at_layer(exc: LayerlabError, entry: StackEntry, input_shape: Shape) -> LayerlabError:
    """A layer's own error (about `config.x` or its `input`), re-addressed to its place in the stack."""
    field = entry.field if exc.field in (None, "input") else f"{entry.field}.{exc.field}"
    detail = f"{entry.field} ({entry.spec.torch_name}) on input shape {list(input_shape)}: {exc.detail}"
    error = type(exc)(detail, field=field, expected=exc.expected, actual=exc.actual, **exc.extra)
    error.extra.update(layer=entry.index, kind=entry.spec.kind)
    return error


def plan_stack(entries: list[StackEntry], input_shape: Shape, settings: Settings) -> list[PlannedLayer]:
    """Every layer's shapes, multiply-adds and formulas, without allocating; 422/413 at the first failure."""
    planned, shape = [], tuple(input_shape)
    for entry in entries:
        spec, config = entry.spec, entry.config
        try:
            out_shape = tuple(spec.output_shape(config, shape))
            formula = spec.formulas(config, shape)
        except LayerlabError as exc:
            raise at_layer(exc, entry, shape) from None
        try:
            check_elements(out_shape, f"{entry.field} output", settings.max_tensor_elements)
        except LayerlabError as exc:
            exc.field = entry.field
            raise
        planned.append(PlannedLayer(
            entry, shape, out_shape, spec.parameter_shapes(config), spec.buffer_shapes(config),
            macs=spec.macs(config, shape, out_shape), work=spec.estimated_work(config, shape, out_shape),
            formula=formula))
        shape = out_shape
    return with_receptive_fields(planned)


def with_receptive_fields(planned: list[PlannedLayer]) -> list[PlannedLayer]:
    """Fill receptive_field and jump by the recurrence in this module's docstring."""
    windows = [p.entry.spec.window(p.entry.config) if p.entry.spec.window else None for p in planned]
    first = next((w for w in windows if w is not None), None)
    if first is None:
        return planned
    rank = len(first)
    r: list[int] | None = [1] * rank
    j: list[int] | None = [1] * rank
    filled = []
    for layer, window in zip(planned, windows):
        if r is not None and j is not None:
            if window is not None and len(window) == rank:
                r = [r_in + (k - 1) * d * j_in for r_in, j_in, (k, s, d) in zip(r, j, window)]
                j = [j_in * s for j_in, (k, s, d) in zip(j, window)]
            elif window is not None or not layer.keeps_positions:
                r = j = None
        filled.append(replace(layer, receptive_field=r, jump=j))
    return filled


def stack_totals(planned: list[PlannedLayer], input_shape: Shape, dtype: str) -> dict[str, int]:
    """Totals in torchinfo.summary's terms (documented per field in app.schemas.stacks.ShapesTotals)."""
    itemsize = DTYPES[dtype].itemsize
    parameters = sum(p.parameter_count for p in planned)
    with_parameters = sum(math.prod(p.output_shape) for p in planned if p.parameter_count)
    forward_backward = 2 * with_parameters * itemsize
    buffer_bytes = sum(math.prod(s) * (INTEGER_BUFFER_BYTES if name == "num_batches_tracked" else itemsize)
                       for p in planned for name, s in p.buffer_shapes.items())
    input_bytes = math.prod(input_shape) * itemsize
    return {
        "parameter_count": parameters,
        "macs": sum(p.macs for p in planned),
        "input_bytes": input_bytes,
        "output_bytes": sum(math.prod(p.output_shape) for p in planned) * itemsize,
        "forward_backward_pass_bytes": forward_backward,
        "parameter_bytes": parameters * itemsize,
        "buffer_bytes": buffer_bytes,
        "estimated_total_bytes": input_bytes + forward_backward + parameters * itemsize,
    }


def check_stack_parameters(entries: list[StackEntry], settings: Settings) -> None:
    """The whole stack's parameter and buffer elements against LAYERLAB_MAX_PARAMETER_ELEMENTS."""
    count = sum(math.prod(s) for e in entries
                for s in (*e.spec.parameter_shapes(e.config).values(), *e.spec.buffer_shapes(e.config).values()))
    check_parameter_count(count, settings, field="layers", subject="the stack (parameters and buffers)")


def shapes(request: Any, settings: Settings) -> tuple[list[PlannedLayer], dict[str, int]]:
    """/v1/shapes: `request` is a validated `ShapesOptions`."""
    entries = parse_layers(request.layers)
    check_stack_parameters(entries, settings)
    input_shape = tuple(request.input_shape)
    check_elements(input_shape, "input_shape", settings.max_tensor_elements)
    planned = plan_stack(entries, input_shape, settings)
    return planned, stack_totals(planned, input_shape, request.dtype)


@dataclass
class LayerRun:
    layer: PlannedLayer
    state: State
    output_shape: Shape
    buffers: State
    extras: dict[str, np.ndarray]
    elapsed_ms: float
    output: np.ndarray | None = None
    """Kept only when intermediates were asked for."""
    comparison: dict[str, Any] | None = None


@dataclass
class StackOutcome:
    backend: str
    device: str
    input_shape: Shape
    output: np.ndarray
    layers: list[LayerRun]
    comparison: dict[str, Any] | None
    elapsed_ms: float


def run_stack(request: Any, settings: Settings) -> StackOutcome:
    """/v1/sequential: `request` is a validated `SequentialOptions`. Limits first, then the states, then the run."""
    check_device(request.device, request.backend, request.compare)
    entries = parse_layers(request.layers)
    check_stack_parameters(entries, settings)
    x = decode_input(request.input, settings)
    planned = plan_stack(entries, x.shape, settings)
    check_modes(planned, request.training)
    check_macs(sum(p.work for p in planned), settings, field="layers")
    # Every output kept for the response counts, together, against the one-tensor limit.
    kept = sum(math.prod(p.output_shape) for p in planned) if request.return_intermediates else 0
    check_kept(kept, settings)
    states = resolve_states(entries, request, x.dtype, settings)

    primary = get_backend(request.backend, request.device)
    other_name = other_backend(request.backend)
    other = get_backend(other_name, request.device) if request.compare else None
    runs, other_ms = [], 0.0
    y, y_other = x, x
    # Both backends walk the stack side by side, each from its own previous output, so each
    # layer's comparison shows how far the two chains have drifted; only two outputs live at once.
    for layer, state in zip(planned, states):
        started = time.perf_counter()
        result = forward(primary, layer, y, state, request.training)
        run = LayerRun(layer, state, tuple(result.output.shape), result.buffers, result.extras,
                       (time.perf_counter() - started) * 1000,
                       output=result.output if request.return_intermediates else None)
        if other is not None:
            started = time.perf_counter()
            other_result = forward(other, layer, y_other, state, request.training)
            elapsed = (time.perf_counter() - started) * 1000
            other_ms += elapsed
            run.comparison = {**compare_results(result, other_result, other_name, dtype_name(x.dtype)), "elapsed_ms": elapsed}
            y_other = other_result.output
        runs.append(run)
        y = result.output
        kept += sum(v.size for v in result.extras.values())  # max-pool indices, known only per kind
        check_kept(kept, settings)
    comparison = None
    if other is not None:
        comparison = {**runs[-1].comparison, "elapsed_ms": other_ms,
                      "all_layers_allclose": all(run.comparison["allclose"] for run in runs)}
    return StackOutcome(request.backend, request.device, x.shape, y, runs, comparison,
                        sum(run.elapsed_ms for run in runs))


def check_kept(elements: int, settings: Settings) -> None:
    """The intermediates and indices a response carries, together, within LAYERLAB_MAX_TENSOR_ELEMENTS."""
    if elements > settings.max_tensor_elements:
        raise PayloadTooLarge(
            f"the response would carry {elements} elements of intermediate outputs and indices; the limit is "
            f"{settings.max_tensor_elements} (setting LAYERLAB_MAX_TENSOR_ELEMENTS); leave return_intermediates "
            "false or send a smaller input",
            field="return_intermediates", limit="max_tensor_elements", value=elements,
            expected=f"<= {settings.max_tensor_elements}")


def check_modes(planned: list[PlannedLayer], training: bool) -> None:
    """Checks that depend on the mode (BatchNorm in training: more than one value per channel), before computing."""
    for layer in planned:
        spec = layer.entry.spec
        if spec.check_mode:
            try:
                spec.check_mode(layer.entry.config, layer.input_shape, training)
            except LayerlabError as exc:
                raise at_layer(exc, layer.entry, layer.input_shape) from None


def forward(backend: Backend, layer: PlannedLayer, x: np.ndarray, state: State, training: bool) -> ForwardResult:
    """One layer on one backend; a layer's own 422 (BatchNorm's one value per channel) names its place."""
    try:
        return backend.forward(layer.entry.spec, layer.entry.config, x, state, training)
    except LayerlabError as exc:
        raise at_layer(exc, layer.entry, x.shape) from None


def resolve_states(entries: list[StackEntry], request: Any, dtype: np.dtype, settings: Settings) -> list[State]:
    """Each layer's given tensors, the rest as `torch.manual_seed(seed); nn.Sequential(...)` initializes them."""

    @cache
    def initial() -> list[State]:
        from app.backends.torch_backend import initial_states  # torch only when something is not given

        return initial_states([(e.spec, e.config) for e in entries], request.seed)

    def initial_for(index: int) -> Callable[[], State]:
        return lambda: initial()[index]

    return [resolve_state(e.spec, e.config, layer.parameters, dtype, settings, initial=initial_for(e.index),
                          field=f"{e.field}.parameters")
            for e, layer in zip(entries, request.layers)]
