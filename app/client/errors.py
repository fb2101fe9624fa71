"""Errors the SDK raises. Every one carries `status`, `field`, `message` and `response`.

    LayerlabError                   base class: catch this to catch everything below
    ├── APIConnectionError          no response at all: refused, reset, DNS (retried)
    │   └── APITimeoutError         no response in time (retried)
    └── APIStatusError              the server answered with an error status
        ├── BadRequestError         400 not JSON, 404 unknown kind or route, 415 content type, other 4xx
        │   └── AuthenticationError 401/403 no or wrong API key (see `api_key`)
        ├── PayloadTooLargeError    413 a limit: body bytes, tensor or parameter elements, work; `.limit`
        ├── ValidationError         422 a config, tensor or shape the layer cannot take; `.field`
        └── ServerError             5xx (retried)

The server's error envelope (`{"error", "status", "detail", "field", "expected", "actual", ...}`)
is kept whole in `.body`; its `detail` becomes `.message`.
"""

from typing import Any

import httpx
import orjson


class LayerlabError(Exception):
    """Base class of every error this SDK raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        response: httpx.Response | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.field, self.response, self.body = message, status, field, response, body or {}

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.message}{where}" if self.status is None else f"{self.status}: {self.message}{where}"


class APIConnectionError(LayerlabError):
    """The request got no response (after the retries)."""


class APITimeoutError(APIConnectionError):
    """The request timed out (after the retries)."""


class APIStatusError(LayerlabError):
    """The server answered with a 4xx or 5xx; the envelope's fields are attributes too."""

    status: int

    @property
    def error(self) -> str | None:
        """The server's error class: `ShapeMismatch`, `InvalidInput`, `PayloadTooLarge`, ..."""
        return self.body.get("error")

    @property
    def expected(self) -> Any:
        return self.body.get("expected")

    @property
    def actual(self) -> Any:
        return self.body.get("actual")

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every validation error (422), each with `field` and `message`."""
        return self.body.get("errors") or []


class BadRequestError(APIStatusError):
    """400, 404, 415 and any other 4xx that has no class of its own."""


class AuthenticationError(BadRequestError):
    """401/403: the server wants an API key (`Client(api_key=...)` or $LAYERLAB_API_KEY) or refused this one."""


class PayloadTooLargeError(APIStatusError):
    """413: a configured limit was exceeded."""

    @property
    def limit(self) -> str | None:
        """The setting that was exceeded: `max_body_bytes`, `max_tensor_elements`, ..."""
        return self.body.get("limit")

    @property
    def value(self) -> int | None:
        return self.body.get("value")


class ValidationError(APIStatusError):
    """422: a value the layer cannot take; `.field` names it (`config.in_features`, `input`)."""


class ServerError(APIStatusError):
    """5xx: the server failed; retried before it is raised."""


def status_error(response: httpx.Response) -> APIStatusError:
    """The typed error for an error response, from the server's envelope where there is one."""
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):  # not the service's envelope: a proxy's page, say
        body = {"detail": response.text[:500] or response.reason_phrase}
    # /v1's envelope says it in `detail`; the Open Inference Protocol's (/v2) in `error`.
    message = str(body.get("detail") or body.get("error") or response.reason_phrase or f"HTTP {status}")
    return error_class(status)(message, status=status, field=body.get("field"), response=response, body=body)


def error_class(status: int) -> type[APIStatusError]:
    if status in (401, 403):
        return AuthenticationError
    if status == 413:
        return PayloadTooLargeError
    if status == 422:
        return ValidationError
    if status >= 500:
        return ServerError
    return BadRequestError
