"""The one error envelope as an HTTP response, and the handlers that give every error that shape."""

import json

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import HTTPError, LayerlabError, validation_error


def error_response(exc: LayerlabError, headers: dict[str, str] | None = None) -> Response:
    body = exc.body()
    try:
        content = orjson.dumps(body, default=str)
    except TypeError:  # an integer past 64 bits (a 413's `value`, say): the stdlib writes any int
        content = json.dumps(body, default=str).encode()
    return Response(
        content,
        status_code=exc.status_code,
        media_type="application/json",
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LayerlabError)
    async def _layerlab(_: Request, exc: LayerlabError) -> Response:
        return error_response(exc, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing errors (404 no such path, 405 wrong method) in the same envelope.
        err = HTTPError(f"{exc.detail}: {request.method} {request.url.path[:200]}", status_code=exc.status_code)
        return error_response(err, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        # A bug, not a user error: say so without a traceback, and keep serving.
        err = LayerlabError(f"internal error: {type(exc).__name__}")
        err.status_code = 500
        return error_response(err)
