"""POST /v1/layers/{kind} (one operation per kind, generated from the registry) and GET /v1/layers."""

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app import wire
from app.api.body import wait_for_disconnect
from app.api.raw_route import RawRoute, app_settings, compute_pool
from app.api.transport import Wire
from app.errors import UnknownKind, validation_error
from app.layers.base import LayerSpec
from app.layers.registry import LAYERS
from app.layers.service import LayerOutcome, estimated_size, run_layer
from app.observability import access_fields, record_compute
from app.schemas.requests import LayerRequestOptions, layer_request_model
from app.schemas.responses import ErrorBody, LayerKind, layer_response_model
from app.tensors import encode_tensor

router = APIRouter(prefix="/v1/layers", tags=["layers"])

def _error_example(body: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"example": body}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not valid JSON (or msgpack)."},
    404: {"model": ErrorBody, "description": "Unknown layer kind."},
    413: {"model": ErrorBody, "description": "A limit was exceeded (body bytes, tensor or parameter elements, work); "
          "`limit` names the setting.",
          "content": _error_example({
              "error": "PayloadTooLarge", "status": 413, "field": "config", "limit": "max_parameter_elements",
              "value": 100010000, "expected": "<= 33554432",
              "detail": "the layer would have 100010000 parameter elements; the limit is 33554432 "
                        "(setting LAYERLAB_MAX_PARAMETER_ELEMENTS)"})},
    415: {"model": ErrorBody, "description": "Unsupported content type."},
    422: {"model": ErrorBody, "description": "Invalid config, tensor or shape; `field` names the culprit.",
          "content": _error_example({
              "error": "ShapeMismatch", "status": 422, "field": "input", "expected": ["*", 4], "actual": [10, 5],
              "detail": "input has 5 features in its last dimension (shape [10, 5]), config.in_features is 4"})},
}

LIGHT_BODY_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop to tell light requests from heavy ones."""

REQUEST_MODELS = {kind: layer_request_model(kind, spec.title, spec.config_model) for kind, spec in LAYERS.items()}
"""Documented in OpenAPI (see app.main); bodies themselves are parsed by orjson, not FastAPI."""


def parse_request(body: Any) -> LayerRequestOptions:
    try:
        return LayerRequestOptions.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def present_extras(buffers: dict[str, Any], extras: dict[str, Any], encoding: str) -> dict[str, Any]:
    """`buffers` (BatchNorm after the pass), `indices` (max-pool) and `statistics`, where a layer has them."""
    body: dict[str, Any] = {}
    if buffers:
        body["buffers"] = {k: encode_tensor(v, encoding) for k, v in buffers.items()}
    if "indices" in extras:
        body["indices"] = encode_tensor(extras["indices"], encoding)
    statistics = {k: encode_tensor(v, encoding) for k, v in extras.items() if k != "indices"}
    if statistics:
        body["statistics"] = statistics
    return body


def present(outcome: LayerOutcome, encoding: str) -> dict[str, Any]:
    """The response body; tensors in the requested encoding."""
    spec, result = outcome.spec, outcome.result
    trainable = spec.parameter_shapes(outcome.config)
    body: dict[str, Any] = {
        "kind": spec.kind,
        "backend": outcome.backend,
        "device": outcome.device,
        "config": outcome.config.model_dump(),
        "input_shape": list(outcome.input_shape),
        "output_shape": list(outcome.output_shape),
        "output": encode_tensor(result.output, encoding),
        "parameters": {k: encode_tensor(outcome.state[k], encoding) for k in trainable},
        "parameter_count": sum(math.prod(s) for s in trainable.values()),
    }
    body.update(present_extras(result.buffers, result.extras, encoding))
    formula = spec.formulas(outcome.config, outcome.input_shape)
    if formula:
        body["formula"] = formula
    if outcome.comparison is not None:
        body["comparison"] = outcome.comparison
    body["elapsed_ms"] = round(outcome.elapsed_ms, 3)
    return body


def _layer_endpoint(spec: LayerSpec):
    async def compute(request: Request) -> Response:
        settings, pool = app_settings(request), compute_pool(request)
        logged = access_fields(request)
        logged["kind"] = spec.kind
        exchange = Wire.negotiate(request)
        incoming = await exchange.receive(request, settings)
        # A small body is decoded here (well under a millisecond) to size the request: light ones
        # get the light compute lane. A big body is decoded in the worker: waiting, it stays bytes
        # rather than several-times-larger Python lists, and decoding counts against the pool.
        options = parse_request(incoming.decode()) if incoming.size <= LIGHT_BODY_BYTES else None
        size = estimated_size(spec, options, settings) if options is not None else None
        light = size is not None and size <= settings.light_request_size

        def work() -> Response:
            parsed = options if options is not None else parse_request(incoming.decode())
            logged.update(backend=parsed.backend, device=parsed.device, compare=parsed.compare)
            outcome = run_layer(spec, parsed, settings)
            record_compute(outcome)
            return exchange.respond(present(outcome, exchange.tensor_encoding(parsed.encoding)))

        if size is not None and size <= settings.inline_request_size:
            return work()  # tiny (the notebook's Linear: ~100 us): no thread hand-off, no queue
        return await pool.run(work, disconnected=lambda: wait_for_disconnect(request), light=light)

    compute.__name__ = f"layers_{spec.kind}"
    compute.__doc__ = spec.description
    return compute


MSGPACK_NOTE = (
    "The same fields as application/json, msgpack-encoded; tensors are best sent as "
    "`{shape, dtype, bytes: <bin>}` (raw little-endian bytes). The response comes back as msgpack "
    "when `Accept` asks for it (by default, when the request was msgpack), its tensors as `bytes`."
)


def _openapi_body(spec: LayerSpec) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{spec.title}Request"}
    content: dict[str, Any] = {"schema": schema}
    if spec.examples:
        content["examples"] = spec.examples
    return {"requestBody": {"required": True, "content": {
        "application/json": content,
        wire.MEDIA_TYPE: {"schema": {**schema, "description": MSGPACK_NOTE}},
    }}}


def _openapi_responses(spec: LayerSpec) -> dict[int | str, dict[str, Any]]:
    model = layer_response_model(spec.title, spec.config_model)
    msgpack = {"schema": {"$ref": f"#/components/schemas/{model.__name__}", "description": MSGPACK_NOTE}}
    return {200: {"model": model, "description": "The layer's output, parameters and shapes.",
                  "content": {wire.MEDIA_TYPE: msgpack}}, **ERROR_RESPONSES}


for _spec in LAYERS.values():
    router.add_api_route(
        f"/{_spec.kind}",
        _layer_endpoint(_spec),
        methods=["POST"],
        name=f"layers-{_spec.kind}",
        summary=_spec.summary,
        description=_spec.description,
        response_model=None,
        responses=_openapi_responses(_spec),
        openapi_extra=_openapi_body(_spec),
        route_class_override=RawRoute,
    )


@router.get("", name="layers-list", summary="Supported layer kinds with their config schemas and defaults",
            response_model=list[LayerKind],
            description="Every layer kind this server computes: its `torch.nn` class, its route, the JSON schema "
            "of its config (PyTorch's constructor arguments) and the defaults filled in when an argument is left out.")
def list_layers() -> list[dict[str, Any]]:
    return [
        {
            "kind": spec.kind,
            "torch": f"torch.nn.{spec.torch_name}",
            "summary": spec.summary,
            "path": f"/v1/layers/{spec.kind}",
            "config_schema": spec.config_model.model_json_schema(),
            "defaults": {name: f.default for name, f in spec.config_model.model_fields.items() if not f.is_required()},
        }
        for spec in LAYERS.values()
    ]


@router.post("/{kind}", name="layers-unknown", include_in_schema=False)
async def unknown_kind(kind: str) -> Response:
    raise UnknownKind(f"unknown layer kind {kind[:100]!r}; supported: {sorted(LAYERS)}",
                      field="kind", expected=sorted(LAYERS), actual=kind[:100])
