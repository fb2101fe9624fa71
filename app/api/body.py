"""Reading request bodies fast and safely: a byte cap while streaming, orjson, no NaN tokens."""

import re
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.api import json_arrays
from app.config import Settings
from app.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json", "")
# A JSON true/false that is an array element: NumPy would silently turn it into 1.0/0.0.
_BOOL_IN_ARRAY = re.compile(rb"[\[,]\s*(true|false)\s*[,\]]")


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
    if not body or body.isspace():  # not body.strip(): that copies the whole body
        raise BadRequest("request body is empty; send a JSON object", field="body")
    try:
        # Big tensor bodies: number arrays straight to NumPy (None: orjson reads it, as it would anyway).
        value = json_arrays.loads(body)
        if value is None:
            value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc} (JSON has no NaN or Infinity tokens; "
                         'write them as the strings "NaN", "Infinity", "-Infinity")', field="body") from None
    if (at := _boolean_in_array(body)) is not None:
        raise InvalidInput(f"a JSON boolean stands inside an array at byte {at + 1}; tensors hold "
                           "numbers and shapes hold integers", field="body")
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", field="body", actual=type(value).__name__)
    return value


def _boolean_in_array(body: bytes) -> int | None:
    """Offset of a true/false that is an array element, else None.

    Outside JSON strings a "t" or "f" can only start a true/false literal, so the scan is memchr
    calls (find) over the parts between strings plus a look at each literal's neighbours: a few ms
    for a 60 MB body of numbers or a 30 MB base64 string, where a regex over the whole body runs
    ~100 MB/s. After 1000 strings (a body of many keys) the rest gets the plain regex.
    """
    if len(body) < 16384 and b"true" not in body and b"false" not in body:
        return None  # the usual small body; on big ones these two searches alone would cost more
    start = 0
    for _ in range(1000):
        quote = body.find(b'"', start)
        end = len(body) if quote == -1 else quote
        for letter, length in ((b"t", 4), (b"f", 5)):
            at = body.find(letter, start, end)
            while at != -1:
                if _neighbour(body, at, -1) in (b"[", b",") and _neighbour(body, at + length - 1, 1) in (b",", b"]"):
                    return at
                at = body.find(letter, at + 1, end)
        if quote == -1:
            return None
        start = _string_end(body, quote) + 1
    match = _BOOL_IN_ARRAY.search(body, start)
    return match.start(1) if match else None


def _neighbour(body: bytes, at: int, step: int) -> bytes:
    """The first non-whitespace byte before (step -1) or after (step 1) `at`; b"" at either end."""
    span = 16
    while True:
        if step < 0:
            window = body[max(0, at - span):at].rstrip()
            if window or span >= at:
                return window[-1:]
        else:
            window = body[at + 1:at + 1 + span].lstrip()
            if window or at + 1 + span >= len(body):
                return window[:1]
        span *= 4


def _string_end(body: bytes, opening: int) -> int:
    """The offset of the quote closing the JSON string opened at `opening` (orjson has validated it)."""
    closing = body.find(b'"', opening + 1)
    while closing != -1 and _escaped(body, closing):
        closing = body.find(b'"', closing + 1)
    return len(body) if closing == -1 else closing


def _escaped(body: bytes, at: int) -> bool:
    """Whether the byte at `at` follows an odd run of backslashes."""
    span = 8
    while True:
        window = body[max(0, at - span):at]
        run = len(window) - len(window.rstrip(b"\\"))
        if run < len(window) or span >= at:
            return run % 2 == 1
        span *= 4


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    media_type="application/json")
