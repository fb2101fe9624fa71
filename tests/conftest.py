"""Shared fixtures: the real app in-process, with default or overridden settings, and a real
uvicorn on 127.0.0.1 for the whole session."""

from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.live_server import live_server as start_live_server


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


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """The base URL of a real `uvicorn app.main:app` on 127.0.0.1 and a free port, default settings.
    Access logs off: the helper pipes the server's output, which nobody reads during the session."""
    with start_live_server("--log-level", "warning") as url:
        yield url


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: torch's thread pool only adds synchronization (20 ms a call on a busy 2-core box).
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
