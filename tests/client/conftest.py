"""The SDK against the real app four ways: Client and AsyncClient, in-process (ASGI) and over a real
uvicorn on 127.0.0.1. `sdk` hides the difference so one test body covers all four."""

from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.client.helpers import make_sdk


@pytest.fixture(scope="session")
def app() -> FastAPI:
    return create_app(Settings())


@pytest.fixture
def portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    with anyio.from_thread.start_blocking_portal() as running:
        yield running


@pytest.fixture(params=["sync-asgi", "async-asgi", "sync-uvicorn", "async-uvicorn"])
def sdk(request: pytest.FixtureRequest, app: FastAPI, portal: anyio.from_thread.BlockingPortal) -> Iterator[Any]:
    """A Client, or an AsyncClient behind `Blocking`, on the app in-process or on a live uvicorn."""
    base_url = request.getfixturevalue("live_server") if request.param.endswith("uvicorn") else None
    client, close = make_sdk(request.param, app, base_url, portal, max_retries=0)
    yield client
    close()


@pytest.fixture(params=["sync", "async"])
def in_process(request: pytest.FixtureRequest, portal: anyio.from_thread.BlockingPortal):
    """make(asgi_app, **options): a Client or a blocking AsyncClient on any ASGI app, in-process."""
    closers = []

    def make(asgi_app: Any, **options: Any) -> Any:
        client, close = make_sdk(f"{request.param}-asgi", asgi_app, None, portal, **options)
        closers.append(close)
        return client

    yield make
    for close in closers:
        close()


@pytest.fixture
def anyio_backend() -> str:
    """The session's app holds asyncio primitives (its compute limiter): async tests run on asyncio."""
    return "asyncio"
