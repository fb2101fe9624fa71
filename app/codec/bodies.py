"""The decode step for a request body in either format, and the JSON writer for responses."""

from typing import Any, Literal

import orjson

from app.codec.json import parse_json
from app.codec.msgpack import parse_msgpack

Format = Literal["json", "msgpack"]


def decode_body(body: bytes | memoryview, fmt: Format) -> dict[str, Any]:
    """A JSON object or msgpack map -> Python values, tensors' bytes left as they are (decoded by
    app.codec.tensors once the plan knows their limits)."""
    if fmt == "json":
        return parse_json(body)  # type: ignore[arg-type]  # JSON bodies are read as bytes (app.api.negotiation)
    return parse_msgpack(body)


def dumps_json(content: Any) -> bytes:
    """A response body as JSON; ndarrays written natively by orjson."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
