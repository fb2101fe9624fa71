"""Shared fixtures: the real app in-process, with default or overridden settings."""

import pytest
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
