"""No ~40 ms stall per keep-alive request with several workers (uvicorn issue #3149).

Without TCP_NODELAY on the workers' sockets, a response written in two or more pieces (headers,
then body; our msgpack responses send each large array as its own piece) waits for the client's
delayed ACK: ~40 ms per request on a reused connection. Timed through the run command with two
workers on the standard asyncio loop, the combination that stalled.
"""

import http.client
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from app.codec import msgpack as wire
from tests.live_server import free_port

STALL_S = 0.040


@pytest.mark.slow  # a timing claim: opt-in, never in the default suite
def test_two_workers_answer_keep_alive_requests_without_a_delayed_ack_stall(tmp_path):
    port = free_port()
    env = {**os.environ, "LAYERLAB_HOST": "127.0.0.1", "LAYERLAB_PORT": str(port), "LAYERLAB_WORKERS": "2",
           "LAYERLAB_LOOP": "asyncio", "LAYERLAB_ACCESS_LOG": "false", "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "app.serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        connection = _connect(port, server)
        x = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)  # ~8 KB each way
        body = wire.packb({"config": {"in_features": 32, "out_features": 32}, "input": wire.tensor(x)})
        timings = {"healthz": [], "linear": []}
        for _ in range(12):  # one connection throughout: keep-alive
            timings["healthz"].append(_timed(connection, "GET", "/healthz"))
            timings["linear"].append(_timed(connection, "POST", "/v1/layers/linear", body,
                                            {"content-type": wire.MEDIA_TYPE}))
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    for route, seconds in timings.items():
        # A stall makes every request take >= 40 ms; on a busy machine a few may, for other reasons.
        fast = sum(s < STALL_S * 0.75 for s in seconds)
        assert fast >= len(seconds) // 2, (route, [round(s * 1000, 1) for s in seconds])


def _connect(port: int, server: subprocess.Popen) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().read() == b'{"status":"ok"}':
                return connection
        except OSError:
            connection.close()
        time.sleep(0.2)
    raise AssertionError("the server did not start")


def _timed(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
           headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return time.perf_counter() - started
