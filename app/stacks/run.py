"""The compute step: a plan's tensors decoded, its states resolved, its layers run on a backend.

`run_plan` walks the planned layers in order on the primary backend and, with `compare`, on the
other one beside it. One path for /v1/layers/{kind} (a stack of one) and /v1/sequential. With
`gradients`, `backward_pass` then walks the layers back from the last one (the chain rule: each
layer's input gradient is the upstream gradient of the layer before it), from grad_output, a loss's
gradient, or all ones (the gradient of output.sum()).
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.backends.base import Backend, ForwardPass, ForwardResult, State
from app.backends.registry import draw_random, get_backend, initial_states, other_backend
from app.codec.tensors import declared_shape, decode_tensor, dtype_name, json_scalar
from app.config import Settings
from app.errors import InvalidInput, LayerlabError, ShapeMismatch
from app.stacks.plan import Plan, PlannedLayer, StackEntry, at_layer, check_grad_output_shape, check_kept, decode_input

# torch.testing.assert_close's defaults
TOLERANCES = {"float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}
INTEGER_BUFFERS = {"num_batches_tracked"}


@dataclass
class LayerRun:
    layer: PlannedLayer
    state: State
    buffers: State
    extras: dict[str, np.ndarray]
    elapsed_ms: float
    output: np.ndarray | None = None
    """Kept only when intermediates were asked for (else only two outputs live at once)."""
    comparison: dict[str, Any] | None = None
    gradients: State | None = None
    """dL/d(parameter) by state_dict name, trainable parameters only (with `gradients`)."""


@dataclass
class Gradients:
    """The backward pass's results beside the layers' own (`LayerRun.gradients`)."""

    input: np.ndarray
    grad_fn: str | None
    loss: float | None
    comparison: dict[str, Any] | None = None
    """With compare: the input gradient's difference from the other backend's."""


@dataclass
class StackOutcome:
    plan: Plan
    output: np.ndarray
    layers: list[LayerRun]
    comparison: dict[str, Any] | None
    elapsed_ms: float
    input_nbytes: int
    """Bytes of the decoded input and of the tensors the request gave (for metrics)."""
    gradients: Gradients | None = None


def run_plan(plan: Plan, into: memoryview | None = None) -> StackOutcome:
    """The forward pass of every planned layer; with `compare`, the other backend's beside it.

    `into`: bytes the stack's output is to end up in (a client's shared-memory region). When they
    can hold it as it is (`output_destination`), the last layer writes its output there, and the
    outcome's output is an array over them."""
    request, settings = plan.request, plan.settings
    x = plan.input if plan.input is not None else decode_input(request.input, settings)
    states = resolve_states(plan, x.dtype)
    destination = output_destination(into, plan, x, states)
    primary = get_backend(request.backend, request.device)
    other = get_backend(other_backend(request.backend), request.device) if request.compare else None
    kept = sum(math.prod(p.output_shape) for p in plan.layers) if request.return_intermediates else 0
    runs: list[LayerRun] = []
    # With gradients, each layer's input and forward result are kept for the backward pass.
    passes: list[tuple[np.ndarray, ForwardResult]] = []
    passes_other: list[tuple[np.ndarray, ForwardResult]] = []
    y, y_other = x, x
    # Both backends walk the stack side by side, each from its own previous output, so each
    # layer's comparison shows how far the two chains have drifted; only two outputs live at once.
    for layer, state in zip(plan.layers, states):
        run, result = run_layer(
            primary,
            layer,
            y,
            state,
            request.training,
            keep_output=request.return_intermediates,
            into=destination if layer is plan.layers[-1] else None,
        )
        if request.gradients:
            passes.append((y, result))
        if other is not None:
            x_other = y_other
            run.comparison, y_other, result_other = compare_layer(
                other, layer, y_other, state, request.training, result, x.dtype
            )
            if request.gradients:
                passes_other.append((x_other, result_other))
        y = result.output
        runs.append(run)
        kept += sum(v.size for v in run.extras.values())  # max-pool indices, known only per kind
        check_kept(kept, settings)
    given = sum(run.state[name].nbytes for run, layer in zip(runs, request.layers) for name in layer.parameters)
    gradients = None
    if request.gradients:
        gradients = _backward_passes(plan, primary, other, runs, (passes, y), (passes_other, y_other), x.dtype)
    outcome = StackOutcome(
        plan,
        y,
        runs,
        stack_comparison(runs) if other is not None else None,
        sum(run.elapsed_ms for run in runs),
        x.nbytes + given,
        gradients,
    )
    if gradients is not None and outcome.comparison is not None:
        _add_gradient_comparison(outcome.comparison, runs, gradients)
    return outcome


def _backward_passes(
    plan: Plan,
    primary: Backend,
    other: Backend | None,
    runs: list[LayerRun],
    chain: tuple[list[tuple[np.ndarray, ForwardResult]], np.ndarray],
    chain_other: tuple[list[tuple[np.ndarray, ForwardResult]], np.ndarray],
    dtype: np.dtype,
) -> Gradients:
    """The backward pass on the primary backend (and, with compare, on the other one, compared)."""
    started = time.perf_counter()
    gradients, grads = backward_pass(plan, primary, runs, *chain)
    if other is not None:
        other_gradients, other_grads = backward_pass(plan, other, runs, *chain_other)
        gradients.comparison = compare_gradients(
            {"input": gradients.input}, {"input": other_gradients.input}, dtype_name(dtype)
        )
        for run, mine, theirs in zip(runs, grads, other_grads):
            assert run.comparison is not None
            run.comparison["gradients"] = compare_gradients(mine, theirs, dtype_name(dtype))
    for run, layer_grads in zip(runs, grads):
        run.gradients = layer_grads
    runs[-1].elapsed_ms += (time.perf_counter() - started) * 1000
    return gradients


def _add_gradient_comparison(comparison: dict[str, Any], runs: list[LayerRun], gradients: Gradients) -> None:
    """The stack's comparison: the last layer's and the input's gradients, and all of them in all_layers_allclose."""
    comparison["gradients"] = {
        **(runs[-1].comparison or {}).get("gradients", {}),
        **(gradients.comparison or {}),
    }
    comparison["all_layers_allclose"] = (
        comparison["all_layers_allclose"]
        and all(c["allclose"] for run in runs for c in (run.comparison or {}).get("gradients", {}).values())
        and all(c["allclose"] for c in (gradients.comparison or {}).values())
    )


def backward_pass(
    plan: Plan,
    backend: Backend,
    runs: list[LayerRun],
    passes: list[tuple[np.ndarray, ForwardResult]],
    output: np.ndarray,
) -> tuple[Gradients, list[State]]:
    """The chain rule through the stack in reverse, from the request's upstream gradient; returns the
    input's gradient (with the loss and torch's grad_fn of the output) and each layer's parameter gradients."""
    loss, grad = start_gradient(plan, backend, output)
    grads: list[State] = [{} for _ in runs]
    grad_fn = None
    for index in reversed(range(len(runs))):
        run = runs[index]
        x, result = passes[index]
        try:
            entry = run.layer.entry
            step = backend.backward(
                ForwardPass(entry.spec, entry.config, x, run.state, plan.request.training, result), grad
            )
        except LayerlabError as exc:
            raise at_layer(exc, run.layer.entry, x.shape) from None
        if index == len(runs) - 1:
            grad_fn = step.grad_fn
        grads[index] = {name: step.parameters[name] for name in run.layer.parameter_shapes if name in step.parameters}
        grad = step.input.astype(x.dtype, copy=False)
    return Gradients(grad, grad_fn, loss), grads


def start_gradient(plan: Plan, backend: Backend, output: np.ndarray) -> tuple[float | None, np.ndarray]:
    """dL/d(output): the request's grad_output, a loss's gradient, or all ones (output.sum())."""
    request, settings = plan.request, plan.settings
    if request.grad_output is not None:
        grad = decode_beside(output, request.grad_output, "grad_output", settings)
        check_grad_output_shape(grad.shape, output.shape)
        return None, grad.astype(output.dtype, copy=False)
    if request.loss is None:
        return None, np.ones_like(output)
    loss = request.loss
    target = None
    if loss.target is not None:
        target = decode_beside(output, loss.target, "loss.target", settings, dtypes=("float32", "float64", "int64"))
        target = loss_target(loss.function, target, output)
    value, grad = backend.loss(loss.function, output, target, loss.reduction)
    return value, grad.astype(output.dtype, copy=False)


def decode_beside(output: np.ndarray, value: Any, field: str, settings: Settings, **options: Any) -> np.ndarray:
    """A request tensor that goes with the output (grad_output, a loss target), decoded within the
    limits, in the output's dtype unless it names its own."""
    return decode_tensor(
        value,
        field=field,
        max_elements=settings.max_tensor_elements,
        max_depth=settings.max_json_depth,
        default_dtype=dtype_name(output.dtype),
        draw=draw_random,
        **options,
    )


def loss_target(function: str, target: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The target as torch takes it (class indices int64, else the output's dtype), its shape checked (422)."""
    if function == "cross_entropy":
        axis = 0 if output.ndim == 1 else 1
        indices_shape = output.shape[:axis] + output.shape[axis + 1 :]
        if target.shape == output.shape and target.shape != indices_shape:
            return target.astype(output.dtype, copy=False)  # class probabilities
        if target.shape != indices_shape:
            raise ShapeMismatch(
                f"loss.target has shape {list(target.shape)}; cross_entropy takes class indices of shape "
                f"{list(indices_shape)} or class probabilities of the output's shape {list(output.shape)}",
                field="loss.target",
                expected=[list(indices_shape), list(output.shape)],
                actual=list(target.shape),
            )
        if not (np.isfinite(target).all() and (target == np.round(target)).all()):
            raise InvalidInput("loss.target: class indices must be integers", field="loss.target")
        classes = output.shape[axis]
        if target.size and ((target < 0) | (target >= classes)).any():
            raise InvalidInput(
                f"loss.target: class indices must lie in [0, {classes})",
                field="loss.target",
                expected=f"0 <= index < {classes}",
            )
        return target.astype(np.int64)
    if target.shape != output.shape:
        raise ShapeMismatch(
            f"loss.target has shape {list(target.shape)}; {function} needs the output's shape {list(output.shape)}",
            field="loss.target",
            expected=list(output.shape),
            actual=list(target.shape),
        )
    return target.astype(output.dtype, copy=False)


def compare_gradients(mine: State, theirs: State, dtype: str) -> dict[str, Any]:
    """Each gradient by name against the other backend's, with torch.testing's tolerances."""
    rtol, atol = TOLERANCES[dtype]
    compared = {}
    for name in mine:
        abs_diff, rel_diff = _differences(mine[name], theirs[name])
        compared[name] = {
            "max_abs_diff": json_scalar(abs_diff),
            "max_rel_diff": json_scalar(rel_diff),
            "allclose": bool(np.allclose(mine[name], theirs[name], rtol=rtol, atol=atol, equal_nan=True)),
        }
    return compared


def run_layer(
    backend: Backend,
    layer: PlannedLayer,
    x: np.ndarray,
    state: State,
    training: bool,
    keep_output: bool,
    into: np.ndarray | None = None,
) -> tuple[LayerRun, ForwardResult]:
    """One layer's forward pass, timed (its output written `into` an array, when given); its
    result's output goes on to the next layer."""
    started = time.perf_counter()
    result = forward(backend, layer, x, state, training, into)
    elapsed_ms = (time.perf_counter() - started) * 1000
    run = LayerRun(
        layer, state, result.buffers, result.extras, elapsed_ms, output=result.output if keep_output else None
    )
    return run, result


def compare_layer(
    other: Backend,
    layer: PlannedLayer,
    x: np.ndarray,
    state: State,
    training: bool,
    primary: ForwardResult,
    dtype: np.dtype,
) -> tuple[dict[str, Any], np.ndarray, ForwardResult]:
    """The same layer on the other backend, from that backend's own previous output, and how far apart
    the two are (torch.testing's tolerances for the stack's input `dtype`)."""
    started = time.perf_counter()
    result = forward(other, layer, x, state, training)
    elapsed_ms = (time.perf_counter() - started) * 1000
    comparison = {**compare_results(primary, result, other.name, dtype_name(dtype)), "elapsed_ms": elapsed_ms}
    return comparison, result.output, result


def stack_comparison(runs: list[LayerRun]) -> dict[str, Any]:
    """The last layer's comparison, the other backend's total time, and whether every layer agreed."""
    comparisons = [run.comparison or {} for run in runs]
    return {
        **comparisons[-1],
        "elapsed_ms": sum(c["elapsed_ms"] for c in comparisons),
        "all_layers_allclose": all(c["allclose"] for c in comparisons),
    }


def forward(
    backend: Backend, layer: PlannedLayer, x: np.ndarray, state: State, training: bool, into: np.ndarray | None = None
) -> ForwardResult:
    """One layer on one backend (its output written `into` an array, when given: straight from the
    kernel where torch has one that writes into a given tensor, else copied there once computed);
    a layer's own 422 (BatchNorm's one value per channel) names its place."""
    try:
        return backend.forward(layer.entry.spec, layer.entry.config, x, state, training, out=into)
    except LayerlabError as exc:
        raise at_layer(exc, layer.entry, x.shape) from None


def output_destination(into: memoryview | None, plan: Plan, x: np.ndarray, states: list[State]) -> np.ndarray | None:
    """`into` as an array of the stack's output shape and dtype (the input's), when the compute step
    can write the output there: exactly its size, aligned, writable, and sharing no memory with the
    input or a state tensor (a kernel writing its output as it goes would overwrite elements it has
    still to read). None otherwise: the output is computed into an array of its own (and the
    presenter copies it, or refuses the size)."""
    if into is None or not plan.layers or into.readonly:
        return None
    shape = plan.layers[-1].output_shape
    if into.nbytes != math.prod(shape) * x.dtype.itemsize or into.nbytes == 0 or not x.dtype.isnative:
        return None
    array = np.frombuffer(into, dtype=x.dtype).reshape(shape)
    inputs = [x, *(tensor for state in states for tensor in state.values())]
    if not array.flags.aligned or any(np.may_share_memory(array, tensor) for tensor in inputs):
        return None
    return array


def resolve_states(plan: Plan, dtype: np.dtype) -> list[State]:
    """Each layer's given tensors, the rest as `torch.manual_seed(seed); nn.Sequential(...)` initializes them."""
    entries = [layer.entry for layer in plan.layers]
    built: list[list[State]] = []

    def initial() -> list[State]:  # built once, and only when some tensor is not given
        if not built:
            built.append(initial_states([(e.spec, e.config) for e in entries], plan.request.seed))
        return built[0]

    def initial_for(index: int) -> Callable[[], State]:
        return lambda: initial()[index]

    return [
        resolve_state(layer, given.parameters, dtype, plan.settings, initial=initial_for(layer.entry.index))
        for layer, given in zip(plan.layers, plan.request.layers)
    ]


def resolve_state(
    layer: PlannedLayer, given: dict[str, Any], dtype: np.dtype, settings: Settings, initial: Callable[[], State]
) -> State:
    """User-given tensors where present, else `initial()` (torch's seeded initialization), cast to `dtype`."""
    entry, field = layer.entry, layer.entry.field("parameters")
    expected = {**layer.parameter_shapes, **layer.buffer_shapes}
    if not isinstance(given, dict):
        raise InvalidInput(f"{field} must be an object of tensors by name", field=field)
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise InvalidInput(
            f"{field}.{unknown[0]} is not a tensor of this {entry.spec.torch_name}; it has {sorted(expected) or 'none'}",
            field=f"{field}.{unknown[0]}",
            expected=sorted(expected),
            actual=unknown,
        )
    state = {
        name: _given_tensor(entry, field, name, raw, expected[name], dtype, settings) for name, raw in given.items()
    }
    if set(state) != set(expected):
        state = {**initial(), **state}
    return {name: _cast(name, array, dtype, field) for name, array in state.items()}


def _given_tensor(
    entry: StackEntry, field: str, name: str, raw: Any, expected: tuple[int, ...], dtype: np.dtype, settings: Settings
) -> np.ndarray:
    declared = declared_shape(raw, f"{field}.{name}", settings.max_json_depth)
    if declared is not None and declared != expected:  # refused before decoding
        _wrong_state_shape(entry, field, name, declared, expected)
    array = decode_tensor(
        raw,
        field=f"{field}.{name}",
        max_elements=settings.max_tensor_elements,
        max_depth=settings.max_json_depth,
        dtypes=("float32", "float64", "int64"),
        # unlabelled values take the input's dtype (counts: float64, exact, checked in _cast)
        default_dtype="float64" if name in INTEGER_BUFFERS else dtype_name(dtype),
        draw=draw_random,
    )
    if array.shape != expected:
        _wrong_state_shape(entry, field, name, array.shape, expected)
    return array


def _wrong_state_shape(
    entry: StackEntry, field: str, name: str, shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    scalar = ' (a scalar: a bare number or {"data": n, "shape": []})' if expected == () else ""
    raise ShapeMismatch(
        f"{field}.{name} has shape {list(shape)}; {entry.spec.torch_name} with this config needs {list(expected)}{scalar}",
        field=f"{field}.{name}",
        expected=list(expected),
        actual=list(shape),
    )


def _cast(name: str, array: np.ndarray, dtype: np.dtype, field: str) -> np.ndarray:
    if name in INTEGER_BUFFERS:
        if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise InvalidInput(f"{field}.{name} must hold an integer", field=f"{field}.{name}")
        # A count: negative values would divide by zero in the cumulative average (momentum=None).
        if not ((array >= 0) & (array < 2**62)).all():
            raise InvalidInput(
                f"{field}.{name} is a count: it must be a non-negative integer below 2^62",
                field=f"{field}.{name}",
                actual=array.tolist(),
            )
        return array.astype(np.int64)
    return array.astype(dtype, copy=False)


def compare_results(primary: ForwardResult, other: ForwardResult, other_name: str, dtype: str) -> dict[str, Any]:
    """How far the other backend is from the primary one, with torch.testing's tolerances."""
    rtol, atol = TOLERANCES[dtype]
    abs_diff, rel_diff = _differences(primary.output, other.output)
    allclose = bool(np.allclose(primary.output, other.output, rtol=rtol, atol=atol, equal_nan=True))
    comparison: dict[str, Any] = {
        "backend": other_name,
        "max_abs_diff": json_scalar(abs_diff),
        "max_rel_diff": json_scalar(rel_diff),
        "allclose": allclose,
        "rtol": rtol,
        "atol": atol,
    }
    if "indices" in primary.extras and "indices" in other.extras:
        comparison["indices_equal"] = bool(np.array_equal(primary.extras["indices"], other.extras["indices"]))
        comparison["allclose"] = allclose and comparison["indices_equal"]
    shared = sorted(set(primary.buffers) & set(other.buffers))
    if shared:
        diffs = [_differences(primary.buffers[k], other.buffers[k])[0] for k in shared]
        comparison["buffers_max_abs_diff"] = json_scalar(max(diffs))
        comparison["allclose"] = comparison["allclose"] and all(
            np.allclose(primary.buffers[k], other.buffers[k], rtol=rtol, atol=atol, equal_nan=True) for k in shared
        )
    return comparison


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """max |a - b| and max |a - b| / |b| over the elements that differ (NaN == NaN, inf == inf)."""
    # atleast_1d: arithmetic on 0-d arrays (num_batches_tracked) gives scalars, which cannot be indexed.
    a64, b64 = np.atleast_1d(a).astype(np.float64), np.atleast_1d(b).astype(np.float64)
    with np.errstate(all="ignore"):
        diff = np.abs(a64 - b64)
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff[same] = 0.0
        diff[np.isnan(diff)] = np.inf
        rel = np.where(diff == 0, 0.0, diff / np.abs(b64))
        rel[np.isnan(rel)] = np.inf
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))
