"""Reading request bodies fast and safely: a byte cap while streaming, orjson, no NaN tokens."""

import re
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.config import Settings
from app.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json", "")
# A JSON true/false that is an array element: NumPy would silently turn it into 1.0/0.0.
_BOOL_IN_ARRAY = re.compile(rb"[\[,]\s*(?:true|false)\s*[,\]]")


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused with 413 as soon as it passes the limit (chunked bodies too)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is over {limit} bytes (setting LAYERLAB_MAX_BODY_BYTES)",
        limit="max_body_bytes", value=size, expected=f"<= {limit}")


async def read_json(request: Request, settings: Settings) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not supported; send application/json",
            field="content-type", expected="application/json", actual=content_type)
    body = await read_body(request, settings)
    return parse_json(body)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("request body is empty; send a JSON object", field="body")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc} (JSON has no NaN or Infinity tokens; "
                         'write them as the strings "NaN", "Infinity", "-Infinity")', field="body") from None
    # Cheap guard (memchr) before the scan: most bodies carry no boolean inside an array.
    if (b"true" in body or b"false" in body) and (match := _BOOL_IN_ARRAY.search(body)):
        raise InvalidInput(f"a JSON boolean stands inside an array at byte {match.start() + 1}; tensors hold "
                           "numbers and shapes hold integers", field="body")
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", field="body", actual=type(value).__name__)
    return value


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    media_type="application/json")
