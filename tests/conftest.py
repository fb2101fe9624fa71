"""Shared fixtures: the real app in-process, with default or overridden settings, and a real
uvicorn server on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


@pytest.fixture(scope="session")
def client() -> TestClient:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


@pytest.fixture
def make_client():
    """A client for an app with some settings changed: make_client(max_macs=10)."""
    clients = []

    def make(**overrides) -> TestClient:
        test_client = TestClient(create_app(Settings(**overrides)))
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.close()


@pytest.fixture(autouse=True)
def _torch_rng_untouched():
    """The service must not disturb torch's global RNG (it seeds a forked copy)."""
    state = torch.random.get_rng_state()
    yield
    assert torch.equal(state, torch.random.get_rng_state()), "torch's global RNG state was changed"


ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT = 60.0
"""Seconds for uvicorn to import torch and answer /healthz on a busy 2-core machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UvicornServer:
    """`python -m uvicorn app.main:app` in a subprocess on 127.0.0.1 and a free port, up once /healthz answers."""

    def __init__(self, env: dict[str, str] | None = None, app: str = "app.main:app") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output()
                self.stop()
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}:\n{output}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        output = self.output()
        self.stop()
        raise RuntimeError(f"uvicorn did not answer /healthz within {SERVER_START_TIMEOUT} s:\n{output}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """The base URL of a real uvicorn serving `app.main:app` with default settings (one per session)."""
    server = UvicornServer()
    yield server.url
    server.stop()
