"""Content negotiation for tensor routes: JSON or msgpack in (Content-Type), JSON or msgpack out (Accept).

An `Exchange` is the two formats of one request: how its body is read (`read`, then the codec's
`decode_body`) and how its response is written (`respond`). msgpack responses carry tensors as
raw bytes (`{"shape", "dtype", "bytes": <bin>}`) unless the request asked for `encoding: "none"`.
Errors are always the JSON envelope (app.api.errors).
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.body_limits import read_body, read_body_buffer
from app.codec import msgpack
from app.codec.bodies import Format, decode_body, dumps_json
from app.codec.tensors import Encoding
from app.config import Settings
from app.errors import UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
JSON_TYPES = (JSON_MEDIA_TYPE, "")


def _media_type(header: str) -> str:
    return header.split(";")[0].strip().lower()


def request_format(content_type: str) -> Format:
    media = _media_type(content_type)
    if media in JSON_TYPES or media.endswith("+json"):
        return "json"
    if media in msgpack.MEDIA_TYPES:
        return "msgpack"
    raise UnsupportedMediaType(
        f"content type {media[:100]!r} is not supported; send {JSON_MEDIA_TYPE} or {msgpack.MEDIA_TYPE}",
        field="content-type",
        expected=[JSON_MEDIA_TYPE, msgpack.MEDIA_TYPE],
        actual=media[:100],
    )


def response_format(accept: str | None, default: Format) -> Format:
    """The supported type the Accept header ranks highest; `default` (the request's) for none, */* or a tie."""
    best: dict[Format, float] = {}
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in msgpack.MEDIA_TYPES:
            best["msgpack"] = max(best.get("msgpack", 0.0), quality)
        elif media == JSON_MEDIA_TYPE or media.endswith("+json"):
            best["json"] = max(best.get("json", 0.0), quality)
    ranked = {fmt: q for fmt, q in best.items() if q > 0}
    if not ranked:
        return default
    top = max(ranked.values())
    return default if ranked.get(default) == top else max(ranked, key=ranked.__getitem__)


class Incoming:
    """A received body, decoded once (off the event loop when big); the raw bytes are dropped when decoded."""

    def __init__(self, body: bytes | memoryview, fmt: Format) -> None:
        self._body: bytes | memoryview | None = body
        self.format = fmt
        self.size = len(body)

    def decode(self) -> dict[str, Any]:
        body, self._body = self._body, None
        assert body is not None, "a body is decoded once"
        return decode_body(body, self.format)


class ChunkedResponse(Response):
    """A response sent as several buffers (memoryviews of arrays included) without joining them."""

    def __init__(self, chunks: list[bytes | memoryview], media_type: str, status_code: int = 200) -> None:
        self.chunks = chunks
        super().__init__(content=b"", status_code=status_code, media_type=media_type)
        self.headers["content-length"] = str(sum(memoryview(c).nbytes for c in chunks))

    def render(self, content: Any) -> bytes:
        return b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        last = len(self.chunks) - 1
        for i, chunk in enumerate(self.chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < last})
        if not self.chunks:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass(frozen=True)
class Exchange:
    """The formats of one exchange: how the request is read, how the response is written."""

    request: Format
    response: Format

    @classmethod
    def negotiate(cls, request: Request) -> "Exchange":
        content_type: bytes | None = None
        accept: bytes | None = None
        for name, value in request.scope["headers"]:  # one pass over the raw headers (names are lower case)
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"accept" and accept is None:
                accept = value
        return _exchange(content_type or b"", accept)

    async def read(self, request: Request, settings: Settings) -> Incoming:
        if self.request == "msgpack":  # one buffer, whose tensors are then read in place
            return Incoming(await read_body_buffer(request, settings), self.request)
        return Incoming(await read_body(request, settings), self.request)

    def tensor_encoding(self, requested: Encoding) -> Encoding:
        """msgpack responses carry tensors as raw bytes (or summaries for `encoding: none`)."""
        if self.response == "msgpack":
            return "none" if requested == "none" else "bytes"
        return requested

    def respond(self, content: Any, status_code: int = 200) -> Response:
        if self.response == "msgpack":
            return ChunkedResponse(msgpack.pack(content), msgpack.MEDIA_TYPE, status_code)
        return json_response(content, status_code)


@lru_cache(maxsize=256)
def _exchange(content_type: bytes, accept: bytes | None) -> Exchange:
    """Clients send the same few header pairs again and again: each is parsed once (an unsupported
    type raises, and is not kept)."""
    incoming = request_format(content_type.decode("latin-1"))
    return Exchange(incoming, response_format(None if accept is None else accept.decode("latin-1"), incoming))


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(dumps_json(content), status_code=status_code, media_type=JSON_MEDIA_TYPE)
