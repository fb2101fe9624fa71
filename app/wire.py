"""The binary transport's codec: msgpack bodies whose tensors are raw bytes.

A tensor travels as `{"shape": [...], "dtype": "float32", "bytes": <bin>}`: little-endian,
C-order bytes in a msgpack `bin`. Everything else is the same as the JSON body.

`pack` writes each large array's own buffer after a 5-byte `bin` header instead of copying it
into msgpack's growing output buffer (`msgpack.packb` would copy a 30 MB output twice); the
result is a list of chunks to send or join. Imports neither fastapi nor torch, so the SDK can
use it too.
"""

from typing import Any

import msgpack
import numpy as np

MEDIA_TYPE = "application/msgpack"
MEDIA_TYPES = (MEDIA_TYPE, "application/x-msgpack", "application/vnd.msgpack")
_INLINE_BYTES = 64 * 1024
"""Arrays smaller than this are copied into the surrounding chunk: fewer, larger writes."""


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):  # inside a plain list: rare and small, copied
        return _array_bytes(value).tobytes()
    raise TypeError(f"cannot write {type(value).__name__} as msgpack")


def _array_bytes(array: np.ndarray) -> memoryview:
    """The array's little-endian C-order bytes, without a copy when it already is (the usual case)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(array).cast("B")


def _bin_header(size: int) -> bytes:
    if size < 2**8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 2**16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def pack(value: Any) -> list[bytes | memoryview]:
    """`value` as msgpack, in chunks; an ndarray anywhere in dicts or lists becomes a `bin` of its bytes."""
    packer = msgpack.Packer(default=_default, use_bin_type=True, autoreset=True)
    chunks: list[bytes | memoryview] = []
    head = bytearray()
    # A loop over a stack, not a recursive closure: a closure that calls itself is a reference
    # cycle, and it would keep these chunks (the arrays) alive until the cyclic GC ran.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            head.extend(packer.pack_map_header(len(item)))
            for key, inner in reversed(item.items()):
                stack.append(inner)
                stack.append(_Key(key))
        elif isinstance(item, _Key):
            head.extend(packer.pack(item.key))
        elif isinstance(item, np.ndarray):
            data = _array_bytes(item)
            head.extend(_bin_header(data.nbytes))
            if data.nbytes < _INLINE_BYTES:
                head.extend(data)
            else:
                chunks.extend((bytes(head), data))
                head.clear()
        elif isinstance(item, (list, tuple)) and any(isinstance(v, (dict, list, tuple, np.ndarray)) for v in item):
            head.extend(packer.pack_array_header(len(item)))
            stack.extend(reversed(item))
        else:
            head.extend(packer.pack(item))
    if head:
        chunks.append(bytes(head))
    return chunks


class _Key:
    """A map key waiting on `pack`'s stack (keys are packed as they are, never walked)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


def packb(value: Any) -> bytes:
    """`pack` joined into one bytes object."""
    return b"".join(pack(value))


def unpackb(body: bytes | memoryview, **options: Any) -> Any:
    """msgpack -> Python values; `bin` becomes `bytes` (one copy, then read in place by np.frombuffer).

    Raises ValueError (msgpack's errors derive from it) for anything that is not one whole msgpack value.
    """
    return msgpack.unpackb(body, raw=False, strict_map_key=True, **options)


def tensor(array: np.ndarray) -> dict[str, Any]:
    """An array in the binary tensor form (the array itself is written as bytes by `pack`)."""
    return {"shape": list(array.shape), "dtype": str(array.dtype), "bytes": array}


def array(value: dict[str, Any]) -> np.ndarray:
    """The binary tensor form -> an ndarray viewing the received bytes (read-only)."""
    return np.frombuffer(value["bytes"], dtype=np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"])
