"""Graceful drain (app.lifecycle) on a real `python -m app.serve`: SIGTERM during the notebook's
Conv2d; readiness turns 503 first, the Conv2d's response arrives whole, new requests are served
until the drain period ends and refused only after it."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
DRAIN_S = 5.0
SHAPE = [100, 3, 120, 160]
# The notebook's Conv2d, compared with the reference backend and returned as nested lists: a few
# seconds of work, so SIGTERM lands while it is in flight.
CONV2D = {"config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2},
          "input": {"random": "normal", "shape": SHAPE, "seed": 0}, "compare": True}


def in_flight(base: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text)
    return next(s.value for f in families for s in f.samples if s.name == "layerlab_http_requests_in_flight")


def refused(base: str) -> bool:
    """No answer: the connection refused, or reset unanswered (accepted by the kernel in the
    instant the last worker closed the socket)."""
    try:
        httpx.get(f"{base}/healthz", timeout=5)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def log_messages(stderr: Path) -> list[str]:
    """The messages of the server's JSON log lines written so far (whole lines: a worker may be mid-line)."""
    text = stderr.read_text()
    return [orjson.loads(line)["message"] for line in text[: text.rfind("\n") + 1].splitlines() if line.startswith("{")]


def wait_started(stderr: Path, workers: int, server: subprocess.Popen, timeout_s: float = 180) -> None:
    """Until every worker has said its startup is complete (uvicorn's line, one per worker)."""
    deadline = time.monotonic() + timeout_s
    while sum(m == "Application startup complete." for m in log_messages(stderr)) < workers:
        assert server.poll() is None, stderr.read_text()[-3000:]
        assert time.monotonic() < deadline, f"not every worker started: {log_messages(stderr)}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_then_stops(tmp_path, workers):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
           "LAYERLAB_HOST": "127.0.0.1", "LAYERLAB_PORT": str(port), "LAYERLAB_WORKERS": str(workers),
           "LAYERLAB_DRAIN_S": str(DRAIN_S), "TMPDIR": str(tmp_path)}
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        server = subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_healthy(base, 180, server, stderr, path="/readyz")
        # /readyz answered from one worker; the others may still be importing torch (seconds on a
        # busy machine). A worker SIGTERM reaches before its startup has nothing to drain: it stops.
        wait_started(stderr, workers, server)
        done: dict[str, object] = {}

        def conv2d() -> None:
            try:
                done["response"] = httpx.post(f"{base}/v1/layers/conv2d", json=CONV2D, timeout=300)
            except httpx.HTTPError as exc:  # reported by the assertions below
                done["error"] = exc
            done["at"] = time.monotonic()

        client = threading.Thread(target=conv2d)
        client.start()
        deadline = time.monotonic() + 60
        while in_flight(base) < 2 and "at" not in done:  # this /metrics request, and the Conv2d
            assert time.monotonic() < deadline, "the Conv2d never showed up in flight"
            time.sleep(0.02)
        assert "at" not in done, "the Conv2d finished before SIGTERM could be sent"

        server.send_signal(signal.SIGTERM)
        sigterm = time.monotonic()
        while httpx.get(f"{base}/readyz", timeout=10).status_code == 200:
            time.sleep(0.02)
        ready_503 = time.monotonic()
        draining = httpx.get(f"{base}/readyz", timeout=10)
        assert draining.status_code == 503 and draining.json()["status"] == "draining"

        # Still serving while draining: a new connection, a new request; told to reconnect elsewhere.
        during = httpx.get(f"{base}/healthz", timeout=10)
        served_at = time.monotonic()
        assert during.status_code == 200 and during.headers["connection"] == "close"

        client.join(timeout=300)
        assert "error" not in done, done.get("error")
        response = done["response"]
        assert isinstance(response, httpx.Response) and response.status_code == 200, response
        while not refused(base):
            assert server.poll() is None or refused(base)
            time.sleep(0.05)
        refused_at = time.monotonic()
        returncode = server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    # Readiness flipped before the in-flight response was done; the drain held the door open.
    assert sigterm < ready_503 < done["at"]
    if served_at < sigterm + DRAIN_S:
        assert during.status_code == 200  # (asserted above; here the order is what matters)
    assert refused_at - sigterm >= DRAIN_S
    assert returncode in (0, -signal.SIGTERM), stderr.read_text()[-3000:]
    print(f"\nworkers={workers}: readiness 503 after {ready_503 - sigterm:.3f} s, Conv2d answered after "
          f"{done['at'] - sigterm:.3f} s, refused after {refused_at - sigterm:.3f} s (drain {DRAIN_S} s)")

    # The response is whole: every element, equal to torch's own Conv2d.
    body = orjson.loads(response.content)
    assert body["output_shape"] == [100, 16, 59, 79] and body["comparison"]["allclose"]
    torch.manual_seed(0)
    x = torch.randn(*SHAPE)
    weight, bias = (torch.tensor(body["parameters"][name]["data"]) for name in ("weight", "bias"))
    expected = torch.nn.functional.conv2d(x, weight, bias, stride=2)
    torch.testing.assert_close(torch.tensor(body["output"]["data"]), expected)
    messages = log_messages(stderr)
    assert sum(m.startswith("SIGTERM: draining") for m in messages) == workers, messages
