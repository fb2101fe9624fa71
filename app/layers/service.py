"""Run one layer for a request: validate, check limits, resolve the state, compute, compare.

Order matters: everything that can be known from the config (parameter counts, output shape,
multiply-adds) is checked before a tensor is allocated.
"""

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from app.backends.base import Backend, ForwardResult, State
from app.backends.reference_backend import ReferenceBackend
from app.config import Settings
from app.errors import InvalidInput, LayerlabError, PayloadTooLarge, ShapeMismatch, validation_error
from app.layers.base import LayerSpec, Shape
from app.tensors import check_elements, declared_shape, decode_tensor, dtype_name, json_scalar, probable_shape

# torch.testing.assert_close's defaults
TOLERANCES = {"float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}
INTEGER_BUFFERS = {"num_batches_tracked"}


@functools.lru_cache(maxsize=16)  # backends hold nothing but their device
def get_backend(name: str, device: str = "cpu") -> Backend:
    """`device` is where torch computes; the reference backend is NumPy on the CPU."""
    if name == "reference":
        return ReferenceBackend()
    from app.backends.torch_backend import TorchBackend  # the only backend that needs torch

    return TorchBackend(device)


def check_device(device: str, backend: str, compare: bool) -> None:
    """422 for a device this server lacks, or one asked of the reference backend alone."""
    if device == "cpu":
        return
    if backend == "reference" and not compare:
        raise InvalidInput(
            f"device {device!r} applies to the torch backend; the reference backend computes with NumPy on the CPU "
            "(use device 'cpu', or backend 'torch', or compare: true)",
            field="device", expected="cpu", actual=device)
    from app.backends.torch_backend import available_devices

    devices = available_devices()
    if device not in devices:
        raise InvalidInput(f"device {device!r} is not available on this server; available: {devices}",
                           field="device", expected=devices, actual=device)


def other_backend(name: str) -> str:
    return "reference" if name == "torch" else "torch"


def parse_config(spec: LayerSpec, raw: Any, field: str = "config") -> BaseModel:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{field} must be an object of {spec.torch_name}'s constructor arguments",
                           field=field, actual=type(raw).__name__)
    try:
        return spec.config_model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, prefix=field) from None


def check_parameter_count(count: int, settings: Settings, field: str = "config", subject: str = "the layer") -> None:
    if count > settings.max_parameter_elements:
        raise PayloadTooLarge(
            f"{subject} would have {count} parameter elements; the limit is {settings.max_parameter_elements} "
            "(setting LAYERLAB_MAX_PARAMETER_ELEMENTS)",
            field=field, limit="max_parameter_elements", value=count, expected=f"<= {settings.max_parameter_elements}")


def check_macs(macs: int, settings: Settings, field: str = "config") -> None:
    if macs > settings.max_macs:
        raise PayloadTooLarge(
            f"the request would take about {macs} multiply-adds; the limit is {settings.max_macs} "
            "(setting LAYERLAB_MAX_MACS)",
            field=field, limit="max_macs", value=macs, expected=f"<= {settings.max_macs}")


def check_output_and_work(spec: LayerSpec, config: Any, input_shape: Shape, settings: Settings) -> Shape:
    """The output shape, refused (413) when the output or the estimated work is over its limit."""
    out_shape = spec.output_shape(config, input_shape)
    check_elements(out_shape, "output", settings.max_tensor_elements)
    check_macs(spec.estimated_work(config, input_shape, out_shape), settings)
    return out_shape


def state_shapes(spec: LayerSpec, config: Any) -> dict[str, Shape]:
    return {**spec.parameter_shapes(config), **spec.buffer_shapes(config)}


def decode_input(raw: Any, settings: Settings, field: str = "input") -> np.ndarray:
    return decode_tensor(raw, field=field, max_elements=settings.max_tensor_elements, max_depth=settings.max_json_depth)


def resolve_state(
    spec: LayerSpec,
    config: Any,
    given: dict[str, Any],
    dtype: np.dtype,
    settings: Settings,
    initial: Callable[[], State],
    field: str = "parameters",
) -> State:
    """User-given tensors where present, else `initial()` (torch's seeded initialization), cast to `dtype`."""
    expected = state_shapes(spec, config)
    if not isinstance(given, dict):
        raise InvalidInput(f"{field} must be an object of tensors by name", field=field)
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise InvalidInput(
            f"{field}.{unknown[0]} is not a tensor of this {spec.torch_name}; it has {sorted(expected) or 'none'}",
            field=f"{field}.{unknown[0]}", expected=sorted(expected), actual=unknown)
    state: State = {}
    for name, raw in given.items():
        declared = declared_shape(raw, f"{field}.{name}", settings.max_json_depth)
        if declared is not None and declared != expected[name]:  # refused before decoding
            _wrong_state_shape(spec, field, name, declared, expected[name])
        array = decode_tensor(raw, field=f"{field}.{name}", max_elements=settings.max_tensor_elements,
                              max_depth=settings.max_json_depth, dtypes=("float32", "float64", "int64"),
                              # unlabelled values take the input's dtype (counts: float64, exact, checked in _cast)
                              default_dtype="float64" if name in INTEGER_BUFFERS else dtype_name(dtype))
        if array.shape != expected[name]:
            _wrong_state_shape(spec, field, name, array.shape, expected[name])
        state[name] = array
    if set(state) != set(expected):
        state = {**initial(), **state}
    return {name: _cast(name, array, dtype, field) for name, array in state.items()}


def _wrong_state_shape(spec: LayerSpec, field: str, name: str, shape: Shape, expected: Shape) -> None:
    scalar = " (a scalar: a bare number or {\"data\": n, \"shape\": []})" if expected == () else ""
    raise ShapeMismatch(
        f"{field}.{name} has shape {list(shape)}; {spec.torch_name} with this config needs {list(expected)}{scalar}",
        field=f"{field}.{name}", expected=list(expected), actual=list(shape))


def _cast(name: str, array: np.ndarray, dtype: np.dtype, field: str) -> np.ndarray:
    if name in INTEGER_BUFFERS:
        if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise InvalidInput(f"{field}.{name} must hold an integer", field=f"{field}.{name}")
        # A count: negative values would divide by zero in the cumulative average (momentum=None).
        if not ((array >= 0) & (array < 2**62)).all():
            raise InvalidInput(f"{field}.{name} is a count: it must be a non-negative integer below 2^62",
                               field=f"{field}.{name}", actual=array.tolist())
        return array.astype(np.int64)
    return array.astype(dtype, copy=False)


def compare_results(primary: ForwardResult, other: ForwardResult, other_name: str, dtype: str) -> dict[str, Any]:
    """How far the other backend is from the primary one, with torch.testing's tolerances."""
    rtol, atol = TOLERANCES[dtype]
    abs_diff, rel_diff = _differences(primary.output, other.output)
    allclose = bool(np.allclose(primary.output, other.output, rtol=rtol, atol=atol, equal_nan=True))
    comparison: dict[str, Any] = {"backend": other_name, "max_abs_diff": json_scalar(abs_diff),
                                  "max_rel_diff": json_scalar(rel_diff), "allclose": allclose, "rtol": rtol, "atol": atol}
    if "indices" in primary.extras and "indices" in other.extras:
        comparison["indices_equal"] = bool(np.array_equal(primary.extras["indices"], other.extras["indices"]))
        comparison["allclose"] = allclose and comparison["indices_equal"]
    shared = sorted(set(primary.buffers) & set(other.buffers))
    if shared:
        diffs = [_differences(primary.buffers[k], other.buffers[k])[0] for k in shared]
        comparison["buffers_max_abs_diff"] = json_scalar(max(diffs))
        comparison["allclose"] = comparison["allclose"] and all(
            np.allclose(primary.buffers[k], other.buffers[k], rtol=rtol, atol=atol, equal_nan=True) for k in shared)
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


@dataclass
class LayerOutcome:
    spec: LayerSpec
    config: BaseModel
    backend: str
    input_shape: Shape
    output_shape: Shape
    state: State
    result: ForwardResult
    comparison: dict[str, Any] | None
    elapsed_ms: float
    device: str = "cpu"
    input_nbytes: int = 0
    """Bytes of the decoded input and of the parameters the request gave (for metrics)."""


def estimated_size(spec: LayerSpec, request: Any, settings: Settings) -> int:
    """What a request will touch, from its config and shapes alone (nothing decoded): parameter,
    input and output elements plus estimated multiply-adds. It sends small requests to the light
    compute lane; an invalid request counts as small (its error is quick to produce)."""
    try:
        config = parse_config(spec, request.config)
        size = sum(math.prod(s) for s in state_shapes(spec, config).values())
        shape = probable_shape(request.input, "input", settings.max_json_depth)
        out_shape = spec.output_shape(config, shape)
        return size + math.prod(shape) + math.prod(out_shape) + spec.estimated_work(config, shape, out_shape)
    except LayerlabError:
        return 0


def run_layer(spec: LayerSpec, request: Any, settings: Settings) -> LayerOutcome:
    """`request` is a validated `LayerRequestOptions` with a raw `config` dict."""
    device = getattr(request, "device", "cpu")
    check_device(device, request.backend, request.compare)
    config = parse_config(spec, request.config)
    shapes = state_shapes(spec, config)
    check_parameter_count(sum(math.prod(s) for s in shapes.values()), settings)
    shape = declared_shape(request.input, "input", settings.max_json_depth)
    if shape is not None:  # random or base64: refuse before drawing or decoding a byte
        check_elements(shape, "input", settings.max_tensor_elements)
        check_output_and_work(spec, config, shape, settings)
    x = decode_input(request.input, settings)
    check_output_and_work(spec, config, x.shape, settings)
    if spec.check_mode:
        spec.check_mode(config, x.shape, request.training)

    from app.backends.torch_backend import initial_states

    state = resolve_state(spec, config, request.parameters, x.dtype, settings,
                          initial=lambda: initial_states([(spec, config)], request.seed)[0])
    started = time.perf_counter()
    result = get_backend(request.backend, device).forward(spec, config, x, state, request.training)
    elapsed_ms = (time.perf_counter() - started) * 1000
    comparison = None
    if request.compare:
        other_name = other_backend(request.backend)
        started = time.perf_counter()
        other = get_backend(other_name, device).forward(spec, config, x, state, request.training)
        comparison = compare_results(result, other, other_name, dtype_name(x.dtype))
        comparison["elapsed_ms"] = (time.perf_counter() - started) * 1000
    input_nbytes = x.nbytes + sum(state[name].nbytes for name in request.parameters)
    return LayerOutcome(spec, config, request.backend, x.shape, tuple(result.output.shape), state, result,
                        comparison, elapsed_ms, device, input_nbytes)
