"""The app factory: `create_app(settings)`; `app` is what uvicorn serves."""

from typing import Any

import torch
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from app import __version__
from app.api.body import BodyLimitMiddleware
from app.api.routes import health, layers
from app.api.security import document_protections, install_security
from app.compute import ComputePool
from app.config import Settings, get_settings
from app.errors import install_error_handlers

DESCRIPTION = """
Compute neural-network layers on demand: PyTorch (`torch.nn`) or a hand-written NumPy reference
implementation, or both side by side. POST a layer config (PyTorch's own argument names and
defaults) and a tensor; get the output, its shape, and the layer's parameters.
"""


def operation_id(route: APIRoute) -> str:
    """Stable, readable operation ids (`layers-conv2d`) for generated clients."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    app = FastAPI(
        title="layerlab",
        version=__version__,
        description=DESCRIPTION,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.compute = ComputePool(
        settings.compute_workers, light_workers=settings.compute_light_workers,
        queue_timeout_s=settings.compute_queue_timeout_s,
        queue_size=settings.compute_queue_size, timeout_s=settings.compute_timeout_s,
        retry_after_s=settings.retry_after_s)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(layers.router)
    # Outermost last: CORS, then API keys, then the body cap (app.api.security, app.api.body).
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    install_security(app, settings)
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
            [(model, "validation") for model in layers.REQUEST_MODELS.values()],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        document_protections(schema, app.state.settings)
        return schema

    app.openapi = openapi


app = create_app()
