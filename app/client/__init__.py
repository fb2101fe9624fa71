"""layerlab's Python SDK: NumPy arrays in, typed results with NumPy arrays out.

    from app.client import Client
    import numpy as np

    with Client() as client:   # base_url: argument, then $LAYERLAB_URL, then http://127.0.0.1:8000
        x = np.random.randn(10, 4).astype(np.float32)
        result = client.linear(x, in_features=4, out_features=1, compare=True)
        result.output            # (10, 1) float32 array
        result.parameters        # {"weight": (1, 4) array, "bias": (1,) array}
        result.comparison        # Comparison(backend="reference", allclose=True, ...)

`AsyncClient` has the same methods, awaitable. Tensors travel as their raw bytes in msgpack
bodies (bit-exact, no text conversion); `Client(codec=JsonCodec())` sends JSON with base64 instead,
`JsonCodec(tensors="list")` nested lists. Importing this package loads neither torch nor fastapi:
it needs only httpx, numpy, orjson and msgpack.
"""

from app.client._base import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_DELAY,
    layer,
)
from app.client._client import AsyncClient, Client
from app.client._layers import LAYER_KINDS, LayerOptions
from app.client.codec import Codec, JsonCodec, MsgpackCodec, random_tensor
from app.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    LayerlabError,
    PayloadTooLargeError,
    ServerError,
    ValidationError,
)
from app.client.results import Comparison, LayerKind, LayerResult, SequentialResult, ShapesResult

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "INITIAL_RETRY_DELAY",
    "LAYER_KINDS",
    "MAX_RETRY_DELAY",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "Codec",
    "Comparison",
    "JsonCodec",
    "LayerKind",
    "LayerOptions",
    "LayerResult",
    "LayerlabError",
    "MsgpackCodec",
    "PayloadTooLargeError",
    "SequentialResult",
    "ServerError",
    "ShapesResult",
    "ValidationError",
    "layer",
    "random_tensor",
]
