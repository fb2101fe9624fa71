"""POST /v1/sequential: run a stack of layers in order, as nn.Sequential, on either backend or both."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app import wire
from app.api.body import wait_for_disconnect
from app.api.raw_route import RawRoute, app_settings, compute_pool
from app.api.routes.layers import MSGPACK_NOTE, present_extras
from app.api.routes.shapes import ERROR_RESPONSES
from app.api.transport import Wire
from app.errors import validation_error
from app.layers import stacks
from app.layers.registry import LAYERS
from app.observability import COMPUTE, access_fields
from app.schemas.stacks import SequentialLayerOptions, SequentialOptions, SequentialResponse, stack_request_model
from app.tensors import encode_tensor

router = APIRouter(prefix="/v1", tags=["stacks"], route_class=RawRoute)  # reads its own body (app.api.raw_route)

REQUEST_MODELS = {
    "SequentialRequest": stack_request_model(
        "SequentialRequest", SequentialOptions, SequentialLayerOptions,
        {kind: (spec.title, spec.config_model) for kind, spec in LAYERS.items()}),
}
"""Documented in OpenAPI (see app.main); bodies themselves are parsed by orjson, not FastAPI."""

EXAMPLES = {
    "mlp": {
        "summary": "Linear(4, 8), ReLU, Linear(8, 1) on torch.randn(10, 4), seed 0, compared with the reference",
        "value": {"layers": [
            {"kind": "linear", "config": {"in_features": 4, "out_features": 8}},
            {"kind": "relu"},
            {"kind": "linear", "config": {"in_features": 8, "out_features": 1}},
        ], "input": {"random": "normal", "shape": [10, 4], "seed": 0}, "seed": 0, "compare": True},
    },
    "small_cnn": {
        "summary": "Conv2d, ReLU, MaxPool2d, BatchNorm2d, Flatten, Linear on a (2, 1, 8, 8) batch, every layer's output",
        "value": {"layers": [
            {"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": 3}},
            {"kind": "relu"},
            {"kind": "maxpool2d", "config": {"kernel_size": 2}},
            {"kind": "batchnorm2d", "config": {"num_features": 2}},
            {"kind": "flatten"},
            {"kind": "linear", "config": {"in_features": 18, "out_features": 3}},
        ], "input": {"random": "normal", "shape": [2, 1, 8, 8], "seed": 1}, "seed": 0,
            "return_intermediates": True, "compare": True},
    },
    "given_parameters": {
        "summary": "The notebook's Linear(4, 1) with its weight and bias, then ReLU",
        "value": {"layers": [
            {"kind": "linear", "config": {"in_features": 4, "out_features": 1},
             "parameters": {"weight": [[-0.2009, -0.0747, -0.2266, 0.2618]], "bias": [-0.4708]}},
            {"kind": "relu"},
        ], "input": [[0.3102, 0.1271, -0.0823, 1.0858], [-1.1686, 1.6650, 1.3797, -0.9915]]},
    },
}


def record_compute_times(outcome: stacks.StackOutcome) -> None:
    """Each layer's forward time in the per-kind compute histogram, as a single-layer request records it."""
    for run in outcome.layers:
        kind = run.layer.entry.spec.kind
        COMPUTE.labels(kind, outcome.backend).observe(run.elapsed_ms / 1000)
        if run.comparison is not None:
            COMPUTE.labels(kind, run.comparison["backend"]).observe(run.comparison["elapsed_ms"] / 1000)


def present(outcome: stacks.StackOutcome, encoding: str) -> dict[str, Any]:
    """The response body; tensors in the requested encoding."""
    layers = []
    for run in outcome.layers:
        planned, entry = run.layer, run.layer.entry
        row: dict[str, Any] = {
            "index": entry.index,
            "kind": entry.spec.kind,
            "config": entry.config.model_dump(),
            "input_shape": list(planned.input_shape),
            "output_shape": list(run.output_shape),
            "parameters": {k: encode_tensor(run.state[k], encoding) for k in planned.parameter_shapes},
            "parameter_count": planned.parameter_count,
        }
        row.update(present_extras(run.buffers, run.extras, encoding))
        if planned.formula:
            row["formula"] = planned.formula
        if run.output is not None:
            row["output"] = encode_tensor(run.output, encoding)
        if run.comparison is not None:
            row["comparison"] = run.comparison
        row["elapsed_ms"] = round(run.elapsed_ms, 3)
        layers.append(row)
    body: dict[str, Any] = {
        "backend": outcome.backend,
        "device": outcome.device,
        "input_shape": list(outcome.input_shape),
        "output_shape": list(outcome.output.shape),
        "output": encode_tensor(outcome.output, encoding),
        "layers": layers,
        "parameter_count": sum(run.layer.parameter_count for run in outcome.layers),
    }
    if outcome.comparison is not None:
        body["comparison"] = outcome.comparison
    body["elapsed_ms"] = round(outcome.elapsed_ms, 3)
    return body


@router.post(
    "/sequential",
    name="sequential",
    summary="Run a stack of layers in order, as nn.Sequential, on torch, the reference, or both",
    response_model=None,
    responses={200: {"model": SequentialResponse, "description": "The final output, and each layer's shapes, "
                     "parameters, buffers and (return_intermediates) output.",
                     "content": {wire.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/SequentialResponse",
                                                              "description": MSGPACK_NOTE}}}},
               **ERROR_RESPONSES, 413: {**ERROR_RESPONSES[413], "description": "A limit was exceeded (body bytes, a "
                                        "layer's output elements, the stack's parameter elements, the total work); "
                                        "`limit` names the setting."}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SequentialRequest"}, "examples": EXAMPLES},
        wire.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/SequentialRequest", "description": MSGPACK_NOTE}}}}},
)
async def sequential(request: Request) -> Response:
    """Runs `nn.Sequential(*layers)` on `input`. Tensors not given in a layer's `parameters` are initialized as
    `torch.manual_seed(seed)` followed by building the same nn.Sequential, so the stack can be rebuilt locally.
    With `compare`, the other backend runs the whole stack too and each layer's output is compared.
    A max-pool with `return_indices` passes its output on and reports its indices on its row.
    Limits (total parameters, every layer's output size, total work) are checked before computing."""
    settings, pool = app_settings(request), compute_pool(request)
    logged = access_fields(request)
    logged["kind"] = "sequential"
    exchange = Wire.negotiate(request)  # JSON or msgpack, both ways (app.api.transport)
    incoming = await exchange.receive(request, settings)

    def work() -> Response:
        try:
            options = SequentialOptions.model_validate(incoming.decode())
        except ValidationError as exc:
            raise validation_error(exc) from None
        logged.update(backend=options.backend, device=options.device, compare=options.compare)
        outcome = stacks.run_stack(options, settings)
        record_compute_times(outcome)
        return exchange.respond(present(outcome, exchange.tensor_encoding(options.encoding)))

    return await pool.run(work, disconnected=lambda: wait_for_disconnect(request))
