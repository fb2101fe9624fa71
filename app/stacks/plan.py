"""The plan step: every config parsed, every shape and limit worked out, once, before a tensor exists.

A `StackRequest` is what any route asks for (a single layer is a stack of one); `plan_stack`
turns it into a `Plan`: each layer's parsed config, input and output shapes, parameter shapes,
multiply-adds and formulas, and the request's size, which picks the compute lane. All of it is
integer arithmetic (app.shapes and each layer's spec), so every limit is checked before a byte is
allocated; only an input sent as nested numbers is decoded here, since its shape is its data.

Errors name their place: `layers[2].config.kernel_size` in a stack, `config.kernel_size` for a
single layer, whose request has no `layers`.

Receptive field and jump (effective stride), per spatial dimension, in elements of the stack's input
(/v1/shapes):
    sliding-window layers (spec.window gives kernel k, stride s, dilation d):
        r_out = r_in + (k - 1) * d * j_in,    j_out = j_in * s
    layers that keep every position apart (same output shape as input, parameters at most 1-D
    per channel: ReLU, BatchNorm) keep r and j;
    any other layer (Flatten, Linear) mixes positions: r and j are null from there on.
The input has r = 1, j = 1 in each of the spatial dimensions of the first sliding-window layer;
a stack without one has no receptive field (null), and so does a later window of another rank.
"""

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from app.backends.registry import available_devices, draw_random
from app.codec.tensors import DTYPES, check_elements, declared_shape, decode_tensor
from app.config import Settings
from app.errors import InvalidInput, LayerlabError, PayloadTooLarge, ShapeMismatch, validation_error
from app.layers.base import LayerSpec, Shape
from app.layers.registry import LAYERS

INTEGER_BUFFER_BYTES = 8
BACKWARD_WORK_FACTOR = 2
"""A backward pass costs about twice its forward pass (the input's and the weights' gradients)."""  # num_batches_tracked is int64 whatever the dtype


@dataclass(slots=True)
class LayerRequest:
    """One layer as a request gives it: kind, raw constructor arguments, given tensors."""

    kind: str
    config: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StackRequest:
    """What a route asks to run; `single` for /v1/layers/{kind} (fields without `layers[i].`)."""

    layers: list[LayerRequest]
    input: Any
    seed: int = 0
    backend: str = "torch"
    compare: bool = False
    training: bool = True
    device: str = "cpu"
    return_intermediates: bool = False
    single: bool = False
    gradients: bool = False
    """Also the backward pass: the input's and every trainable parameter's gradient."""
    grad_output: Any = None
    """The upstream gradient (any tensor form), of the output's shape; None: all ones."""
    loss: Any = None
    """A `LossOptions` whose gradient starts the backward pass instead of grad_output."""


@dataclass(slots=True)
class StackEntry:
    """One parsed layer; `place` is `layers[i]` in a stack, None for a single layer."""

    index: int
    spec: LayerSpec
    config: BaseModel
    place: str | None

    def field(self, name: str) -> str:
        """`layers[2].config` in a stack, `config` alone for a single layer."""
        return f"{self.place}.{name}" if self.place else name


@dataclass(slots=True)
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
        return (
            self.entry.spec.window is None
            and self.output_shape == self.input_shape
            and all(len(s) <= 1 for s in self.parameter_shapes.values())
        )


@dataclass(slots=True)
class Plan:
    """A checked request: what the run step needs and nothing left to compute twice."""

    request: StackRequest
    layers: list[PlannedLayer]
    input_shape: Shape
    input: np.ndarray | None
    """Decoded here when it came as nested numbers; else (random, base64, bytes) decoded by the run."""
    size: int
    """Parameter, input and output elements plus multiply-adds: what picks the compute lane."""
    settings: Settings


def stack_of_one(kind: str, options: Any) -> StackRequest:
    """A /v1/layers/{kind} request (a validated `LayerRequestOptions`) as the stack of one it is;
    its errors keep their own field names (`config`, `input`, `parameters`)."""
    return StackRequest(
        [LayerRequest(kind, options.config, options.parameters)],
        options.input,
        single=True,
        **request_options(options),
    )


def request_options(options: Any) -> dict[str, Any]:
    """The options a layer and a sequential request share: `seed`, `backend`, `compare`, `training`,
    `device`, and `gradients`, `grad_output`, `loss` (app.schemas.requests.GradientOptions)."""
    names = ("seed", "backend", "compare", "training", "device", "gradients", "grad_output", "loss")
    return {name: getattr(options, name) for name in names}


def check_device(device: str, backend: str, compare: bool) -> None:
    """422 for a device this server lacks, or one asked of the reference backend alone."""
    if device == "cpu":
        return
    if backend == "reference" and not compare:
        raise InvalidInput(
            f"device {device!r} applies to the torch backend; the reference backend computes with NumPy on the CPU "
            "(use device 'cpu', or backend 'torch', or compare: true)",
            field="device",
            expected="cpu",
            actual=device,
        )
    devices = available_devices()
    if device not in devices:
        raise InvalidInput(
            f"device {device!r} is not available on this server; available: {devices}",
            field="device",
            expected=devices,
            actual=device,
        )


def parse_config(spec: LayerSpec, raw: Any, field: str = "config") -> BaseModel:
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"{field} must be an object of {spec.torch_name}'s constructor arguments",
            field=field,
            actual=type(raw).__name__,
        )
    try:
        return spec.config_model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, prefix=field) from None


def parse_layers(layers: list[Any], single: bool = False) -> list[StackEntry]:
    """Kinds and configs (each parsed by its layer's model), once; errors name `layers[i]...`."""
    entries = []
    for index, layer in enumerate(layers):
        place = None if single else f"layers[{index}]"
        spec = LAYERS.get(layer.kind)
        if spec is None:
            raise InvalidInput(
                f"layers[{index}].kind {layer.kind[:100]!r} is not a layer kind; supported: {sorted(LAYERS)}",
                field=f"layers[{index}].kind",
                expected=sorted(LAYERS),
                actual=layer.kind[:100],
            )
        config = parse_config(spec, layer.config, field="config" if single else f"{place}.config")
        entries.append(StackEntry(index, spec, config, place))
    return entries


def at_layer(exc: LayerlabError, entry: StackEntry, input_shape: Shape) -> LayerlabError:
    """A layer's own error (about `config.x` or its `input`), re-addressed to its place in a stack."""
    if entry.place is None:
        return exc
    field = entry.place if exc.field in (None, "input") else f"{entry.place}.{exc.field}"
    detail = f"{entry.place} ({entry.spec.torch_name}) on input shape {list(input_shape)}: {exc.detail}"
    error = type(exc)(detail, field=field, expected=exc.expected, actual=exc.actual, **exc.extra)
    error.extra.update(layer=entry.index, kind=entry.spec.kind)
    return error


def check_parameter_count(entries: list[StackEntry], settings: Settings, single: bool) -> int:
    """Parameter and buffer elements, all layers together, against LAYERLAB_MAX_PARAMETER_ELEMENTS."""
    count = sum(
        math.prod(s)
        for e in entries
        for s in (*e.spec.parameter_shapes(e.config).values(), *e.spec.buffer_shapes(e.config).values())
    )
    if count > settings.max_parameter_elements:
        subject = "the layer" if single else "the stack (parameters and buffers)"
        raise PayloadTooLarge(
            f"{subject} would have {count} parameter elements; the limit is {settings.max_parameter_elements} "
            "(setting LAYERLAB_MAX_PARAMETER_ELEMENTS)",
            field="config" if single else "layers",
            limit="max_parameter_elements",
            value=count,
            expected=f"<= {settings.max_parameter_elements}",
        )
    return count


def check_macs(macs: int, settings: Settings, field: str) -> None:
    if macs > settings.max_macs:
        raise PayloadTooLarge(
            f"the request would take about {macs} multiply-adds; the limit is {settings.max_macs} "
            "(setting LAYERLAB_MAX_MACS)",
            field=field,
            limit="max_macs",
            value=macs,
            expected=f"<= {settings.max_macs}",
        )


def check_kept(elements: int, settings: Settings) -> None:
    """The intermediates and indices a response carries, together, within LAYERLAB_MAX_TENSOR_ELEMENTS."""
    if elements > settings.max_tensor_elements:
        raise PayloadTooLarge(
            f"the response would carry {elements} elements of intermediate outputs and indices; the limit is "
            f"{settings.max_tensor_elements} (setting LAYERLAB_MAX_TENSOR_ELEMENTS); leave return_intermediates "
            "false or send a smaller input",
            field="return_intermediates",
            limit="max_tensor_elements",
            value=elements,
            expected=f"<= {settings.max_tensor_elements}",
        )


def plan_layers(entries: list[StackEntry], input_shape: Shape, settings: Settings) -> list[PlannedLayer]:
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
            check_elements(
                out_shape, f"{entry.place} output" if entry.place else "output", settings.max_tensor_elements
            )
        except LayerlabError as exc:
            exc.field = entry.place or "output"
            raise
        planned.append(
            PlannedLayer(
                entry,
                shape,
                out_shape,
                spec.parameter_shapes(config),
                spec.buffer_shapes(config),
                macs=spec.macs(config, shape, out_shape),
                work=spec.estimated_work(config, shape, out_shape),
                formula=formula,
            )
        )
        shape = out_shape
    return planned


def check_modes(planned: list[PlannedLayer], training: bool) -> None:
    """Checks that depend on the mode (BatchNorm in training: more than one value per channel), before computing."""
    for layer in planned:
        spec = layer.entry.spec
        if spec.check_mode:
            try:
                spec.check_mode(layer.entry.config, layer.input_shape, training)
            except LayerlabError as exc:
                raise at_layer(exc, layer.entry, layer.input_shape) from None


def check_gradient_start(request: StackRequest, output_shape: Shape, settings: Settings) -> None:
    """grad_output's (or a loss target's) declared shape against the output's, before decoding a byte."""
    if request.grad_output is not None:
        declared = declared_shape(request.grad_output, "grad_output", settings.max_json_depth)
        if declared is not None:  # nested numbers are checked once decoded (app.stacks.run)
            check_grad_output_shape(declared, output_shape)
    loss = request.loss
    if loss is not None and loss.function != "sum" and loss.target is None:
        raise InvalidInput(f"loss.target is required for {loss.function}", field="loss.target")
    if loss is not None and loss.function == "cross_entropy" and len(output_shape) < 1:
        raise InvalidInput(
            "cross_entropy needs an output of shape (C,), (N, C) or (N, C, d1, ...)",
            field="loss",
            actual=list(output_shape),
        )


def check_grad_output_shape(shape: Shape, output_shape: Shape) -> None:
    if tuple(shape) != tuple(output_shape):
        raise ShapeMismatch(
            f"grad_output has shape {list(shape)}; the output's shape is {list(output_shape)}",
            field="grad_output",
            expected=list(output_shape),
            actual=list(shape),
        )


def decode_input(raw: Any, settings: Settings, field: str = "input") -> np.ndarray:
    return decode_tensor(
        raw, field=field, max_elements=settings.max_tensor_elements, max_depth=settings.max_json_depth, draw=draw_random
    )


class RememberedPlans:
    """A bounded LRU of what a stack's configs alone decide, keyed by the exact configs: the parsed
    layers and their parameter count, and per input shape the planned layers (shapes, multiply-adds,
    formulas). A repeated config skips pydantic and the shape arithmetic; everything that depends on
    the request's tensors or options (the input's limits, parameters' shapes and values, mode,
    gradients, work) is still checked on every request. Only plans that passed are remembered, so
    a bad config is parsed, and refused, every time. Entries are shared read-only between requests."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._remembered: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if (value := self._remembered.get(key)) is not None:
                self._remembered.move_to_end(key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._remembered.clear()

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._remembered[key] = value
            if len(self._remembered) > self.entries:
                self._remembered.popitem(last=False)


REMEMBERED_PLANS = RememberedPlans(512)


def configs_key(request: StackRequest) -> bytes | None:
    """The stack's kinds and configs exactly as sent (1 and 1.0, true and 1 stay apart); None for
    configs not to remember: ones orjson cannot write (bytes, non-string keys), and ones holding a
    null, which NaN and infinities write as too."""
    try:
        key = orjson.dumps([(layer.kind, layer.config) for layer in request.layers])
    except orjson.JSONEncodeError:
        return None
    return None if b"null" in key else key


def parsed_layers(request: StackRequest, settings: Settings, key: bytes | None) -> tuple[list[StackEntry], int]:
    """`parse_layers` and `check_parameter_count`, remembered for a repeated stack of configs."""
    remembered_as = (key, request.single, settings.max_parameter_elements)
    if key is not None and (parsed := REMEMBERED_PLANS.get(remembered_as)) is not None:
        return parsed
    entries = parse_layers(request.layers, request.single)
    parsed = entries, check_parameter_count(entries, settings, request.single)
    if key is not None:
        REMEMBERED_PLANS.put(remembered_as, parsed)
    return parsed


def planned_layers(
    entries: list[StackEntry], input_shape: Shape, settings: Settings, key: bytes | None, single: bool
) -> list[PlannedLayer]:
    """`plan_layers`, remembered for a repeated stack of configs on the same input shape."""
    remembered_as = (key, single, tuple(input_shape), settings.max_tensor_elements)
    if key is not None and (planned := REMEMBERED_PLANS.get(remembered_as)) is not None:
        return planned
    planned = plan_layers(entries, input_shape, settings)
    if key is not None:
        REMEMBERED_PLANS.put(remembered_as, planned)
    return planned


def plan_stack(request: StackRequest, settings: Settings) -> Plan:
    """Limits first (device, configs, parameters, shapes, work, what the response keeps), nothing drawn yet."""
    check_device(request.device, request.backend, request.compare)
    key = configs_key(request)
    entries, parameters = parsed_layers(request, settings, key)
    x = None
    input_shape = declared_shape(request.input, "input", settings.max_json_depth)
    if input_shape is None:  # nested numbers: their shape is their data
        x = decode_input(request.input, settings)
        input_shape = x.shape
    else:  # random, base64, bytes: refused before drawing or decoding a byte
        check_elements(input_shape, "input", settings.max_tensor_elements)
    planned = planned_layers(entries, input_shape, settings, key, request.single)
    check_modes(planned, request.training)
    work = sum(p.work for p in planned)
    if request.gradients:  # the backward pass: about twice the forward's work (dX and dW each as dear as Y)
        work *= BACKWARD_WORK_FACTOR + 1
        check_gradient_start(request, planned[-1].output_shape if planned else tuple(input_shape), settings)
    check_macs(work, settings, field="config" if request.single else "layers")
    outputs = sum(math.prod(p.output_shape) for p in planned)
    if request.return_intermediates:  # every output kept for the response counts, together
        check_kept(outputs, settings)
    size = parameters + math.prod(input_shape) + outputs + work
    return Plan(request, planned, tuple(input_shape), x, size, settings)


@dataclass(slots=True)
class ShapesPlan:
    """/v1/shapes: the plan of a stack without tensors, and its totals."""

    input_shape: Shape
    dtype: str
    layers: list[PlannedLayer]
    totals: dict[str, int]


def plan_shapes(request: Any, settings: Settings) -> ShapesPlan:
    """`request` is a validated `ShapesOptions`: the same parsing and limits as a run, and receptive fields."""
    entries = parse_layers(request.layers)
    check_parameter_count(entries, settings, single=False)
    input_shape = tuple(request.input_shape)
    check_elements(input_shape, "input_shape", settings.max_tensor_elements)
    planned = with_receptive_fields(plan_layers(entries, input_shape, settings))
    return ShapesPlan(input_shape, request.dtype, planned, stack_totals(planned, input_shape, request.dtype))


def with_receptive_fields(planned: list[PlannedLayer]) -> list[PlannedLayer]:
    """Fill receptive_field and jump by the recurrence in this module's docstring."""
    windows = [p.entry.spec.window_triples(p.entry.config) for p in planned]
    first = next((w for w in windows if w is not None), None)
    if first is None:
        return planned
    rank = len(first)
    r: list[int] | None = [1] * rank
    j: list[int] | None = [1] * rank
    filled = []
    for layer, window in zip(planned, windows):
        if r is not None and j is not None:
            r, j = _receptive_step(layer, window, rank, r, j)
        filled.append(replace(layer, receptive_field=r, jump=j))
    return filled


def _receptive_step(
    layer: PlannedLayer, window: list[tuple[int, int, int]] | None, rank: int, r: list[int], j: list[int]
) -> tuple[list[int] | None, list[int] | None]:
    if window is not None and len(window) == rank:
        return (
            [r_in + (k - 1) * d * j_in for r_in, j_in, (k, s, d) in zip(r, j, window)],
            [j_in * s for j_in, (k, s, d) in zip(j, window)],
        )
    if window is not None or not layer.keeps_positions:
        return None, None
    return r, j


def stack_totals(planned: list[PlannedLayer], input_shape: Shape, dtype: str) -> dict[str, int]:
    """Totals in torchinfo.summary's terms (documented per field in app.schemas.stacks.ShapesTotals)."""
    itemsize = DTYPES[dtype].itemsize
    parameters = sum(p.parameter_count for p in planned)
    with_parameters = sum(math.prod(p.output_shape) for p in planned if p.parameter_count)
    forward_backward = 2 * with_parameters * itemsize
    buffer_bytes = sum(
        math.prod(s) * (INTEGER_BUFFER_BYTES if name == "num_batches_tracked" else itemsize)
        for p in planned
        for name, s in p.buffer_shapes.items()
    )
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
