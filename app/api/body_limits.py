"""The read step: request bodies within `max_body_bytes`, a 413 naming the setting past it.

`BodyLimitMiddleware` answers 413 from the Content-Length header before reading a byte, and counts
bytes as they stream in (chunked bodies have no Content-Length), so no route, whatever it reads,
ever holds more than the limit. `read_body` and `read_body_buffer` are how the tensor routes read
theirs (app.api.endpoint); what the bytes mean is the codec's business (app.codec).
"""

import numpy as np
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.config import Settings
from app.errors import BadRequest, ClientGone, PayloadTooLarge


class BodyLimitMiddleware:
    """413 for request bodies over `max_body_bytes`, for every route, before the body is read.

    A declared Content-Length over the limit is refused at once, without reading. Otherwise the
    bytes are counted as the app receives them (chunked bodies included): past the limit the app
    gets an error from `receive`, and whatever it answers is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._limited(scope, receive, send)
        else:  # lifespan, websockets: no body to count
            await self.app(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await error_response(too_large(declared, self.limit), path=scope["path"])(scope, receive, send)
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
            await error_response(refused, path=scope["path"])(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is over {limit} bytes (setting LAYERLAB_MAX_BODY_BYTES)",
        field="body",
        limit="max_body_bytes",
        value=size,
        expected=f"<= {limit}",
    )


PREALLOCATE_BYTES = 2**20
"""Bodies declaring at least this many bytes are read into one buffer of that size (`read_body_buffer`)."""


def _declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length, refused with 413 over the limit before a byte is read; None if absent."""
    declared = _content_length(request.scope)  # the raw headers: no Headers object for one lookup
    if declared is not None and declared > limit:
        raise too_large(declared, limit)
    return declared


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused with 413 as soon as it passes the limit (chunked bodies too).

    The ASGI messages are read here, not through `request.stream()` (an async generator with its
    own checks: ~5 us of a small request's body): a small body is one message, taken as it is."""
    limit = settings.max_body_bytes
    _declared_length(request, limit)
    chunks: list[bytes | memoryview] = []
    size, more = 0, True
    while more:
        chunk, more = await _body_message(request.receive)
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    if len(chunks) == 1 and type(chunks[0]) is bytes:
        return chunks[0]
    return b"".join(chunks)  # bytes too for a body our server gave as a buffer (app.serve)


async def _body_message(receive: Receive) -> tuple[bytes | memoryview, bool]:
    """The next piece of the body and whether more follow; ClientGone if the client went away."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone("the client disconnected before sending the whole body")
    return message.get("body", b""), message.get("more_body", False)


async def read_body_buffer(request: Request, settings: Settings) -> memoryview:
    """The raw body as one writable buffer. A large body with a Content-Length (the binary
    transport's) arrives from our server (app.serve.HttpProtocol) as one message whose body is a
    writable memoryview of the whole of it, taken as it is; from other ASGI servers in pieces,
    copied one by one into a buffer of that size as they arrive: no list of pieces and no join
    (half the peak memory). Others: `read_body`'s.

    The buffer is `np.empty`, not `bytearray(n)`, which would zero it: its pages are touched only as
    bytes arrive, so a client that declares a large body and sends little costs the server little.
    """
    declared = _declared_length(request, settings.max_body_bytes)
    if declared is None or declared < PREALLOCATE_BYTES:
        return memoryview(await read_body(request, settings))
    buffer: memoryview | None = None
    size, more = 0, True
    while more:
        chunk, more = await _body_message(request.receive)
        end = size + len(chunk)
        if end > declared:  # HTTP servers frame the body by its Content-Length; other ASGI callers might not
            raise BadRequest(
                f"request body is longer than its Content-Length of {declared} bytes",
                field="content-length",
                expected=declared,
                actual=f"> {declared}",
            )
        if buffer is None and end == declared and _writable_bytes(chunk):
            return chunk  # type: ignore[return-value]  # the whole body, already in one buffer
        if end == size:
            continue
        if buffer is None:
            buffer = np.empty(declared, np.uint8).data
        buffer[size:end] = chunk
        size = end
    return buffer[:size] if buffer is not None else memoryview(b"")


def _writable_bytes(chunk: object) -> bool:
    return isinstance(chunk, memoryview) and not chunk.readonly and chunk.format == "B" and chunk.ndim == 1


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away. Only after the body has been read: it takes messages."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
