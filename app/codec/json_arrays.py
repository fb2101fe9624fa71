"""Big JSON bodies: nested number arrays go straight to NumPy, without a Python float per number.

orjson makes one Python float per number (5.76 M of them for the notebook's Conv2d input, ~0.5 s
of CPU here, then ~0.1 s more for np.array to collect them). simdjson's parser copies a homogeneous
number array into a buffer of doubles instead: ~0.2 s for the same body.

`loads` only answers when its result is exactly what orjson + np.array would give; for anything
else it returns None and the caller uses orjson, so values and errors never depend on the path:
- an array of >= MIN_ELEMENTS numbers must be regular (every row at a depth the same length) and
  hold nothing but numbers: as_buffer refuses strings ("NaN"), booleans and nulls, and the count
  of "[" outside strings in the body must equal the arrays found (a nested [x] hidden among the
  numbers would otherwise be flattened unseen);
- numbers at or beyond 2**53 in magnitude and negative zeros fall back too: there an integer token
  read as a double could differ from orjson's int in its last bit or in its sign.
"""

import math
from typing import Any

import numpy as np

from app.codec.json_scanner import outside_strings

try:
    import simdjson
except ImportError:  # pragma: no cover - a declared dependency; without it bodies take orjson's path
    simdjson = None  # type: ignore[assignment]

MIN_BYTES = 1 << 20
"""Bodies smaller than this go to orjson: there is nothing to gain."""
MIN_ELEMENTS = 4096
"""Arrays with fewer numbers become Python lists, as orjson would make them."""
MAX_STRINGS = 1000
"""A body with more strings than this (keys included) is not a tensor body: orjson reads it."""


class _Fallback(Exception):
    pass


def loads(body: bytes) -> Any | None:
    """The body's value with every big number array as a float64 ndarray; None: use orjson."""
    if simdjson is None or len(body) < MIN_BYTES:
        return None
    brackets = _brackets_outside_strings(body)
    if brackets is None:
        return None
    try:
        document = simdjson.Parser().parse(body)
    except (ValueError, TypeError, RuntimeError):  # not JSON or not in simdjson's limits: orjson will say
        return None
    found = [0]
    try:
        value = _convert(document, found)
    except _Fallback:
        return None
    finally:
        del document  # the parser's buffers go with the last proxy
    return value if found[0] == brackets else None


def _convert(value: Any, found: list[int]) -> Any:
    if isinstance(value, simdjson.Object):
        keys = list(value.keys())
        if len(set(keys)) != len(keys):  # orjson keeps the last of duplicate keys, simdjson the first
            raise _Fallback
        return {key: _convert(value[key], found) for key in keys}
    if isinstance(value, simdjson.Array):
        shape = _regular_shape(value)
        if shape is not None and math.prod(shape) >= MIN_ELEMENTS:
            return _numbers(value, shape, found)
        items = value.as_list()
        found[0] += _count_lists(items)
        return items
    return value


def _regular_shape(array: Any) -> tuple[int, ...] | None:
    """The shape if every row at each depth has the same length (first elements decide the depth)."""
    shape, probe = [], array
    while isinstance(probe, simdjson.Array):
        shape.append(len(probe))
        if not len(probe):
            break
        probe = probe[0]
    level = [array]
    for size in shape[1:]:  # each depth's rows: Python touches rows, never the numbers
        rows = [row for parent in level for row in parent]
        if not all(isinstance(row, simdjson.Array) and len(row) == size for row in rows):
            return None
        level = rows
    return tuple(shape)


def _numbers(array: Any, shape: tuple[int, ...], found: list[int]) -> np.ndarray:
    try:
        flat = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # strings, booleans, nulls among the numbers
        raise _Fallback from None
    if flat.size != math.prod(shape):
        raise _Fallback
    with np.errstate(invalid="ignore"):
        if (np.abs(flat).max(initial=0.0) >= 2.0**53) or np.signbit(flat[flat == 0]).any():
            raise _Fallback
    found[0] += sum(math.prod(shape[:depth]) for depth in range(len(shape)))  # 1 + rows at each depth
    return flat.reshape(shape)


def _count_lists(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(_count_lists(item) for item in value if isinstance(item, (list, dict)))
    if isinstance(value, dict):
        return sum(_count_lists(item) for item in value.values() if isinstance(item, (list, dict)))
    return 0


def _brackets_outside_strings(body: bytes) -> int | None:
    """How many "[" stand outside JSON strings: the body's arrays. None after MAX_STRINGS strings."""
    count = 0
    for strings, (start, end) in enumerate(outside_strings(body)):
        if strings > MAX_STRINGS:
            return None
        count += body.count(b"[", start, end)
    return count
