"""Client (blocking) and AsyncClient (awaitable): the same methods over one shared base."""

import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal, Unpack

import httpx
import numpy as np

from app.client._base import BaseClient, RawRequest
from app.client._layers import LayerMethods, LayerOptions, StackOptions, Tensor
from app.client._transport import FastHTTPTransport, read_body
from app.client.results import LayerKind, LayerResult, SequentialResult, ShapesResult
from app.client.shared_memory import SharedMemoryLayers


class Client(BaseClient[httpx.Client, httpx.BaseTransport], LayerMethods[LayerResult]):
    """The layerlab service from Python, blocking.

        with Client("http://127.0.0.1:8000") as client:   # base_url (or base_url=): else $LAYERLAB_URL, else this one
            result = client.linear(x, in_features=4, out_features=1, compare=True)
            result.output, result.parameters["weight"], result.comparison.allclose

    `Client(base_url, *, http_client=None, transport=None, api_key=None, timeout=60, max_retries=2,
    codec=None, ...)`: see `BaseClient.__init__`. Every layer method takes the torch.nn constructor's keyword arguments, then the request options
    (`parameters`, `seed`, `backend`, `compare`, `training`, `encoding`, `device`), and returns a
    `LayerResult` with NumPy arrays. Errors raise `LayerlabError` subclasses (see app.client.errors).
    """

    sends_chunks = True

    def __init__(self, base_url: str | None = None, *, shared_memory: bool = False, **options: Any) -> None:
        """`shared_memory`: the server is on this host; big tensors go through shared memory, not the
        socket (app.client.shared_memory). The other arguments are `BaseClient`'s."""
        super().__init__(base_url, **options)
        self._shared_memory = SharedMemoryLayers(self._send) if shared_memory else None

    def _open(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(transport=transport or FastHTTPTransport())

    def close(self) -> None:
        if self._shared_memory is not None:
            self._shared_memory.close()
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request, retried on connection errors, 429 and 5xx; the decoded body, or a typed error."""
        request = self._build(self._http, method, path, **kwargs)
        for attempt in range(self.max_retries + 1):
            response, exc = None, None
            content: bytes | bytearray | memoryview = b""
            try:
                response = self._http.send(request, stream=True)
                try:
                    content = read_body(response)  # FastHTTPTransport's buffer itself: arrays view it
                finally:
                    response.close()
            except httpx.TransportError as caught:
                exc = caught
            error, delay = self._outcome(attempt, request, response, exc)
            if error is None:
                assert response is not None  # no error means a response came
                return self._decode(response, content)
            if delay is None:
                raise error
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def request(self, method: str, path: str, **request: Unpack[RawRequest]) -> Any:
        """Any route, e.g. `client.request("GET", "/v1/info")`: the decoded JSON, with retries and typed errors.
        `json=` is sent as JSON, `content=` as it is; `headers=` are added."""
        return self._send(method, path, **request)

    def shared_array(self, shape: Sequence[int], dtype: Any = "float32") -> np.ndarray:
        """A zeroed array in shared memory (`Client(shared_memory=True)` only): fill it and pass it to
        a layer call as its input (or a parameter), and the request names its bytes: nothing is copied,
        not even into the client's own region. Its region goes once the array is gone."""
        if self._shared_memory is None:
            raise ValueError("shared_array needs Client(shared_memory=True)")
        return self._shared_memory.shared_array(tuple(shape), dtype)

    def _layer(self, kind: str, x: Tensor, config: dict[str, Any], options: LayerOptions) -> LayerResult:
        if self._shared_memory is not None and self._shared_memory.takes(x, options):
            return self._shared_memory.layer(kind, x, config, options)
        return LayerResult.from_json(
            self._send("POST", f"/v1/layers/{kind}", body=self._layer_body(kind, x, config, options))
        )

    def shapes(
        self,
        input_shape: Sequence[int],
        layers: Sequence[Mapping[str, Any]],
        *,
        dtype: Literal["float32", "float64"] | None = None,
    ) -> ShapesResult:
        """Output shapes, parameter shapes, MACs and formulas of a stack, without tensors:
        `client.shapes((100, 3, 120, 160), [layer("conv2d", in_channels=3, out_channels=16, kernel_size=3)])`."""
        return ShapesResult.from_json(
            self._send("POST", "/v1/shapes", body=self._shapes_body(input_shape, layers, dtype))
        )

    def sequential(
        self, layers: Sequence[Mapping[str, Any]], x: Tensor, **options: Unpack[StackOptions]
    ) -> SequentialResult:
        """Run a stack as `nn.Sequential` would; each `layer(...)` may carry its own `parameters`.
        Options left out take the server's default."""
        return SequentialResult.from_json(
            self._send("POST", "/v1/sequential", body=self._sequential_body(layers, x, options))
        )

    def layers(self) -> list[LayerKind]:
        """The kinds the server computes, with their config schemas and defaults."""
        return [LayerKind.from_json(item) for item in self._send("GET", "/v1/layers")]

    def health(self) -> dict[str, Any]:
        """GET /healthz: `{"status": "ok"}` while the server is alive."""
        return self._send("GET", "/healthz")


class AsyncClient(BaseClient[httpx.AsyncClient, httpx.AsyncBaseTransport], LayerMethods[Awaitable[LayerResult]]):
    """The same as `Client`, awaitable: `async with AsyncClient() as client: await client.linear(...)`."""

    def _open(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import anyio  # httpx's own dependency; imported only when an async client sends

        request = self._build(self._http, method, path, **kwargs)
        for attempt in range(self.max_retries + 1):
            response, exc = None, None
            try:
                response = await self._http.send(request)
            except httpx.TransportError as caught:
                exc = caught
            error, delay = self._outcome(attempt, request, response, exc)
            if error is None:
                assert response is not None  # no error means a response came
                return self._decode(response)
            if delay is None:
                raise error
            await anyio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def request(self, method: str, path: str, **request: Unpack[RawRequest]) -> Any:
        return await self._send(method, path, **request)

    async def _layer(self, kind: str, x: Tensor, config: dict[str, Any], options: LayerOptions) -> LayerResult:
        return LayerResult.from_json(
            await self._send("POST", f"/v1/layers/{kind}", body=self._layer_body(kind, x, config, options))
        )

    async def shapes(
        self,
        input_shape: Sequence[int],
        layers: Sequence[Mapping[str, Any]],
        *,
        dtype: Literal["float32", "float64"] | None = None,
    ) -> ShapesResult:
        return ShapesResult.from_json(
            await self._send("POST", "/v1/shapes", body=self._shapes_body(input_shape, layers, dtype))
        )

    async def sequential(
        self, layers: Sequence[Mapping[str, Any]], x: Tensor, **options: Unpack[StackOptions]
    ) -> SequentialResult:
        return SequentialResult.from_json(
            await self._send("POST", "/v1/sequential", body=self._sequential_body(layers, x, options))
        )

    async def layers(self) -> list[LayerKind]:
        return [LayerKind.from_json(item) for item in await self._send("GET", "/v1/layers")]

    async def health(self) -> dict[str, Any]:
        return await self._send("GET", "/healthz")


for _name in ("request", "shapes", "sequential", "layers", "health"):  # one docstring for both
    getattr(AsyncClient, _name).__doc__ = getattr(Client, _name).__doc__
