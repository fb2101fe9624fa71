"""A lean HTTP/1.1 transport for `Client`: large bodies move through the socket without extra copies.

httpx's default transport (httpcore + h11) moves a 30 MB response through ~460 reads of 64 KB, a
growing receive buffer and a final join, and re-slices a large request body after every partial
send: measured here, ~80 ms for 23 MB up and 30 MB down against ~30 ms for the same bytes with
plain sockets. This transport sends the body's chunks as they are (memoryviews of arrays
included) and reads a response with a Content-Length straight into one preallocated buffer.

Plain `http://` only, one idle keep-alive connection kept per host; `https://` and anything else
go to httpx's own transport. Errors are httpx's (ConnectError, ReadTimeout, ...), so the
client's retries work unchanged.
"""

import socket
from typing import Any

import httpx
import numpy as np

_HEADER_LIMIT = 64 * 1024
_RECV = 4 * 2**20


class ResponseBuffer(httpx.SyncByteStream):
    """A body already read into one writable buffer. httpx's `read()` copies it into bytes; the
    SDK's Client takes the buffer itself (`read_body`), so that arrays decoded from it need no copy.

    httpx binds a response and its stream in a reference cycle (BoundSyncStream), which lives on
    until the cyclic GC runs; `take` lets go of the buffer, so that it is freed with the last array
    that views it, not with the cycle. Otherwise every 30 MB response would land in fresh memory
    (measured: ~7,300 page faults, +10-20 ms per response).
    """

    def __init__(self, buffer: bytearray | memoryview) -> None:
        self.buffer: bytearray | memoryview | None = buffer

    def take(self) -> bytearray | memoryview:
        buffer, self.buffer = self.buffer, None
        assert buffer is not None, "a response buffer is taken once"
        return buffer

    def __iter__(self):
        yield bytes(self.buffer or b"")


BUFFER = "layerlab.buffer"
"""The response extension that carries the ResponseBuffer (httpx wraps the stream itself)."""


def read_body(response: httpx.Response) -> bytes | bytearray | memoryview:
    """A streamed response's body: this transport's buffer as it is for a success, else read."""
    stream = response.extensions.get(BUFFER)
    if response.is_success and stream is not None:
        return stream.take()
    return response.read()


class _Closed(Exception):
    """The server closed a reused keep-alive connection before answering: send again on a fresh one."""


class FastHTTPTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self._fallback = httpx.HTTPTransport()
        self._idle: dict[tuple[str, int], socket.socket] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            return self._fallback.handle_request(request)
        address = (request.url.host, request.url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        reused = self._idle.pop(address, None)
        if reused is not None:
            try:
                return self._exchange(reused, address, request, timeouts, reused=True)
            except _Closed:
                pass
        sock = self._connect(address, request, timeouts)
        try:
            return self._exchange(sock, address, request, timeouts, reused=False)
        except _Closed:
            raise httpx.RemoteProtocolError("server closed the connection without answering", request=request) from None

    def close(self) -> None:
        for sock in self._idle.values():
            sock.close()
        self._idle.clear()
        self._fallback.close()

    # -- one exchange ----------------------------------------------------------------------------

    def _connect(self, address: tuple[str, int], request: httpx.Request, timeouts: dict[str, Any]) -> socket.socket:
        try:
            sock = socket.create_connection(address, timeout=timeouts.get("connect"))
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _exchange(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        request: httpx.Request,
        timeouts: dict[str, Any],
        reused: bool,
    ) -> httpx.Response:
        try:
            sock.settimeout(timeouts.get("write"))
            self._send(sock, request)
            sock.settimeout(timeouts.get("read"))
            status, headers, body, keep = self._receive(sock, request, reused)
        except _Closed:
            sock.close()
            raise
        except TimeoutError as exc:
            sock.close()
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except OSError as exc:
            sock.close()
            if reused:
                raise _Closed from exc
            raise httpx.ReadError(str(exc), request=request) from exc
        except BaseException:
            sock.close()
            raise
        if keep and address not in self._idle:
            self._idle[address] = sock
        else:
            sock.close()
        stream = ResponseBuffer(body)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            request=request,
            extensions={"http_version": b"HTTP/1.1", BUFFER: stream},
        )

    @staticmethod
    def _send(sock: socket.socket, request: httpx.Request) -> None:
        target = request.url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1".encode("ascii")]
        lines += [name + b": " + value for name, value in request.headers.raw]
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        chunks = list(request.stream)  # type: ignore[arg-type]
        if sum(len(c) for c in chunks) < _HEADER_LIMIT:  # small: one packet with the head
            sock.sendall(b"".join([head, *chunks]))
            return
        sock.sendall(head)
        for chunk in chunks:  # a large body as it is, not concatenated
            sock.sendall(chunk)

    def _receive(
        self, sock: socket.socket, request: httpx.Request, reused: bool
    ) -> tuple[int, list[tuple[bytes, bytes]], bytearray | memoryview, bool]:
        data = bytearray()
        while (end := data.find(b"\r\n\r\n")) == -1:
            chunk = sock.recv(_HEADER_LIMIT)
            if not chunk:
                if reused and not data:
                    raise _Closed
                raise httpx.RemoteProtocolError("server closed the connection mid-response", request=request)
            data += chunk
            if len(data) > _HEADER_LIMIT:
                raise httpx.RemoteProtocolError("response headers too large", request=request)
        status_line, *header_lines = bytes(data[:end]).split(b"\r\n")
        version, status_text = status_line.split(b" ", 1)
        status = int(status_text[:3])
        headers = [
            (name.strip(), value.strip())
            for name, value in (line.split(b":", 1) for line in header_lines if b":" in line)
        ]
        fields = {name.lower(): value for name, value in headers}
        rest = memoryview(data)[end + 4 :]
        keep = version == b"HTTP/1.1" and fields.get(b"connection", b"").lower() != b"close"
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, headers, bytearray(), keep
        body: bytearray | memoryview
        if b"content-length" in fields:
            body = self._read_exactly(sock, int(fields[b"content-length"]), rest, request)
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._read_chunked(sock, bytearray(rest), request)
        else:  # delimited by the end of the connection
            body, keep = self._read_to_end(sock, bytearray(rest)), False
        return status, headers, body, keep

    @staticmethod
    def _read_exactly(sock: socket.socket, size: int, start: memoryview, request: httpx.Request) -> memoryview:
        # np.empty, not bytearray(size): that one clears reused heap memory (~0.8 ms for 30 MB)
        # only for the socket to overwrite it. Writable, so arrays viewing it are writable too.
        buffer = view = np.empty(size, np.uint8).data
        got = min(len(start), size)
        view[:got] = start[:got]
        while got < size:
            n = sock.recv_into(view[got:], min(size - got, _RECV))
            if n == 0:
                raise httpx.RemoteProtocolError(f"response ended after {got} of {size} bytes", request=request)
            got += n
        return buffer

    @staticmethod
    def _read_chunked(sock: socket.socket, data: bytearray, request: httpx.Request) -> bytearray:
        body, pos = bytearray(), 0

        def need(count: int) -> None:
            while len(data) - pos < count:
                chunk = sock.recv(_RECV)
                if not chunk:
                    raise httpx.RemoteProtocolError("chunked response ended early", request=request)
                data.extend(chunk)

        while True:
            while (line_end := data.find(b"\r\n", pos)) == -1:
                need(len(data) - pos + 1)
            size = int(bytes(data[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:
                while data.find(b"\r\n\r\n", pos - 2) == -1:  # optional trailers, then the blank line
                    need(len(data) - pos + 1)
                return body
            need(size + 2)
            body += data[pos : pos + size]
            pos += size + 2

    @staticmethod
    def _read_to_end(sock: socket.socket, data: bytearray) -> bytearray:
        while chunk := sock.recv(_RECV):
            data += chunk
        return data
