"""The app factory: `create_app(settings)`; `app` is what uvicorn serves (run it with `python -m app.serve`)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__, process_environment, tracing
from app.api.body_limits import BodyLimitMiddleware
from app.api.errors import install_error_handlers
from app.api.raw_route import TensorDispatch
from app.api.routes import layers, ops, sequential, shapes, v2
from app.api.routes.docs import install_docs
from app.api.routes.playground import install_playground
from app.api.security import document_protections, protect
from app.compute_pool import ComputePool
from app.config import Settings, SettingsError, exit_for, get_settings
from app.lifecycle import Drain
from app.observability import ObservabilityMiddleware, flat_routes
from app.shared_memory import SharedMemoryRegistry

DESCRIPTION = """
Compute neural-network layers on demand: PyTorch (`torch.nn`) or a hand-written NumPy reference
implementation, or both side by side. POST a layer config (PyTorch's own argument names and
defaults) and a tensor; get the output, its shape, and the layer's parameters.

**Try it here:** open an operation, press *Try it out*, pick a request from the *Examples* list
(the notebook's cells are there), then *Execute*. Tensors can be sent as nested JSON arrays, as
`{"data", "shape", "dtype"}`, as base64 of their raw bytes, or as `{"random": "normal", "shape", "seed"}`
for the server to draw with `torch.manual_seed(seed); torch.randn(*shape)`.

**From Python:** `from app.client import Client; Client("http://127.0.0.1:8000").linear(x, in_features=4, out_features=1)`
sends NumPy arrays (their raw bytes in `application/msgpack` bodies; `JsonCodec()` for JSON with
base64) and returns them; see the README's *Python SDK* section. Every error is one JSON envelope:
`error`, `status`, `detail` and the `field` at fault.

**Bodies:** every tensor route takes `application/json` and `application/msgpack` (its schema adds
the raw-bytes tensor form `{shape, dtype, bytes}`), and answers in the type `Accept` asks for.
**Limits** (413, with the setting named in `limit`) are checked after validation (422): see
`GET /v1/info` for the values in force.
"""

LICENSE = {"name": "MIT", "identifier": "MIT"}  # as pyproject.toml
SERVERS = [
    {
        "url": "/",
        "description": "The server that serves this document (locally, `python -m app.serve` "
        "listens on http://127.0.0.1:8000).",
    }
]

TAGS = [
    {
        "name": "layers",
        "description": "One `torch.nn` layer per operation: config, input, parameters in; "
        "output, shapes, parameters (and buffers, formulas, comparison) out.",
    },
    {"name": "operations", "description": "For operators and load balancers."},
    {
        "name": "open-inference-protocol-v2",
        "description": "KServe's and Triton's Open Inference Protocol: `tritonclient.http` and plain V2 JSON call "
        "layerlab, each layer kind a model; tensors as JSON or as binary data after the JSON header.",
    },
]


def operation_id(route: APIRoute) -> str:
    """Stable, readable operation ids (`layers-conv2d`) for generated clients."""
    return route.name


DOCUMENT: dict[str, Any] = {
    "title": "layerlab",
    "version": __version__,
    "description": DESCRIPTION,
    "generate_unique_id_function": operation_id,
    "openapi_tags": TAGS,
    "license_info": LICENSE,
    "servers": SERVERS,
    "docs_url": None,  # served from packaged assets by install_docs, not from a CDN
    "redoc_url": None,
}
"""FastAPI's options for the OpenAPI document and the docs pages."""

POOL_SETTINGS = {
    "workers": "compute_workers",
    "light_workers": "compute_light_workers",
    "queue_timeout_s": "compute_queue_timeout_s",
    "queue_size": "compute_queue_size",
    "timeout_s": "compute_timeout_s",
    "retry_after_s": "retry_after_s",
}
"""The compute pool's options (app.compute_pool) and the settings that give them."""


class LayerlabAPI(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HTTP straight to the middleware stack: FastAPI's own telemetry is off (app.tracing), and
        # its lifespan and root_path handling take the usual way.
        if scope["type"] == "http" and self.middleware_stack is not None and not self.root_path:
            scope["app"] = self
            await self.middleware_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        """Plain ASGI layers around one dispatch, outermost first: observability (around everything,
        so even an unhandled error's 500 is counted, logged and carries its request id), CORS, API
        keys, then the tensor routes straight to their endpoints (app.api.raw_route), and the rest
        through the body cap and Starlette's own stack (error pages, exception handlers, routing)."""
        settings = self.state.settings
        starlette_stack = BodyLimitMiddleware(super().build_middleware_stack(), max_body_bytes=settings.max_body_bytes)
        routes = flat_routes(self.router.routes)
        return ObservabilityMiddleware(
            protect(TensorDispatch(self, routes, other=starlette_stack), settings),
            access_log=settings.access_log,
            routes=routes,
            draining=lambda: self.state.drain.draining,
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Started by the server, after it installed its signal handlers (app.lifecycle wraps SIGTERM's).
    app.state.drain.install(asyncio.get_running_loop())
    yield
    app.state.shared_memory.close()  # unmap every registered region of this process


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if settings.tune_allocator:
        process_environment.tune_allocator()
    app = LayerlabAPI(**DOCUMENT, lifespan=lifespan, **tracing.fastapi_options())
    app.state.settings = settings
    app.state.drain = Drain(settings.drain_s)
    app.state.shared_memory = SharedMemoryRegistry.from_environment()
    tracing.configure(settings.tracing)
    app.state.compute = ComputePool(**{option: getattr(settings, name) for option, name in POOL_SETTINGS.items()})
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(layers.router)
    app.include_router(shapes.router)
    app.include_router(sequential.router)
    app.include_router(v2.router)
    install_docs(app)
    install_playground(app)
    _document_parsed_bodies(app)
    return app


def _document_parsed_bodies(app: FastAPI) -> None:
    """Bodies are parsed with orjson (not FastAPI), so their models are added to the schema here."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default_openapi()
        _, defs = models_json_schema(
            [
                (model, "validation")
                for model in (
                    *layers.REQUEST_MODELS.values(),
                    *shapes.REQUEST_MODELS.values(),
                    *sequential.REQUEST_MODELS.values(),
                )
            ],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        # pydantic's own schemas win over FastAPI's copies of the same models (shared with the
        # responses): FastAPI writes its copies with exclude_none, which drops `"default": null`
        # (MaxPool's stride, say) and turns integer bounds into floats.
        components.update(defs.get("$defs", {}))
        document_protections(schema, app.state.settings)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def app_from_environment() -> FastAPI:
    """The app from the LAYERLAB_* settings. uvicorn imports it (`uvicorn app.main:app`, and each
    worker of `python -m app.serve`): a bad variable ends the process with its one line and status 2,
    not an import traceback."""
    try:
        return create_app()
    except SettingsError as exc:
        exit_for(exc)


app = app_from_environment()
