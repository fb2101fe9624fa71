"""NumPy arrays <-> the wire: the one place that knows how tensors and bodies are written.

A `Codec` turns a request body into bytes and a response back, and writes each tensor in its own
wire form. `MsgpackCodec` (the default) sends msgpack bodies with tensors as their raw bytes (a
msgpack `bin`): no text conversion at all, which for large tensors is what keeps a request close
to the cost of the layer itself (see the README's Performance section). `JsonCodec` sends JSON,
with tensors as base64 of their raw bytes (bit-exact, ~10x cheaper than lists) or as nested lists
(`JsonCodec(tensors="list")`). Pass one as `Client(codec=...)`.
"""

import sys
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np
import orjson

from app.codec import msgpack

try:  # SIMD base64 when installed (the server's dependency); the stdlib otherwise
    import pybase64 as _b64
except ImportError:  # pragma: no cover
    import base64 as _b64  # type: ignore[no-redef]

DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
}
TENSOR_FORMS = ("data", "base64", "bytes", "random")
VIEW_BYTES = 2**20
"""Response tensors this large are decoded in place from a writable response buffer (see `decode`)."""
"""A dict with one of these keys is already a wire tensor and is sent as it is."""

Encoding = Literal["base64", "list", "none"]


class Codec(Protocol):
    content_type: str
    """Sent as Content-Type and Accept."""
    encoding: Encoding
    """The request's `encoding`: how the server writes tensors back."""

    def tensor(self, array: np.ndarray) -> Any:
        """An array -> its form inside a request body."""
        ...

    def dumps(self, body: Any) -> bytes: ...

    def loads(self, content: bytes | bytearray | memoryview) -> Any: ...


class JsonCodec:
    """JSON bodies; tensors as `{"base64", "shape", "dtype"}` both ways, or as nested lists
    (`tensors="list"`: `{"data", "shape", "dtype"}`, non-finite values as "NaN"/"Infinity" strings)."""

    content_type = "application/json"

    def __init__(self, tensors: Literal["base64", "list"] = "base64") -> None:
        self.encoding: Encoding = tensors

    def tensor(self, array: np.ndarray) -> dict[str, Any]:
        if self.encoding == "list":
            return {"data": _json_values(array), "shape": list(array.shape), "dtype": array.dtype.name}
        return {
            "base64": _b64.b64encode(array.data if array.flags.c_contiguous else array.tobytes()).decode("ascii"),
            "shape": list(array.shape),
            "dtype": array.dtype.name,
        }

    def dumps(self, body: Any) -> bytes:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    def loads(self, content: bytes | bytearray | memoryview) -> Any:
        return orjson.loads(content)


def _json_values(array: np.ndarray) -> Any:
    """An array orjson writes as nested lists; NaN and infinities as the strings the server reads."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return array if array.ndim else array.item()
    values = array.astype(object)
    values[np.isnan(array)] = "NaN"
    values[np.isposinf(array)] = "Infinity"
    values[np.isneginf(array)] = "-Infinity"
    return values.tolist()


class MsgpackCodec:
    """msgpack bodies (`application/msgpack`); tensors as `{"shape", "dtype", "bytes": <bin>}` both ways.

    The server answers msgpack with raw bytes whatever `encoding` says, except "none" (summaries).
    """

    content_type = msgpack.MEDIA_TYPE
    encoding: Encoding = "base64"

    def tensor(self, array: np.ndarray) -> dict[str, Any]:
        return msgpack.tensor(array)

    def dumps(self, body: Any) -> bytes:
        return msgpack.packb(body)

    def dump_chunks(self, body: Any) -> list[bytes | memoryview]:
        """The body in pieces, each large array's own memory among them (sync Client only)."""
        return msgpack.pack(body)

    def loads(self, content: bytes | bytearray | memoryview) -> Any:
        return msgpack.unpack_views(content)  # tensors' bytes as views of `content`: see `decode`


DEFAULT_CODEC: Codec = MsgpackCodec()


def as_array(value: Any, *, integers: bool = False) -> np.ndarray:
    """A NumPy array, torch.Tensor, nested list or scalar -> a little-endian, C-order array the server takes.

    Floats stay float32 or float64 (float16 widens to float32); integers become float32, as the
    server reads a JSON list, unless `integers` (a buffer such as `num_batches_tracked`): then int64.
    """
    torch = sys.modules.get("torch")  # never imported here: a tensor exists only if torch already is
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
    if isinstance(value, (list, tuple)):
        array = np.asarray(value, dtype=np.float32)  # as the server reads a nested JSON list
    else:
        array = np.asarray(value)
    kind = array.dtype.kind
    if kind == "f":
        dtype = DTYPES["float64"] if array.dtype.itemsize == 8 else DTYPES["float32"]
    elif kind in "iu":
        dtype = DTYPES["int64"] if integers else DTYPES["float32"]
    else:
        raise TypeError(f"tensors hold real numbers; got an array of {array.dtype}")
    return np.asarray(array, dtype=dtype, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d


def encode(value: Any, codec: Codec, *, integers: bool = False) -> Any:
    """A request tensor in the codec's form; a dict already in a wire form passes through."""
    if isinstance(value, Mapping) and any(form in value for form in TENSOR_FORMS):
        return dict(value)
    return codec.tensor(as_array(value, integers=integers))


def encode_parameters(parameters: Mapping[str, Any] | None, codec: Codec) -> dict[str, Any]:
    return {name: encode(value, codec, integers=True) for name, value in (parameters or {}).items()}


def is_tensor(value: Any) -> bool:
    """A response tensor: `{"shape", "dtype"}` with `data`, `base64`, `bytes` or `summary`."""
    return (
        isinstance(value, dict)
        and "shape" in value
        and "dtype" in value
        and ("data" in value or "base64" in value or "bytes" in value or "summary" in value)
    )


def decode(value: dict[str, Any] | None) -> np.ndarray | None:
    """A response tensor -> a writable array; None for `encoding="none"` (only a summary came back)."""
    if value is None or "summary" in value:
        return None
    dtype, shape = DTYPES[value["dtype"]], tuple(value["shape"])
    if "base64" in value:
        raw = bytearray(_b64.b64decode(value["base64"]))  # bytearray: the array is writable
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    if "bytes" in value:
        raw = value["bytes"]
        # A large tensor in a writable response buffer (Client's transport) is used where it lies;
        # small ones are copied, so that keeping a bias does not keep a whole response alive.
        if not (isinstance(raw, memoryview) and not raw.readonly and raw.nbytes >= VIEW_BYTES):
            raw = bytearray(raw)  # one copy, for a writable array of its own
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    # numpy parses the non-finite tokens "NaN", "Infinity", "-Infinity" itself
    return np.asarray(value["data"], dtype=dtype.newbyteorder("=")).reshape(shape)


def decode_tree(value: Any) -> Any:
    """Every response tensor inside nested dicts and lists -> an array; everything else unchanged."""
    if is_tensor(value):
        return decode(value)
    if isinstance(value, dict):
        return {k: decode_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_tree(v) for v in value]
    return value


def random_tensor(
    shape: tuple[int, ...] | list[int],
    *,
    seed: int = 0,
    distribution: Literal["normal", "uniform"] = "normal",
    dtype: Literal["float32", "float64"] = "float32",
) -> dict[str, Any]:
    """A tensor the server draws itself: `torch.manual_seed(seed); torch.randn(*shape)` (or `torch.rand`
    for "uniform"). Nothing is uploaded, and the same draw can be rebuilt locally with torch."""
    return {"random": distribution, "shape": list(shape), "seed": seed, "dtype": dtype}
