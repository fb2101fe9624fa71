"""Real fronts and transports for the SDK's tests: no mocks, only things that fail for real."""

import functools
from typing import Any

import anyio.from_thread
import httpx
import orjson
from fastapi.testclient import TestClient

from app.client import AsyncClient, Client


class Blocking:
    """An AsyncClient driven from synchronous test code: each call is awaited on one event loop
    (a portal thread), so connection pools stay on the loop that made them."""

    def __init__(self, client: AsyncClient, portal: anyio.from_thread.BlockingPortal) -> None:
        self.client, self._portal = client, portal

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._portal.call(functools.partial(attribute, *args, **kwargs))

        return call


def make_sdk(mode: str, app: Any, base_url: str | None, portal: anyio.from_thread.BlockingPortal | None,
             **options: Any) -> tuple[Any, Any]:
    """(the client as tests use it, a closer). mode: sync-asgi, sync-uvicorn, async-asgi, async-uvicorn."""
    if mode == "sync-asgi":
        test_client = TestClient(app)
        return Client(http_client=test_client, **options), test_client.close
    if mode == "sync-uvicorn":
        client = Client(base_url=base_url, **options)
        return client, client.close
    assert portal is not None
    if mode == "async-asgi":
        client = AsyncClient(transport=httpx.ASGITransport(app=app), **options)
    else:
        client = AsyncClient(base_url=base_url, **options)
    return Blocking(client, portal), lambda: portal.call(client.aclose)


class FlakyFront:
    """A real ASGI front for the real app: answers the first requests with `statuses` (one each),
    then passes every request through. Counts the requests it saw."""

    def __init__(self, app: Any, statuses: list[int], retry_after: str | None = None) -> None:
        self.app, self.statuses, self.retry_after, self.calls = app, list(statuses), retry_after, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.calls += 1
        if not self.statuses:
            return await self.app(scope, receive, send)
        status = self.statuses.pop(0)
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after.encode()))
        body = orjson.dumps({"error": "Unavailable", "status": status, "detail": f"front answered {status}"})
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class CountingTransport(httpx.HTTPTransport):
    """httpx's real network transport, counting the attempts."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return await super().handle_async_request(request)
