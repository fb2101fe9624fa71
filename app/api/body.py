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

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import BadRequest, ClientGone, InvalidInput, PayloadTooLarge, UnsupportedMediaType, error_response

JSON_TYPES = ("application/json", "")
ORJSON_MAX_DEPTH = 1024
"""orjson's own nesting limit (arrays and objects), fixed in the library."""
# A JSON true/false that is an array element: NumPy would silently turn it into 1.0/0.0.
_BOOL_IN_ARRAY = re.compile(rb"[\[,]\s*(?:true|false)\s*[,\]]")


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


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused with 413 as soon as it passes the limit (chunked bodies too)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
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
    if not body.strip():
        raise BadRequest("request body is empty; send a JSON object", field="body")
    try:
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
    # Cheap guard (memchr) before the scan: most bodies carry no boolean inside an array.
    if (b"true" in body or b"false" in body) and (match := _BOOL_IN_ARRAY.search(body)):
        raise InvalidInput(f"a JSON boolean stands inside an array at byte {match.start() + 1}; tensors hold "
                           "numbers and shapes hold integers", field="body")
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", field="body", actual=type(value).__name__)
    _refuse_duplicate_keys(body, value)
    return value


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


def _count_key_tokens(body: bytes) -> int:
    """Strings followed by a colon, in a valid JSON text. `bytes.find` jumps from quote to quote
    at memchr speed (numbers and base64 are never walked in Python): 8 ms for 60 MB of lists."""
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


def _escaped(body: bytes, quote: int) -> bool:
    """An odd run of backslashes before a quote escapes it."""
    k = quote - 1
    while body[k] == ord("\\"):
        k -= 1
    return (quote - 1 - k) % 2 == 1


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
