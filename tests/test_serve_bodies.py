"""app.serve.HttpProtocol: large bodies received straight into one buffer, everything else as uvicorn does.

Each test runs a real uvicorn server with the protocol (on both event loops) and talks to it with
raw sockets, so that exactly these bytes are on the wire: a body the app receives whole, chunked
bodies, keep-alive, pipelining, Expect: 100-continue and a client that leaves mid-body.
"""

import asyncio
import hashlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn

from app.serve import DIRECT_BODY_BYTES, HttpProtocol

LARGE = DIRECT_BODY_BYTES * 3 + 12345
LOOPS = ["asyncio"] if sys.platform in ("win32", "cygwin") or sys.implementation.name == "pypy" else ["asyncio", "uvloop"]


class Recorder:
    """An ASGI app answering with what it received: its messages' body types and sizes, and a digest."""

    def __init__(self) -> None:
        self.disconnects: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        digest, messages = hashlib.sha256(), []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects.append(scope["path"])
                return
            body = message.get("body", b"")
            digest.update(body)
            messages.append([type(body).__name__, len(body), isinstance(body, memoryview) and not body.readonly])
            if not message.get("more_body"):
                break
        answer = orjson.dumps({"path": scope["path"], "messages": messages, "sha256": digest.hexdigest()})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


@pytest.fixture(params=LOOPS)
def server(request) -> Iterator[tuple[int, Recorder]]:
    app = Recorder()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, loop=request.param, http=HttpProtocol, ws="none", lifespan="off", log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.started
    try:
        yield listener.getsockname()[1], app
    finally:
        running.should_exit = True
        thread.join(10)
        listener.close()


def body_of(size: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) % 251 for i in range(256)) * (size // 256) + b"x" * (size % 256)


def post(path: str, body: bytes, *headers: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Connection:
    """A client socket and its buffered reader (pipelined responses may arrive together)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.reader = self.sock.makefile("rb")

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, bytes]:
        status = int(self.reader.readline().split()[1])
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, self.reader.read(length)


def answer(connection: Connection) -> dict:
    status, body = connection.response()
    assert status == 200, body
    return orjson.loads(body)


def connect(port: int) -> Connection:
    return Connection(port)


def test_a_large_body_reaches_the_app_whole_as_one_writable_buffer(server):
    port, _ = server
    body = body_of(LARGE)
    with connect(port) as sock:
        sock.sendall(post("/large", body))
        got = answer(sock)
    assert got["messages"] == [["memoryview", LARGE, True]]
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


def test_keep_alive_mixes_small_and_large_bodies_on_one_connection(server):
    port, _ = server
    sizes = [10, LARGE, 0, DIRECT_BODY_BYTES, 300_000, LARGE + 1, 5]
    with connect(port) as sock:
        for i, size in enumerate(sizes):
            body = body_of(size, seed=i)
            sock.sendall(post(f"/{i}", body))
            got = answer(sock)
            assert got["path"] == f"/{i}" and got["sha256"] == hashlib.sha256(body).hexdigest()
            assert sum(length for _, length, _ in got["messages"]) == size
            whole = size >= DIRECT_BODY_BYTES
            assert (got["messages"] == [["memoryview", size, True]]) == whole


def test_pipelined_requests_after_a_large_body_are_answered_in_order(server):
    """The large body's last bytes and the next requests arrive together: none is read as body."""
    port, _ = server
    bodies = [body_of(LARGE, 1), b"small", body_of(LARGE, 2), b""]
    with connect(port) as sock:
        sock.sendall(b"".join(post(f"/{i}", body) for i, body in enumerate(bodies)))
        for i, body in enumerate(bodies):
            got = answer(sock)
            assert got["path"] == f"/{i}" and got["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_chunked_body_streams_as_uvicorn_streams_it(server):
    port, _ = server
    pieces = [body_of(700_000, i) for i in range(3)]
    chunked = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    head = b"POST /chunked HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(port) as sock:
        sock.sendall(head + chunked)
        got = answer(sock)
        assert got["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
        assert {kind for kind, _, _ in got["messages"]} == {"bytes"}
        sock.sendall(post("/after", body_of(LARGE)))  # and the connection goes on
        assert answer(sock)["messages"] == [["memoryview", LARGE, True]]


def test_expect_100_continue_gets_its_interim_response_first(server):
    port, _ = server
    body = body_of(LARGE)
    with connect(port) as sock:
        sock.sendall(post("/expect", b"", b"Expect: 100-continue").replace(b"Content-Length: 0", b"Content-Length: %d" % LARGE))
        interim = sock.sock.recv(64)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        got = answer(sock)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_client_leaving_mid_body_disconnects_the_app_and_others_are_served(server):
    port, app = server
    with connect(port) as sock:
        sock.sendall(post("/gone", body_of(LARGE))[: LARGE // 2])
        time.sleep(0.3)  # the app is waiting for the rest
    deadline = time.monotonic() + 10
    while "/gone" not in app.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.disconnects == ["/gone"]
    with connect(port) as sock:
        sock.sendall(post("/next", body_of(LARGE)))
        assert answer(sock)["messages"] == [["memoryview", LARGE, True]]


def test_a_slow_large_body_arrives_whole(server):
    """Trickled in small writes, with pauses: the buffer fills across many reads."""
    port, _ = server
    body = body_of(DIRECT_BODY_BYTES + 99)
    request = post("/slow", body)
    with connect(port) as sock:
        for start in range(0, len(request), 200_000):
            sock.sendall(request[start : start + 200_000])
            time.sleep(0.01)
        got = answer(sock)
    assert got["messages"] == [["memoryview", len(body), True]]
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


def test_the_protocol_is_read_with_recv_into_on_both_loops():
    """uvloop reads into a buffer only for a protocol that is not an asyncio.Protocol; the transport
    is given one (a regression guard: with plain data_received the large body would come in pieces)."""
    from app.serve import _BufferedReads

    assert issubclass(_BufferedReads, asyncio.BufferedProtocol) and not issubclass(_BufferedReads, asyncio.Protocol)


# -- through the app, served by the run command (`python -m app.serve`) ------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    from tests.live_server import ServeProcess

    with ServeProcess(env={"LAYERLAB_LOG_LEVEL": "warning", "LAYERLAB_MAX_BODY_BYTES": str(8 * 2**20)}) as process:
        yield process.port


def conv_request(batch: int) -> tuple[bytes, object]:
    import numpy as np
    import torch

    from app.codec import msgpack as wire

    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 3, 40, 40), dtype=np.float32)
    weight, bias = rng.standard_normal((4, 3, 3, 3), dtype=np.float32), rng.standard_normal(4, dtype=np.float32)
    body = wire.packb({"config": {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2},
                       "input": wire.tensor(x), "parameters": {"weight": wire.tensor(weight), "bias": wire.tensor(bias)}})
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=2)
    return body, expected


def exchange_raw(connection: Connection, head: bytes, body: bytes) -> tuple[int, bytes]:
    connection.sendall(head + b"\r\n\r\n" + body)
    return connection.response()


def msgpack_head(length: int | None, path: str = "/v1/layers/conv2d") -> bytes:
    framing = b"Content-Length: %d" % length if length is not None else b"Transfer-Encoding: chunked"
    return b"\r\n".join([b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1",
                         b"Content-Type: application/msgpack", framing])


def test_app_computes_large_msgpack_bodies_received_whole_and_chunked_alike(served):
    import torch

    from app.codec import msgpack as wire

    body, expected = conv_request(batch=60)  # ~1.1 MB: over DIRECT_BODY_BYTES
    assert len(body) >= DIRECT_BODY_BYTES
    chunked = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (body[:400_000], body[400_000:])) + b"0\r\n\r\n"
    with connect(served) as sock:  # keep-alive: whole, chunked, whole again on one connection
        for head, payload in ((msgpack_head(len(body)), body), (msgpack_head(None), chunked),
                              (msgpack_head(len(body)), body)):
            status, answer_bytes = exchange_raw(sock, head, payload)
            assert status == 200, answer_bytes[:300]
            torch.testing.assert_close(torch.from_numpy(wire.array(wire.unpackb(answer_bytes)["output"]).copy()), expected)


def test_app_refuses_a_declared_body_over_the_limit_before_reading_it(served):
    with connect(served) as sock:
        status, answer_bytes = exchange_raw(sock, msgpack_head(9 * 2**20), b"")  # nothing of it sent
    assert status == 413 and orjson.loads(answer_bytes)["limit"] == "max_body_bytes"


def test_app_answers_400_for_a_large_body_that_is_not_msgpack(served):
    body = b"\xc1" * (2 * DIRECT_BODY_BYTES)  # 0xc1: never used in msgpack
    with connect(served) as sock:
        status, answer_bytes = exchange_raw(sock, msgpack_head(len(body)), body)
        assert status == 400 and orjson.loads(answer_bytes)["field"] == "body"
        status, _ = exchange_raw(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1", b"")  # and the connection goes on
        assert status == 200


def test_app_survives_a_client_that_leaves_mid_body(served):
    body, _ = conv_request(batch=60)
    with connect(served) as sock:
        sock.sendall(msgpack_head(len(body)) + b"\r\n\r\n" + body[: len(body) // 2])
    with connect(served) as sock:
        status, _ = exchange_raw(sock, msgpack_head(len(body)), body)
    assert status == 200


def test_the_run_command_loads_numpy_only_after_preparing_the_environment():
    """OpenBLAS reads OPENBLAS_* when NumPy loads; with one worker, uvicorn runs the app in the
    process that imported app.serve, so app.serve itself must not import NumPy."""
    import subprocess

    code = "import sys, app.serve; sys.exit('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent).returncode == 0
