"""POST /v1/shapes: the shape arithmetic of a stack of layers, like torchinfo.summary, without tensors."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.endpoint import TensorRoute, serve
from app.api.present import present_shapes
from app.api.raw_route import RawRoute
from app.codec import msgpack
from app.layers.registry import LAYERS
from app.schemas.responses import ErrorBody
from app.schemas.stacks import ShapesOptions, ShapesResponse, StackLayerOptions, stack_request_model
from app.stacks.plan import ShapesPlan, plan_shapes

router = APIRouter(prefix="/v1", tags=["stacks"], route_class=RawRoute)  # reads its own body (app.api.raw_route)

REQUEST_MODELS = {
    "ShapesRequest": stack_request_model(
        "ShapesRequest",
        ShapesOptions,
        StackLayerOptions,
        {kind: (spec.title, spec.config_model) for kind, spec in LAYERS.items()},
    ),
}
"""Documented in OpenAPI (see app.main); bodies themselves are parsed by the codec, not FastAPI."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not JSON."},
    413: {
        "model": ErrorBody,
        "description": "A limit was exceeded (body bytes, a layer's output elements, the "
        "stack's parameter elements; for a run also the total work); `limit` names the setting.",
        "content": {
            "application/json": {
                "example": {
                    "error": "PayloadTooLarge",
                    "status": 413,
                    "field": "layers",
                    "limit": "max_parameter_elements",
                    "value": 10000100000,
                    "expected": "<= 33554432",
                    "detail": "the stack (parameters and buffers) would have 10000100000 parameter elements; the limit "
                    "is 33554432 (setting LAYERLAB_MAX_PARAMETER_ELEMENTS)",
                }
            }
        },
    },
    415: {"model": ErrorBody, "description": "Unsupported content type."},
    422: {
        "model": ErrorBody,
        "description": "A layer that does not fit: `field` names it (`layers[2]`, "
        "`layers[2].config.kernel_size`), `layer` its index, `detail` the formula or channel count.",
        "content": {
            "application/json": {
                "example": {
                    "error": "ShapeMismatch",
                    "status": 422,
                    "field": "layers[6]",
                    "layer": 6,
                    "kind": "conv2d",
                    "expected": "padded input height >= 7",
                    "actual": 5,
                    "detail": "layers[6] (Conv2d) on input shape [1, 16, 5, 5]: output height would be -1, less than 1: "
                    "the kernel spans 7 (dilation*(kernel_size-1) + 1) but the padded input height is 5: "
                    "H_out = floor((5 + 2*0 - 1*(7-1) - 1) / 1) + 1 = -1",
                }
            }
        },
    },
}

LENET = [
    {"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 6, "kernel_size": 5}},
    {"kind": "relu"},
    {"kind": "maxpool2d", "config": {"kernel_size": 2}},
    {"kind": "conv2d", "config": {"in_channels": 6, "out_channels": 16, "kernel_size": 5}},
    {"kind": "relu"},
    {"kind": "maxpool2d", "config": {"kernel_size": 2}},
    {"kind": "flatten"},
    {"kind": "linear", "config": {"in_features": 400, "out_features": 120}},
    {"kind": "relu"},
    {"kind": "linear", "config": {"in_features": 120, "out_features": 84}},
    {"kind": "relu"},
    {"kind": "linear", "config": {"in_features": 84, "out_features": 10}},
]

EXAMPLES = {
    "notebook": {
        "summary": "The notebook's Conv2d(3, 16, 3, stride=2) then MaxPool2d((3, 2)) on (100, 3, 120, 160)",
        "value": {
            "input_shape": [100, 3, 120, 160],
            "layers": [
                {"kind": "conv2d", "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}},
                {"kind": "maxpool2d", "config": {"kernel_size": [3, 2]}},
            ],
        },
    },
    "lenet": {
        "summary": "LeNet-5 on a (1, 1, 32, 32) image",
        "value": {"input_shape": [1, 1, 32, 32], "layers": LENET},
    },
    "mlp": {
        "summary": "A small multilayer perceptron on a batch of 10, float64",
        "value": {
            "input_shape": [10, 4],
            "dtype": "float64",
            "layers": [
                {"kind": "linear", "config": {"in_features": 4, "out_features": 8}},
                {"kind": "relu"},
                {"kind": "linear", "config": {"in_features": 8, "out_features": 1}},
            ],
        },
    },
}


def _no_run(plan: ShapesPlan) -> ShapesPlan:
    return plan


ROUTE: TensorRoute[ShapesOptions, ShapesPlan, ShapesPlan] = TensorRoute(
    "shapes", ShapesOptions, plan_shapes, _no_run, present_shapes, size=lambda plan: 0
)
"""Arithmetic only: the plan is the answer, and a small body's is answered on the event loop."""


@router.post(
    "/shapes",
    name="shapes",
    summary="Shapes, parameters, multiply-adds and formulas of a stack of layers, without tensors",
    response_model=None,
    responses={
        200: {
            "model": ShapesResponse,
            "description": "One row per layer, then the totals.",
            "content": {msgpack.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ShapesResponse"}}},
        },
        **ERROR_RESPONSES,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ShapesRequest"}, "examples": EXAMPLES},
                msgpack.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ShapesRequest"}},
            },
        }
    },
)
async def shapes(request: Request) -> Response:
    """The arithmetic of `nn.Sequential(*layers)` on an input of `input_shape`, as torchinfo.summary reports it:
    each layer's output shape, parameter shapes and count, multiply-adds, the output-size formulas with the
    numbers substituted, and the receptive field and effective stride (jump) of sliding-window stacks.
    Nothing is allocated; the same tensor and parameter limits as a run apply.
    A layer that does not fit the previous one's output is a 422 naming `layers[i]`."""
    return await serve(ROUTE, request)
