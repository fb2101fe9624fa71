"""POST /v1/sequential: run a stack of layers in order, as nn.Sequential, on either backend or both."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.endpoint import TensorRoute, serve
from app.api.present import present_sequential
from app.api.raw_route import RawRoute
from app.api.routes.layers import MSGPACK_NOTE, openapi_request_body
from app.api.routes.shapes import ERROR_RESPONSES
from app.codec import msgpack
from app.config import Settings
from app.layers.registry import LAYERS
from app.observability import record_compute
from app.schemas.stacks import SequentialLayerOptions, SequentialOptions, SequentialResponse, stack_request_model
from app.stacks.plan import LayerRequest, Plan, StackRequest, plan_stack, request_options
from app.stacks.run import StackOutcome, run_plan

router = APIRouter(prefix="/v1", tags=["stacks"], route_class=RawRoute)  # reads its own body (app.api.raw_route)

REQUEST_MODELS = {
    name: stack_request_model(
        name,
        SequentialOptions,
        SequentialLayerOptions,
        {kind: (spec.title, spec.config_model) for kind, spec in LAYERS.items()},
        msgpack=for_msgpack,
    )
    for name, for_msgpack in (("SequentialRequest", False), ("SequentialMsgpackRequest", True))
}
"""Documented in OpenAPI (see app.main); bodies themselves are parsed by the codec, not FastAPI."""

EXAMPLES = {
    "mlp": {
        "summary": "Linear(4, 8), ReLU, Linear(8, 1) on torch.randn(10, 4), seed 0, compared with the reference",
        "value": {
            "layers": [
                {"kind": "linear", "config": {"in_features": 4, "out_features": 8}},
                {"kind": "relu"},
                {"kind": "linear", "config": {"in_features": 8, "out_features": 1}},
            ],
            "input": {"random": "normal", "shape": [10, 4], "seed": 0},
            "seed": 0,
            "compare": True,
        },
    },
    "small_cnn": {
        "summary": "Conv2d, ReLU, MaxPool2d, BatchNorm2d, Flatten, Linear on a (2, 1, 8, 8) batch, every layer's output",
        "value": {
            "layers": [
                {"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": 3}},
                {"kind": "relu"},
                {"kind": "maxpool2d", "config": {"kernel_size": 2}},
                {"kind": "batchnorm2d", "config": {"num_features": 2}},
                {"kind": "flatten"},
                {"kind": "linear", "config": {"in_features": 18, "out_features": 3}},
            ],
            "input": {"random": "normal", "shape": [2, 1, 8, 8], "seed": 1},
            "seed": 0,
            "return_intermediates": True,
            "compare": True,
        },
    },
    "given_parameters": {
        "summary": "The notebook's Linear(4, 1) with its weight and bias, then ReLU",
        "value": {
            "layers": [
                {
                    "kind": "linear",
                    "config": {"in_features": 4, "out_features": 1},
                    "parameters": {"weight": [[-0.2009, -0.0747, -0.2266, 0.2618]], "bias": [-0.4708]},
                },
                {"kind": "relu"},
            ],
            "input": [[0.3102, 0.1271, -0.0823, 1.0858], [-1.1686, 1.6650, 1.3797, -0.9915]],
        },
    },
}


def plan_sequential(options: SequentialOptions, settings: Settings) -> Plan:
    layers = [LayerRequest(layer.kind, layer.config, layer.parameters) for layer in options.layers]
    return plan_stack(
        StackRequest(
            layers,
            options.input,
            return_intermediates=options.return_intermediates,
            **request_options(options),
        ),
        settings,
    )


ROUTE: TensorRoute[SequentialOptions, Plan, StackOutcome] = TensorRoute(
    "sequential",
    SequentialOptions,
    plan_sequential,
    run_plan,
    present_sequential,
    size=lambda plan: plan.size,
    record=record_compute,
)


@router.post(
    "/sequential",
    name="sequential",
    summary="Run a stack of layers in order, as nn.Sequential, on torch, the reference, or both",
    response_model=None,
    responses={
        200: {
            "model": SequentialResponse,
            "description": "The final output, and each layer's shapes, "
            "parameters, buffers and (return_intermediates) output.",
            "content": {
                msgpack.MEDIA_TYPE: {
                    "schema": {"$ref": "#/components/schemas/SequentialResponse", "description": MSGPACK_NOTE}
                }
            },
        },
        **ERROR_RESPONSES,
        413: {
            **ERROR_RESPONSES[413],
            "description": "A limit was exceeded (body bytes, a "
            "layer's output elements, the stack's parameter elements, the total work); "
            "`limit` names the setting.",
        },
    },
    openapi_extra=openapi_request_body("Sequential", EXAMPLES),
)
async def sequential(request: Request) -> Response:
    """Runs `nn.Sequential(*layers)` on `input`. Tensors not given in a layer's `parameters` are initialized as
    `torch.manual_seed(seed)` followed by building the same nn.Sequential, so the stack can be rebuilt locally.
    With `compare`, the other backend runs the whole stack too and each layer's output is compared.
    A max-pool with `return_indices` passes its output on and reports its indices on its row.
    Limits (total parameters, every layer's output size, total work) are checked before computing."""
    return await serve(ROUTE, request)
