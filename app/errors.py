"""Error classes, each carrying its HTTP status, and the one error envelope every error uses.

    LayerlabError (400)
    ├── BadRequest (400)          body is not JSON, wrong content type
    ├── Unauthorized (401)        API keys are configured and none (or a wrong one) was sent
    ├── UnknownKind (404)         no such layer kind
    ├── PayloadTooLarge (413)     a configured limit (body bytes, elements, parameters, work, depth)
    ├── UnsupportedMediaType (415)
    ├── InvalidInput (422)        a value the layer cannot take
    │   └── ShapeMismatch (422)   a tensor of the wrong shape or rank
    ├── ClientGone (499)          the client left before its answer was ready (nobody reads this one)
    ├── Overloaded (503)          every compute worker stayed busy for the whole queue wait; Retry-After
    └── ComputeTimeout (504)      the computation ran past the per-request time limit

No web framework here: the codec raises these too (app.api.errors turns them into responses).
"""

from http import HTTPStatus
from typing import Any, Protocol


class LayerlabError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None
    """Extra response headers (WWW-Authenticate, Retry-After)."""

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        expected: Any = None,
        actual: Any = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail, self.field, self.expected, self.actual, self.extra = detail, field, expected, actual, extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": type(self).__name__, "status": self.status_code, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        if self.expected is not None:
            body["expected"] = self.expected
        if self.actual is not None:
            body["actual"] = self.actual
        body.update(self.extra)
        return body


class HTTPError(LayerlabError):
    """A routing error from Starlette, named after its status (NotFound, MethodNotAllowed)."""

    def __init__(self, detail: str, *, status_code: int) -> None:
        super().__init__(detail)
        self.status_code = status_code

    def body(self) -> dict[str, Any]:
        return {
            **super().body(),
            "error": HTTPStatus(self.status_code).phrase.title().replace(" ", "").replace("-", ""),
        }


class BadRequest(LayerlabError):
    status_code = 400


class Unauthorized(LayerlabError):
    """401; `WWW-Authenticate` tells the client which scheme to use (RFC 6750)."""

    status_code = 401

    def __init__(self, detail: str, *, invalid: bool = False, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        challenge = 'Bearer realm="layerlab"'
        self.headers = {"WWW-Authenticate": challenge + (', error="invalid_token"' if invalid else "")}


class UnknownKind(LayerlabError):
    status_code = 404


class PayloadTooLarge(LayerlabError):
    """A configured limit was exceeded; `limit` names the setting, `value` what was asked."""

    status_code = 413


class UnsupportedMediaType(LayerlabError):
    status_code = 415


class InvalidInput(LayerlabError):
    status_code = 422


class ShapeMismatch(InvalidInput):
    """A tensor of the wrong shape or rank (a 422, as every InvalidInput)."""


class ClientGone(LayerlabError):
    """The client disconnected; the status (nginx's 499) only shows in logs and metrics."""

    status_code = 499


class Overloaded(LayerlabError):
    """503 with `Retry-After`: the request waited its whole queue time for a compute worker."""

    status_code = 503

    def __init__(self, detail: str, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **kwargs)
        self.headers = {"Retry-After": str(retry_after)}


class ComputeTimeout(LayerlabError):
    """504: the computation passed the per-request time limit (its worker finishes it, unseen)."""

    status_code = 504


def loc_to_field(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """('config', 'kernel_size', 0) -> 'config.kernel_size[0]'."""
    field = prefix
    for part in loc:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field = f"{field}.{part}" if field else str(part)
    return field


class ValidationErrors(Protocol):
    """pydantic's ValidationError, or FastAPI's RequestValidationError."""

    def errors(self) -> Any: ...


def validation_error(exc: ValidationErrors, prefix: str = "") -> InvalidInput:
    """One 422 from pydantic's list of errors: the first names the field, all are listed."""
    errors = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        # pydantic reports a union's failing branch in the location; it is noise to a user.
        loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        item = {"field": loc_to_field(loc, prefix), "message": err.get("msg", "invalid value"), "type": err.get("type")}
        if "input" in err and _small(err["input"]):
            item["actual"] = err["input"]
        errors.append(item)
    first = errors[0] if errors else {"field": prefix or None, "message": "invalid value"}
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors) or "invalid request"
    return InvalidInput(detail, field=first["field"] or None, errors=errors)


def _small(value: Any) -> bool:
    """Echo offending values only when they are small scalars: never a whole tensor."""
    return isinstance(value, (int, float, str, bool)) and len(str(value)) <= 200
