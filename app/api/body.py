"""Reading request bodies fast and safely: a byte cap while streaming, orjson, no NaN tokens.

Limits here (each a setting, each a 413 naming it):
- body bytes: `BodyLimitMiddleware` answers 413 from the Content-Length header before reading a
  byte, and counts bytes as they stream in (chunked bodies have no Content-Length), so no route,
  whatever it reads, ever holds more than `max_body_bytes`;
- nesting depth: orjson refuses bodies nested deeper than 1024; tensors are refused deeper than
  `max_json_depth` (app.tensors).
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import json_arrays
from app.config import Settings
from app.errors import BadRequest, ClientGone, InvalidInput, PayloadTooLarge, UnsupportedMediaType, error_response

JSON_TYPES = ("application/json", "")
ORJSON_MAX_DEPTH = 1024
"""orjson's own nesting limit (arrays and objects), fixed in the library."""
# A JSON true/false that is an array element: NumPy would silently turn it into 1.0/0.0.
_BOOL_IN_ARRAY = re.compile(rb"[\[,]\s*(true|false)\s*[,\]]")


class BodyLimitMiddleware:
    """413 for request bodies over `max_body_bytes`, for every route, before the body is read.

    A declared Content-Length over the limit is refused at once, without reading. Otherwise the
    bytes are counted as the app receives them (chunked bodies included): past the limit the app
    gets an error from `receive`, and whatever it answers is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await error_response(too_large(declared, self.limit))(scope, receive, send)
            return
        received = 0
        refused: PayloadTooLarge | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = too_large(received, self.limit)
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the 413 below replaces the app's own answer (a 400 from FastAPI's parser, say)
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refused is None or started:
                raise
        if refused is not None and not started:
            await error_response(refused)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is over {limit} bytes (setting LAYERLAB_MAX_BODY_BYTES)",
        field="body", limit="max_body_bytes", value=size, expected=f"<= {limit}")


PREALLOCATE_BYTES = 2**20
"""Bodies declaring at least this many bytes are read into one buffer of that size (`read_body_buffer`)."""


def _declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length, refused with 413 over the limit before a byte is read; None if absent."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return None
    if int(declared) > limit:
        raise too_large(int(declared), limit)
    return int(declared)


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused with 413 as soon as it passes the limit (chunked bodies too)."""
    limit = settings.max_body_bytes
    _declared_length(request, limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def read_body_buffer(request: Request, settings: Settings) -> memoryview:
    """The raw body as one writable buffer. A large body with a Content-Length (the binary
    transport's) is copied piece by piece into a buffer of that size as it arrives: no list of
    pieces and no join (one copy of the body less, and half the peak memory). Others: `read_body`'s.

    The buffer is `np.empty`, not `bytearray(n)`, which would zero it: its pages are touched only as
    bytes arrive, so a client that declares a large body and sends little costs the server little.
    """
    declared = _declared_length(request, settings.max_body_bytes)
    if declared is None or declared < PREALLOCATE_BYTES:
        return memoryview(await read_body(request, settings))
    buffer = memoryview(np.empty(declared, np.uint8))
    size = 0
    try:
        async for chunk in request.stream():
            end = size + len(chunk)
            if end > declared:  # HTTP servers frame the body by its Content-Length; other ASGI callers might not
                raise BadRequest(f"request body is longer than its Content-Length of {declared} bytes",
                                 field="content-length", expected=declared, actual=f"> {declared}")
            buffer[size:end] = chunk
            size = end
    except ClientDisconnect:
        raise ClientGone("the client disconnected before sending the whole body") from None
    return buffer[:size]


def check_json_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type {content_type[:100]!r} is not supported; send application/json",
            field="content-type", expected="application/json", actual=content_type[:100])


async def read_json(request: Request, settings: Settings) -> Any:
    check_json_content_type(request)
    return parse_json(await read_body(request, settings))


def parse_json(body: bytes) -> Any:
    if not body or body.isspace():  # not body.strip(): that copies the whole body
        raise BadRequest("request body is empty; send a JSON object", field="body")
    try:
        # Big tensor bodies: number arrays straight to NumPy (None: orjson reads it, as it would anyway).
        value = json_arrays.loads(body)
        if value is None:
            value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise PayloadTooLarge(
                f"request body nests arrays or objects more than {ORJSON_MAX_DEPTH} deep (the JSON parser's "
                "limit; tensors may nest at most LAYERLAB_MAX_JSON_DEPTH deep)",
                field="body", limit="max_json_depth", expected=f"<= {ORJSON_MAX_DEPTH}",
                actual=f"> {ORJSON_MAX_DEPTH}") from None
        raise BadRequest(f"request body is not valid JSON: {exc} (JSON has no NaN or Infinity tokens; "
                         'write them as the strings "NaN", "Infinity", "-Infinity")', field="body") from None
    if (at := _boolean_in_array(body)) is not None:
        raise InvalidInput(f"a JSON boolean stands inside an array at byte {at + 1}; tensors hold "
                           "numbers and shapes hold integers", field="body")
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", field="body", actual=type(value).__name__)
    _refuse_duplicate_keys(body, value)
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


def _refuse_duplicate_keys(body: bytes, value: Any) -> None:
    """orjson keeps the last of duplicate keys silently; a body that says two things is refused.

    Fast path: count the key tokens in the text and the keys in the parsed objects; equal counts
    mean no duplicates. Only a body whose counts differ is parsed again, by the stdlib, to find
    the key.
    """
    keys_in_text = _count_key_tokens(body)
    if _count_keys(value, keys_in_text) >= keys_in_text:
        return

    def reject(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"request body repeats the key {key[:100]!r} in one object; each key may appear "
                                 "once", field=key[:100], actual="duplicate key")
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=reject)
    except RecursionError:  # the stdlib parser recurses; orjson took up to 1024 levels
        raise PayloadTooLarge(
            "request body nests too deep to check its keys (tensors may nest at most LAYERLAB_MAX_JSON_DEPTH deep)",
            field="body", limit="max_json_depth") from None


_STRING_AND_COLON = re.compile(rb'"(?:[^"\\]|\\.)*"([ \t\r\n]*:)?')
"""A JSON string, and the colon after it when it is a key. Every string is matched whole, so the
search never starts inside one."""


def _count_key_tokens(body: bytes) -> int:
    """Strings followed by a colon, in a valid JSON text. A small body is one regex pass (~2 us for
    the notebook's Linear). On a big one `bytes.find` jumps from quote to quote at memchr speed
    (numbers and base64 are never walked in Python; a regex would step through every byte):
    8 ms for 60 MB of lists."""
    if len(body) < 16384:
        return sum(1 for colon in _STRING_AND_COLON.findall(body) if colon)
    count, pos, size, find = 0, 0, len(body), body.find
    while (start := find(b'"', pos)) != -1:
        end = find(b'"', start + 1)
        while end != -1 and _escaped(body, end):
            end = find(b'"', end + 1)
        if end == -1:
            break
        pos = end + 1
        while pos < size and body[pos] in b" \t\r\n":
            pos += 1
        if pos < size and body[pos] == ord(":"):
            count += 1
    return count


def _count_keys(value: Any, enough: int) -> int:
    """Keys in all objects of `value`, objects first, stopping at `enough`. Lists whose first
    element is a number are not walked (tensor rows): a dict hiding behind a number only makes
    the count low, which sends the body to the exact check."""
    count, objects, lists = 0, [value], []
    while objects or lists:
        if objects:
            obj = objects.pop()
            count += len(obj)
            if count >= enough:
                return count
            children: Iterator[Any] = iter(obj.values())
        else:
            children = iter(lists.pop())
        for child in children:
            if isinstance(child, dict):
                objects.append(child)
            elif isinstance(child, list) and child and isinstance(child[0], (dict, list)):
                lists.append(child)
    return count


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away. Only after the body has been read: it takes messages."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    media_type="application/json")
