"""The one error envelope as an HTTP response, and the handlers that give every error that shape."""

import json
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import HTTPError, LayerlabError, validation_error

PROTOCOL_V2_PREFIX = "/v2"


def speaks_v2(path: str) -> bool:
    """Paths of the Open Inference Protocol (app.api.routes.v2), whose errors are `{"error": message}`."""
    return path == PROTOCOL_V2_PREFIX or path.startswith(PROTOCOL_V2_PREFIX + "/")


def v2_error(exc: LayerlabError) -> tuple[int, dict[str, Any]]:
    """The protocol's error: `{"error": message}`, 400 for what /v1 answers 422 (the protocol's
    status for a request it cannot run); 404, 413, 415, 401, 503 and 504 keep their meaning."""
    return (400 if exc.status_code == 422 else exc.status_code), {"error": exc.detail}


def error_response(exc: LayerlabError, headers: dict[str, str] | None = None, path: str = "") -> Response:
    """The error envelope; under /v2, the protocol's `{"error": message}` (`path`: the request's)."""
    status, body = v2_error(exc) if speaks_v2(path) else (exc.status_code, exc.body())
    try:
        content = orjson.dumps(body, default=str)
    except TypeError:  # an integer past 64 bits (a 413's `value`, say): the stdlib writes any int
        content = json.dumps(body, default=str).encode()
    return Response(
        content,
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LayerlabError)
    async def _layerlab(request: Request, exc: LayerlabError) -> Response:
        return error_response(exc, headers=exc.headers, path=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc), path=request.url.path)

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        return error_response(validation_error(exc), path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing errors (404 no such path, 405 wrong method) in the same envelope.
        err = HTTPError(f"{exc.detail}: {request.method} {request.url.path[:200]}", status_code=exc.status_code)
        return error_response(err, headers=getattr(exc, "headers", None), path=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A bug, not a user error: say so without a traceback, and keep serving.
        err = LayerlabError(f"internal error: {type(exc).__name__}")
        err.status_code = 500
        return error_response(err, path=request.url.path)
