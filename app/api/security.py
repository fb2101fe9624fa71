"""Access control: optional API keys, CORS; and the OpenAPI entries for what the hardening layers answer.

API keys (LAYERLAB_API_KEY, several for rotation): when any is set, every path but the exempt
ones (health, readiness, docs, the playground and their assets; LAYERLAB_AUTH_EXEMPT_PATHS) needs `Authorization: Bearer <key>`
or `X-API-Key: <key>`, else a 401 in the error envelope with `WWW-Authenticate`. Keys are
compared in constant time (hmac.compare_digest on SHA-256 digests, so not even the length of a
key leaks), every configured key is tried on every request, and no key is ever logged or echoed.

CORS (LAYERLAB_CORS_ORIGINS) is closed unless origins are configured; preflight requests are
answered by the CORS layer, outside the key check, since browsers send them without credentials.
"""

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response, speaks_v2
from app.config import Settings
from app.errors import Unauthorized
from app.schemas.responses import ErrorBody

BEARER_SCHEME = "BearerAuth"
HEADER_SCHEME = "ApiKeyAuth"


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class APIKeyMiddleware:
    """401 unless the request carries one of the configured keys (exempt paths pass)."""

    def __init__(self, app: ASGIApp, keys: list[str], exempt_paths: list[str]) -> None:
        self.app = app
        self.digests = [_digest(key) for key in keys]  # the keys themselves are not kept here
        self.is_exempt = exemption(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope)
        if presented is None:
            error = Unauthorized(
                "this route needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                field="authorization",
            )
        elif not self.accepts(presented):
            error = Unauthorized("the API key sent is not valid", field="authorization", invalid=True)
        else:
            await self.app(scope, receive, send)
            return
        await error_response(error, headers=error.headers, path=scope["path"])(scope, receive, send)

    def accepts(self, presented: bytes) -> bool:
        digest = _digest(presented)
        # Every key is compared (no early exit), each in constant time.
        matches = [hmac.compare_digest(digest, known) for known in self.digests]
        return any(matches)


def exemption(paths: list[str]) -> Callable[[str], bool]:
    """Exact paths, and prefixes written with a final `*` (`/static/docs/*`)."""
    exact = frozenset(p for p in paths if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))
    return lambda path: path in exact or path.startswith(prefixes)


def _presented_key(scope: Scope) -> bytes | None:
    """The key from `Authorization: Bearer <key>` or, failing that, `X-API-Key: <key>`."""
    headers = dict(scope.get("headers", ()))
    authorization = headers.get(b"authorization", b"")
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() == b"bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get(b"x-api-key", b"").strip()
    return api_key or None


def protect(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app` behind the key check, behind CORS (preflight requests carry no credentials)."""
    keys = [key.get_secret_value() for key in settings.api_key if key.get_secret_value()]
    if keys:
        app = APIKeyMiddleware(app, keys=keys, exempt_paths=settings.auth_exempt_paths)
    if settings.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "traceparent"],
            expose_headers=["Retry-After", "WWW-Authenticate", "X-Request-ID", "traceparent"],
        )
    return app


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_V2_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}}}
PROTECTION_RESPONSES: dict[str, dict[str, Any]] = {
    "401": {
        "description": "The server has API keys (LAYERLAB_API_KEY) and none, or a wrong one, was sent.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": _ERROR,
    },
    "413": {
        "description": "A limit was exceeded (body bytes, tensor, output or parameter elements, work, "
        "nesting depth); `limit` names the setting.",
        "content": _ERROR,
    },
}
COMPUTE_RESPONSES: dict[str, dict[str, Any]] = {
    "503": {
        "description": "Every compute worker stayed busy for the queue wait, or the queue is full; "
        "retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": _ERROR,
    },
    "504": {
        "description": "The computation passed the per-request time limit (LAYERLAB_COMPUTE_TIMEOUT_S).",
        "content": _ERROR,
    },
}


def document_protections(schema: dict[str, Any], settings: Settings) -> None:
    """Adds to the OpenAPI schema the answers any operation may give (413; 401 unless exempt;
    503 and 504 for /v1 POSTs and /v2 inference, which compute) and each operation's security requirement. A server
    with keys documents the two ways to send one and requires a key (either way) on the routes that
    need one; the exempt routes, and every route of a server without keys, say `security: []` (no
    padlock in Swagger UI). The 401 stays documented either way: it tells a reader the keys exist."""
    components = schema.setdefault("components", {})
    keys_required = any(key.get_secret_value() for key in settings.api_key)
    if keys_required:  # a server without keys has no schemes to offer (and lint tools flag unused ones)
        components.setdefault("securitySchemes", {}).update(
            {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <key> (a key of LAYERLAB_API_KEY).",
                },
                HEADER_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "X-API-Key: <key> (a key of LAYERLAB_API_KEY).",
                },
            }
        )
    components.setdefault("schemas", {}).setdefault(
        "ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    is_exempt = exemption(settings.auth_exempt_paths)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            extra = dict(PROTECTION_RESPONSES)
            if is_exempt(path):
                extra.pop("401")
            needs_key = keys_required and not is_exempt(path)
            operation.setdefault("security", [{BEARER_SCHEME: []}, {HEADER_SCHEME: []}] if needs_key else [])
            if method == "post" and (path.startswith("/v1") or path.endswith("/infer")):
                extra.update(COMPUTE_RESPONSES)
            if speaks_v2(path):  # the protocol's error body, {"error": message}
                extra = {
                    status: {
                        **response,
                        "content": _V2_ERROR,
                        "description": response["description"].replace("`limit` names", "the message names"),
                    }
                    for status, response in extra.items()
                }
            responses = operation.setdefault("responses", {})
            for status, response in extra.items():
                responses.setdefault(status, response)
