"""msgpack bodies, whose tensors are raw bytes.

A tensor travels as `{"shape": [...], "dtype": "float32", "bytes": <bin>}`: little-endian,
C-order bytes in a msgpack `bin`. Everything else is the same as the JSON body.

`pack` writes each large array's own buffer after a 5-byte `bin` header instead of copying it
into msgpack's growing output buffer (`msgpack.packb` would copy a 30 MB output twice); the
result is a list of chunks to send or join. The server reads bodies with `unpackb` (msgpack's own
parser, one copy of each `bin`), except large ones of a few big `bin`s (tensors), which
`unpack_request_views` reads in place; the SDK reads responses with `unpack_views`, whose `bin`s
are views of the received buffer. Imports neither fastapi nor torch, so the SDK can use it too.

`parse_msgpack` is the server's decode step for a msgpack request body, with the same guards as
JSON bodies (a map at the top, no booleans inside arrays).
"""

import struct
from typing import Any

import msgpack
import numpy as np

from app.errors import BadRequest, InvalidInput

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
    if array.size == 0:  # memoryview refuses to cast a view with a zero in its shape
        return memoryview(b"")
    return array.data.cast("B")


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


def unpack_views(buffer: bytes | bytearray | memoryview) -> Any:
    """Like `unpackb`, but each `bin` is a memoryview into `buffer`: no copy at all. Over a
    bytearray the views are writable, so arrays read from them are too (the SDK's responses).

    Small structure only (maps, arrays, str, numbers, bool, nil, bin); raises ValueError on anything
    else or on a truncated or overlong buffer.
    """
    view = memoryview(buffer).cast("B")
    value, end = _read(view, 0, 0, None)
    if end != len(view):
        raise ValueError(f"msgpack value ends at byte {end} of {len(view)}")
    return value


class NotPlain(ValueError):
    """`unpack_request_views` declines a body: read it with `unpackb`, which decides what it is."""


def unpack_request_views(buffer: bytes | bytearray | memoryview, max_items: int = 1000) -> Any:
    """A request body of a few large `bin`s (tensors), each read in place: what `unpackb` would
    give, except that `bin`s of _INLINE_BYTES or more are memoryviews of `buffer` (smaller ones
    are bytes). Raises NotPlain (a ValueError) for anything else, so that the caller reads it with
    `unpackb` and errors stay msgpack's own: more than `max_items` values (a body of number lists:
    Python would walk them far slower than msgpack's C parser), a map key other than str (what
    `strict_map_key` refuses), a boolean inside an array (the server refuses those), any type
    `unpack_views` does not read, or a malformed body.
    """
    view = memoryview(buffer).cast("B")
    try:
        value, end = _read(view, 0, 0, [max_items])
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and struct.error are ValueErrors
        raise NotPlain(str(exc)) from None
    if end != len(view):
        raise NotPlain(f"msgpack value ends at byte {end} of {len(view)}")
    return value


_FIXED = {0xC0: None, 0xC2: False, 0xC3: True}
_NUMBERS = {
    0xCA: ">f",
    0xCB: ">d",
    0xCC: ">B",
    0xCD: ">H",
    0xCE: ">I",
    0xCF: ">Q",
    0xD0: ">b",
    0xD1: ">h",
    0xD2: ">i",
    0xD3: ">q",
}
_SIZED = {
    0xC4: ("bin", 1),
    0xC5: ("bin", 2),
    0xC6: ("bin", 4),
    0xD9: ("str", 1),
    0xDA: ("str", 2),
    0xDB: ("str", 4),
    0xDC: ("array", 2),
    0xDD: ("array", 4),
    0xDE: ("map", 2),
    0xDF: ("map", 4),
}


def _take(view: memoryview, at: int, size: int) -> memoryview:
    if at + size > len(view):
        raise ValueError(f"msgpack value truncated at byte {len(view)}")
    return view[at : at + size]


def _read(view: memoryview, at: int, depth: int, budget: list[int] | None) -> tuple[Any, int]:
    """One value at `at` and where it ends. `budget` (request bodies: see `unpack_request_views`)
    holds the values still allowed, and turns on that function's checks."""
    if depth > 64:
        raise ValueError("msgpack value nested too deep")
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise NotPlain("more values than a body of tensors as bins holds")
    tag = _take(view, at, 1)[0]
    at += 1
    if tag <= 0x7F or tag >= 0xE0:  # positive and negative fixint
        return (tag if tag <= 0x7F else tag - 0x100), at
    if tag in _FIXED:
        return _FIXED[tag], at
    if tag in _NUMBERS:
        fmt = _NUMBERS[tag]
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, _take(view, at, size))[0], at + size
    kind, size, at = _header(view, tag, at)
    return _READERS[kind](view, at, size, depth, budget)


def _header(view: memoryview, tag: int, at: int) -> tuple[str, int, int]:
    """A container's or a string's kind and size, and where its contents start."""
    if 0x80 <= tag <= 0x8F:
        return "map", tag & 0x0F, at
    if 0x90 <= tag <= 0x9F:
        return "array", tag & 0x0F, at
    if 0xA0 <= tag <= 0xBF:
        return "str", tag & 0x1F, at
    if tag in _SIZED:
        kind, width = _SIZED[tag]
        return kind, int.from_bytes(_take(view, at, width), "big"), at + width
    raise ValueError(f"unsupported msgpack type 0x{tag:02x} at byte {at - 1}")


def _read_bin(view: memoryview, at: int, size: int, depth: int, budget: list[int] | None) -> tuple[Any, int]:
    data = _take(view, at, size)
    return (bytes(data) if budget is not None and size < _INLINE_BYTES else data), at + size


def _read_str(view: memoryview, at: int, size: int, depth: int, budget: list[int] | None) -> tuple[Any, int]:
    return str(_take(view, at, size), "utf-8"), at + size


def _read_array(view: memoryview, at: int, size: int, depth: int, budget: list[int] | None) -> tuple[Any, int]:
    items = []
    for _ in range(size):
        item, at = _read(view, at, depth + 1, budget)
        items.append(item)
    if budget is not None and bool in map(type, items):
        raise NotPlain("a boolean inside an array")
    return items, at


def _read_map(view: memoryview, at: int, size: int, depth: int, budget: list[int] | None) -> tuple[Any, int]:
    mapping = {}
    for _ in range(size):
        key, at = _read(view, at, depth + 1, budget)
        if budget is not None and type(key) is not str:
            raise NotPlain("a map key that is not a string")
        mapping[key], at = _read(view, at, depth + 1, budget)
    return mapping, at


_READERS = {"bin": _read_bin, "str": _read_str, "array": _read_array, "map": _read_map}


def tensor(array: np.ndarray) -> dict[str, Any]:
    """An array in the binary tensor form (the array itself is written as bytes by `pack`)."""
    return {"shape": list(array.shape), "dtype": str(array.dtype), "bytes": array}


def array(value: dict[str, Any]) -> np.ndarray:
    """The binary tensor form -> an ndarray viewing the received bytes (read-only)."""
    return np.frombuffer(value["bytes"], dtype=np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"])


VIEW_BYTES = 2**20
"""Request bodies this large are first tried as a few tensors read in place (`unpack_request_views`)."""


def parse_msgpack(body: bytes | memoryview) -> dict[str, Any]:
    """A msgpack map body -> Python values (large `bin`s as views of `body`); 400/422 otherwise."""
    if not body:
        raise BadRequest("request body is empty; send a msgpack map", field="body")
    value = _in_place(body) if len(body) >= VIEW_BYTES else None
    if value is None:
        try:
            value = unpackb(body, list_hook=_no_booleans)
        except BooleanInArray:
            raise InvalidInput(
                "a msgpack boolean stands inside an array; tensors hold numbers and shapes hold integers", field="body"
            ) from None
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"request body is not valid msgpack: {exc}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a msgpack map", field="body", actual=type(value).__name__)
    return value


def _in_place(body: bytes | memoryview) -> dict[str, Any] | None:
    """A big body is, as a rule, a few tensors as bins: read in place, not copied (2 ms for the
    notebook's 23 MB input). None for anything else, which msgpack's own parser then reads, errors included."""
    try:
        value = unpack_request_views(body)
    except NotPlain:
        return None
    return value if isinstance(value, dict) else None


class BooleanInArray(Exception):
    pass


def _no_booleans(items: list) -> list:
    """NumPy would silently read a boolean in a tensor as 1.0 or 0.0 (the JSON reader screens its bytes
    for the same reason). Runs once per msgpack array; the scan itself is C (map over `type`)."""
    if bool in map(type, items):
        raise BooleanInArray
    return items
