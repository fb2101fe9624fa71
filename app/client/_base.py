"""What Client and AsyncClient share: settings, building requests, reading responses, when to retry.

The two classes differ only in how they send (a blocking or an awaited loop around httpx) and sleep.
"""

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypedDict, TypeVar

import httpx
import orjson

from app import __version__
from app.client._layers import LayerOptions, StackOptions
from app.client.codec import DEFAULT_CODEC, Codec, encode, encode_parameters
from app.client.errors import APIConnectionError, APITimeoutError, LayerlabError, status_error

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "LAYERLAB_URL"
API_KEY_ENV = "LAYERLAB_API_KEY"
DEFAULT_TIMEOUT = 60.0
"""Seconds for the whole exchange: a large layer's upload and compute fit in it."""
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
"""Seconds before the first retry; doubled at each one, up to MAX_RETRY_DELAY."""
MAX_RETRY_DELAY = 8.0
LAYER_OPTIONS = LayerOptions.__optional_keys__
STACK_OPTIONS = StackOptions.__optional_keys__
JSON_TYPE = "application/json"


def is_retryable(status: int) -> bool:
    """Only 429 (too many requests) and 5xx: anything else fails the same way twice."""
    return status == 429 or status >= 500


def retry_delay(attempt: int, *, initial: float, maximum: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): exponential, capped, with up to 25% jitter,
    or what a `Retry-After: <seconds>` header asks (capped too)."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), maximum)
        except ValueError:
            pass  # an HTTP date: fall back to our own schedule
    delay = min(initial * 2**attempt, maximum)
    return delay * (1 - 0.25 * random.random())


class RawRequest(TypedDict, total=False):
    """`request()`'s keywords: `json` is sent as JSON, `content` as it is; `headers` are added."""

    json: Any
    content: bytes | None
    headers: Mapping[str, str] | None


HTTP = TypeVar("HTTP", httpx.Client, httpx.AsyncClient)
"""The httpx client a client sends with."""
TRANSPORT = TypeVar("TRANSPORT", httpx.BaseTransport, httpx.AsyncBaseTransport)


class BaseClient(Generic[HTTP, TRANSPORT]):
    sends_chunks = False
    """Whether request bodies may go to httpx as a list of buffers (a sync client's streams only)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        http_client: HTTP | None = None,
        transport: TRANSPORT | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        codec: Codec | None = None,
        initial_retry_delay: float = INITIAL_RETRY_DELAY,
        max_retry_delay: float = MAX_RETRY_DELAY,
    ) -> None:
        """`base_url`: argument, then $LAYERLAB_URL, else DEFAULT_BASE_URL. `http_client` (yours to
        close) or `transport` (e.g. `httpx.ASGITransport(app=app)`, the app in-process) replace the network.
        `api_key`: argument, then $LAYERLAB_API_KEY, else none (sent as `Authorization: Bearer`)."""
        if http_client is not None and transport is not None:
            raise ValueError("pass http_client or transport, not both")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.codec = codec or DEFAULT_CODEC
        self.initial_retry_delay = initial_retry_delay
        self.max_retry_delay = max_retry_delay
        self._headers = {"User-Agent": f"layerlab-python/{__version__}", "Accept": self.codec.content_type}
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if api_key:  # sent as a bearer token; never part of repr or errors
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._owns_http = http_client is None  # the caller's is theirs to close
        self._http: HTTP = self._open(transport) if http_client is None else http_client

    def _open(self, transport: TRANSPORT | None) -> HTTP:
        """A new httpx client of our own, over `transport` when given."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- requests --------------------------------------------------------------------------------

    def _build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        method: str,
        path: str,
        *,
        body: Any = None,
        json: Any = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """`body` goes through the codec, `json` is plain JSON, `content` is sent as it is."""
        all_headers = dict(self._headers)
        chunked = getattr(self.codec, "dump_chunks", None) if self.sends_chunks else None
        if body is not None and chunked is not None:
            # The body's pieces as they are (a large array's own memory), not joined into one copy;
            # an explicit Content-Length keeps httpx from chunked transfer encoding.
            parts, all_headers["Content-Type"] = chunked(body), self.codec.content_type
            all_headers["Content-Length"] = str(sum(memoryview(part).nbytes for part in parts))
            content = parts
        elif body is not None:
            content, all_headers["Content-Type"] = self.codec.dumps(body), self.codec.content_type
        elif json is not None:
            content, all_headers["Content-Type"] = orjson.dumps(json), JSON_TYPE
        all_headers.update(headers or {})
        return http.build_request(
            method,
            f"{self.base_url}{path}",
            content=content,
            headers=all_headers,
            timeout=self.timeout if self.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    def _outcome(
        self, attempt: int, request: httpx.Request, response: httpx.Response | None, exc: Exception | None
    ) -> tuple[LayerlabError | None, float | None]:
        """After one attempt: (None, None) done; (error, None) raise it; (error, seconds) retry after a sleep."""
        retry_after = None
        if exc is not None:
            kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
            error: LayerlabError = kind(f"{type(exc).__name__} on {request.method} {request.url}: {exc}")
            error.__cause__ = exc
        else:
            assert response is not None
            if response.is_success:
                return None, None
            error = status_error(response)
            if not is_retryable(response.status_code):
                return error, None
            retry_after = response.headers.get("retry-after")
        if attempt >= self.max_retries:
            return error, None
        return error, retry_delay(
            attempt, initial=self.initial_retry_delay, maximum=self.max_retry_delay, retry_after=retry_after
        )

    def _decode(self, response: httpx.Response, content: bytes | bytearray | memoryview | None = None) -> Any:
        content = response.content if content is None else content
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if content_type == JSON_TYPE or not content:
            return orjson.loads(content) if content else None
        return self.codec.loads(content)

    # -- bodies ----------------------------------------------------------------------------------

    def _layer_body(self, kind: str, x: Any, config: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        _check_options(f"{kind}()", "not a torch.nn constructor argument of this kind nor", options, LAYER_OPTIONS)
        body: dict[str, Any] = {"config": config, "input": encode(x, self.codec), "encoding": self.codec.encoding}
        for name, value in options.items():
            body[name] = encode_parameters(value, self.codec) if name == "parameters" else value
        return self._with_gradient_tensors(body)

    def _with_gradient_tensors(self, body: dict[str, Any]) -> dict[str, Any]:
        """grad_output and a loss target in the codec's form (class indices stay integers)."""
        if body.get("grad_output") is not None:
            body["grad_output"] = encode(body["grad_output"], self.codec)
        if body.get("loss") is not None and body["loss"].get("target") is not None:
            body["loss"] = {**body["loss"], "target": encode(body["loss"]["target"], self.codec, integers=True)}
        return body

    def _shapes_body(
        self, input_shape: Sequence[int], layers: Sequence[Mapping[str, Any]], dtype: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input_shape": [int(d) for d in input_shape],
            "layers": [_stack_layer(layer, None) for layer in layers],
        }
        if dtype is not None:
            body["dtype"] = dtype
        return body

    def _sequential_body(
        self, layers: Sequence[Mapping[str, Any]], x: Any, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        _check_options("sequential()", "not", options, STACK_OPTIONS)
        body: dict[str, Any] = {
            "layers": [_stack_layer(layer, self.codec) for layer in layers],
            "input": encode(x, self.codec),
            "encoding": self.codec.encoding,
        }
        body.update({name: value for name, value in options.items() if value is not None})
        return self._with_gradient_tensors(body)


def _check_options(function: str, what: str, options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """A TypeError, as Python raises for a keyword a function lacks, for options no request has."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{function} got unexpected keyword arguments {unknown}: {what} a request option ({sorted(allowed)})"
        )


def _stack_layer(layer: Mapping[str, Any], codec: Codec | None) -> dict[str, Any]:
    """`{"kind", "config", "parameters"?}` (see `layer()`), with parameters encoded when tensors are sent."""
    if not isinstance(layer, Mapping) or "kind" not in layer:
        raise TypeError(f"a stack layer is a dict with 'kind' and 'config' (see app.client.layer); got {layer!r:.80}")
    out = {"kind": layer["kind"], "config": dict(layer.get("config") or {})}
    if layer.get("parameters"):
        if codec is None:
            raise TypeError("shapes() takes no tensors: drop 'parameters' from the layers")
        out["parameters"] = encode_parameters(layer["parameters"], codec)
    return out


def layer(kind: str, /, *, parameters: Mapping[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """One layer of a stack for `shapes()` and `sequential()`, written like its torch.nn constructor:
    `layer("conv2d", in_channels=3, out_channels=16, kernel_size=3, stride=2)`."""
    spec: dict[str, Any] = {"kind": kind, "config": config}
    if parameters:
        spec["parameters"] = dict(parameters)
    return spec
