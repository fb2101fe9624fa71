"""POST /v1/layers/{kind} (one operation per kind, generated from the registry) and GET /v1/layers."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.endpoint import TensorRoute, serve
from app.api.present import present_layer
from app.api.raw_route import RawRoute
from app.codec import msgpack
from app.config import Settings
from app.errors import UnknownKind
from app.layers.base import LayerSpec
from app.layers.registry import LAYERS
from app.observability import record_compute
from app.schemas.requests import LayerRequestOptions, layer_request_model
from app.schemas.responses import ErrorBody, LayerKind, layer_response_model
from app.stacks.plan import Plan, plan_stack, stack_of_one
from app.stacks.run import run_plan

router = APIRouter(prefix="/v1/layers", tags=["layers"])


def _error_example(body: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"example": body}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not valid JSON (or msgpack)."},
    404: {"model": ErrorBody, "description": "Unknown layer kind."},
    413: {
        "model": ErrorBody,
        "description": "A limit was exceeded (body bytes, tensor or parameter elements, work); "
        "`limit` names the setting.",
        "content": _error_example(
            {
                "error": "PayloadTooLarge",
                "status": 413,
                "field": "config",
                "limit": "max_parameter_elements",
                "value": 100010000,
                "expected": "<= 33554432",
                "detail": "the layer would have 100010000 parameter elements; the limit is 33554432 "
                "(setting LAYERLAB_MAX_PARAMETER_ELEMENTS)",
            }
        ),
    },
    415: {"model": ErrorBody, "description": "Unsupported content type."},
    422: {
        "model": ErrorBody,
        "description": "Invalid config, tensor or shape; `field` names the culprit.",
        "content": _error_example(
            {
                "error": "ShapeMismatch",
                "status": 422,
                "field": "input",
                "expected": ["*", 4],
                "actual": [10, 5],
                "detail": "input has 5 features in its last dimension (shape [10, 5]), config.in_features is 4",
            }
        ),
    },
}

REQUEST_MODELS = {
    model.__name__: model
    for spec in LAYERS.values()
    for model in (
        layer_request_model(spec.title, spec.config_model),
        layer_request_model(spec.title, spec.config_model, msgpack=True),
    )
}
"""Documented in OpenAPI (see app.main): `Conv2dRequest` (JSON bodies), `Conv2dMsgpackRequest` (msgpack
bodies). Bodies themselves are parsed by the codec, not FastAPI."""


def layer_route(spec: LayerSpec) -> TensorRoute[LayerRequestOptions, Plan, Any]:
    def plan(options: LayerRequestOptions, settings: Settings) -> Plan:
        return plan_stack(stack_of_one(spec.kind, options), settings)

    return TensorRoute(
        spec.kind,
        LayerRequestOptions,
        plan,
        run_plan,
        present_layer,
        size=lambda planned: planned.size,
        record=record_compute,
    )


def _layer_endpoint(spec: LayerSpec):
    route = layer_route(spec)

    async def compute(request: Request) -> Response:
        return await serve(route, request)

    compute.__name__ = f"layers_{spec.kind}"
    compute.__doc__ = spec.description
    return compute


MSGPACK_NOTE = (
    "The same fields as application/json, msgpack-encoded; tensors are best sent as "
    "`{shape, dtype, bytes: <bin>}` (raw little-endian bytes). The response comes back as msgpack "
    "when `Accept` asks for it (by default, when the request was msgpack), its tensors as `bytes`."
)


def openapi_request_body(name: str, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tensor route's body: `{name}Request` as JSON, `{name}MsgpackRequest` as msgpack (raw-bytes tensors)."""
    content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{name}Request"}}
    if examples:
        content["examples"] = examples
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": content,
                msgpack.MEDIA_TYPE: {
                    "schema": {"$ref": f"#/components/schemas/{name}MsgpackRequest", "description": MSGPACK_NOTE}
                },
            },
        }
    }


def _openapi_responses(spec: LayerSpec) -> dict[int | str, dict[str, Any]]:
    model = layer_response_model(spec.title, spec.config_model)
    as_msgpack = {"schema": {"$ref": f"#/components/schemas/{model.__name__}", "description": MSGPACK_NOTE}}
    return {
        200: {
            "model": model,
            "description": "The layer's output, parameters and shapes.",
            "content": {msgpack.MEDIA_TYPE: as_msgpack},
        },
        **ERROR_RESPONSES,
    }


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
        openapi_extra=openapi_request_body(_spec.title, _spec.examples),
        route_class_override=RawRoute,
    )


@router.get(
    "",
    name="layers-list",
    summary="Supported layer kinds with their config schemas and defaults",
    response_model=list[LayerKind],
    description="Every layer kind this server computes: its `torch.nn` class, its route, the JSON schema "
    "of its config (PyTorch's constructor arguments) and the defaults filled in when an argument is left out.",
)
def list_layers() -> list[dict[str, Any]]:
    return [
        {
            "kind": spec.kind,
            "torch": f"torch.nn.{spec.torch_name}",
            "summary": spec.summary,
            "path": f"/v1/layers/{spec.kind}",
            "config_schema": self_contained(spec.config_model.model_json_schema()),
            "defaults": {name: f.default for name, f in spec.config_model.model_fields.items() if not f.is_required()},
        }
        for spec in LAYERS.values()
    ]


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` written in place (`kernel_size`'s `Size2d`, say): a config's
    schema reads field by field, with no references to follow."""
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return inline({**definitions[node["$ref"].rsplit("/", 1)[1]], **rest})
        return {key: inline(value) for key, value in node.items()}

    return inline(schema)


@router.post("/{kind}", name="layers-unknown", include_in_schema=False)
async def unknown_kind(kind: str) -> Response:
    raise UnknownKind(
        f"unknown layer kind {kind[:100]!r}; supported: {sorted(LAYERS)}",
        field="kind",
        expected=sorted(LAYERS),
        actual=kind[:100],
    )
