"""The SDK's lean HTTP/1.1 transport, against real sockets: a real uvicorn, and a tiny server that
misbehaves on purpose (drops kept-alive connections, answers in chunks, without a length)."""

import gc
import socket
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from app.codec import msgpack as wire
from app.client import Client, ValidationError
from app.client._transport import FastHTTPTransport, read_body
from tests.live_server import live_server


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with live_server("--http", "httptools") as url:
        yield url


def test_large_msgpack_exchange_matches_httpx(server_url):
    x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)  # 512 KB in, 2 MB out
    body = wire.packb({"config": {"in_features": 64, "out_features": 256}, "input": wire.tensor(x)})
    headers = {"content-type": wire.MEDIA_TYPE}
    with httpx.Client(transport=FastHTTPTransport()) as fast, httpx.Client() as plain:
        ours = fast.post(f"{server_url}/v1/layers/linear", content=body, headers=headers)
        theirs = plain.post(f"{server_url}/v1/layers/linear", content=body, headers=headers)
    assert ours.status_code == theirs.status_code == 200
    ours_body, theirs_body = wire.unpackb(ours.content), wire.unpackb(theirs.content)
    assert ours_body["output"]["bytes"] == theirs_body["output"]["bytes"]
    assert ours.headers["content-type"] == "application/msgpack"


def test_keep_alive_reuses_one_connection(server_url):
    transport = FastHTTPTransport()
    with Client(base_url=server_url, transport=transport) as client:
        assert client.health() == {"status": "ok"}
        (first,) = transport._idle.values()
        for _ in range(3):
            client.linear(np.ones((2, 4), np.float32), in_features=4, out_features=1)
        assert list(transport._idle.values()) == [first]
        with pytest.raises(ValidationError) as raised:  # errors still come back typed, on the same socket
            client.linear(np.ones((2, 5), np.float32), in_features=4, out_features=1)
        assert raised.value.status == 422 and list(transport._idle.values()) == [first]


class MisbehavingServer:
    """HTTP/1.1 on 127.0.0.1 that answers each connection's first request, then closes it
    (without saying so); /chunked answers in chunks, /eof without a length."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                path = head.split(b" ")[1]
                if path == b"/chunked":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n")
                elif path == b"/eof":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def misbehaving() -> Iterator[MisbehavingServer]:
    server = MisbehavingServer()
    yield server
    server.close()


def test_a_dropped_keep_alive_connection_is_replaced(misbehaving):
    with httpx.Client(transport=FastHTTPTransport()) as client:
        for _ in range(3):  # each reuse finds the connection closed, and sends again on a new one
            assert client.get(f"http://127.0.0.1:{misbehaving.port}/").text == "ok"
    assert misbehaving.connections == 3


def test_chunked_and_unframed_responses(misbehaving):
    with httpx.Client(transport=FastHTTPTransport()) as client:
        assert client.get(f"http://127.0.0.1:{misbehaving.port}/chunked").text == "hello, world"
        assert client.get(f"http://127.0.0.1:{misbehaving.port}/eof").text == "until the end"


def test_connection_refused_is_httpx_connect_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    with httpx.Client(transport=FastHTTPTransport()) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")


def test_large_outputs_are_writable_views_of_the_response(server_url):
    x = np.random.default_rng(1).standard_normal((4096, 64)).astype(np.float32)  # 4 MB out
    weight = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    with Client(base_url=server_url) as client:
        result = client.linear(x, in_features=64, out_features=256, bias=False, parameters={"weight": weight})
    assert result.output.flags.writeable and result.output.nbytes >= 2**20
    assert isinstance(result.raw["output"]["bytes"], memoryview)  # the array lies in the response buffer
    np.testing.assert_array_equal(result.parameters["weight"], weight)  # small ones: copies of their own
    result.output[0, 0] = 1.0  # writable indeed


def _reaches(start: object, target: object, limit: int = 100_000) -> bool:
    """Whether `target` can be reached from `start` through references (what the cyclic GC sees)."""
    seen, todo = set(), [start]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if obj is target:
            return True
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        todo.extend(gc.get_referents(obj))
    return False


def test_the_response_lets_go_of_its_buffer_once_read(server_url):
    """httpx keeps each response in a reference cycle until the cyclic GC runs; a 30 MB response
    buffer held by that cycle would land in fresh memory at every request (page faults)."""
    body = wire.packb({"config": {"in_features": 4, "out_features": 1}, "input": wire.tensor(np.ones((2, 4), np.float32))})
    with httpx.Client(transport=FastHTTPTransport()) as client:
        request = client.build_request("POST", f"{server_url}/v1/layers/linear", content=body,
                                       headers={"content-type": wire.MEDIA_TYPE})
        response = client.send(request, stream=True)
        assert _reaches(response, response)  # the cycle this is about (httpx's BoundSyncStream)
        buffer = read_body(response)
        response.close()
    assert isinstance(buffer, memoryview) and not buffer.readonly  # arrays decoded from it are writable
    assert wire.unpack_views(buffer)["output_shape"] == [2, 1]
    assert not _reaches(response, buffer) and not _reaches(response, buffer.obj)
