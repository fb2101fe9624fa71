"""JSON request bodies: orjson, with the guards orjson leaves to us.

- no NaN or Infinity tokens (JSON has none; orjson refuses them, and the error says how to write them);
- nesting: orjson refuses bodies nested deeper than 1024; tensors are refused deeper than
  `max_json_depth` (app.codec.tensors);
- no boolean inside an array: NumPy would silently read true as 1.0;
- no repeated key in one object: orjson keeps the last one silently, and a body that says two
  things is refused.

Big bodies of number arrays are read by simdjson straight into NumPy (app.codec.json_arrays);
both guards read the text through the one scanner (app.codec.json_scanner).
"""

import json
import re
from collections.abc import Iterator
from itertools import islice
from typing import Any

import orjson

from app.codec import json_arrays
from app.codec.json_scanner import count_keys, outside_strings
from app.errors import BadRequest, InvalidInput, PayloadTooLarge

ORJSON_MAX_DEPTH = 1024
"""orjson's own nesting limit (arrays and objects), fixed in the library."""
BOOLEAN_SCAN_STRINGS = 1000
"""After this many strings (a body of many keys) the boolean guard reads the rest with a regex."""
# A JSON true/false that is an array element: NumPy would silently turn it into 1.0/0.0.
_BOOL_IN_ARRAY = re.compile(rb"[\[,]\s*(true|false)\s*[,\]]")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object body -> Python values (big number arrays as ndarrays); 400/413/422 otherwise."""
    if not body or body.isspace():  # not body.strip(): that copies the whole body
        raise BadRequest("request body is empty; send a JSON object", field="body")
    try:
        # Big tensor bodies: number arrays straight to NumPy (None: orjson reads it, as it would anyway).
        value = json_arrays.loads(body)
        if value is None:
            value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from None
    if (at := boolean_in_array(body)) is not None:
        raise InvalidInput(
            f"a JSON boolean stands inside an array at byte {at + 1}; tensors hold numbers and shapes hold integers",
            field="body",
        )
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", field="body", actual=type(value).__name__)
    refuse_duplicate_keys(body, value)
    return value


def _not_json(exc: orjson.JSONDecodeError) -> BadRequest | PayloadTooLarge:
    if str(exc).startswith("depth limit exceeded"):
        return PayloadTooLarge(
            f"request body nests arrays or objects more than {ORJSON_MAX_DEPTH} deep (the JSON parser's "
            "limit; tensors may nest at most LAYERLAB_MAX_JSON_DEPTH deep)",
            field="body",
            limit="max_json_depth",
            expected=f"<= {ORJSON_MAX_DEPTH}",
            actual=f"> {ORJSON_MAX_DEPTH}",
        )
    return BadRequest(
        f"request body is not valid JSON: {exc} (JSON has no NaN or Infinity tokens; "
        'write them as the strings "NaN", "Infinity", "-Infinity")',
        field="body",
    )


def boolean_in_array(body: bytes) -> int | None:
    """Offset of a true/false that is an array element, else None.

    Outside strings a "t" or "f" can only start a true/false literal, so each stretch outside
    strings is searched with memchr calls (find), and each literal's neighbours looked at: a few
    ms for a 60 MB body of numbers or a 30 MB base64 string, where a regex over the whole body
    runs ~100 MB/s.
    """
    if len(body) < 16384 and b"true" not in body and b"false" not in body:
        return None  # the usual small body; on big ones these two searches alone would cost more
    resume = 0
    for start, end in islice(outside_strings(body), BOOLEAN_SCAN_STRINGS + 1):
        if (at := _literal_in_array(body, start, end)) is not None:
            return at
        resume = end
    if resume == len(body):
        return None
    match = _BOOL_IN_ARRAY.search(body, resume)
    return match.start(1) if match else None


def _literal_in_array(body: bytes, start: int, end: int) -> int | None:
    for letter, length in ((b"t", 4), (b"f", 5)):
        at = body.find(letter, start, end)
        while at != -1:
            if _neighbour(body, at, -1) in (b"[", b",") and _neighbour(body, at + length - 1, 1) in (b",", b"]"):
                return at
            at = body.find(letter, at + 1, end)
    return None


def _neighbour(body: bytes, at: int, step: int) -> bytes:
    """The first non-whitespace byte before (step -1) or after (step 1) `at`; b"" at either end."""
    span = 16
    while True:
        if step < 0:
            window = body[max(0, at - span) : at].rstrip()
            if window or span >= at:
                return window[-1:]
        else:
            window = body[at + 1 : at + 1 + span].lstrip()
            if window or at + 1 + span >= len(body):
                return window[:1]
        span *= 4


def refuse_duplicate_keys(body: bytes, value: Any) -> None:
    """A repeated key in one object is a 400 naming it.

    Fast path: count the key tokens in the text and the keys in the parsed objects; equal counts
    mean no duplicates. Only a body whose counts differ is parsed again, by the stdlib, to find
    the key.
    """
    keys_in_text = count_keys(body)
    if _count_keys(value, keys_in_text) >= keys_in_text:
        return

    def reject(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(
                    f"request body repeats the key {key[:100]!r} in one object; each key may appear once",
                    field=key[:100],
                    actual="duplicate key",
                )
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=reject)
    except RecursionError:  # the stdlib parser recurses; orjson took up to 1024 levels
        raise PayloadTooLarge(
            "request body nests too deep to check its keys (tensors may nest at most LAYERLAB_MAX_JSON_DEPTH deep)",
            field="body",
            limit="max_json_depth",
        ) from None


def _count_keys(value: Any, enough: int) -> int:
    """Keys in all objects of `value`, objects first, stopping at `enough`. Lists whose first
    element is a number are not walked (tensor rows): a dict hiding behind a number only makes
    the count low, which sends the body to the exact check."""
    count, objects, lists = 0, [value], list[list[Any]]()
    while objects or lists:
        if objects:
            obj = objects.pop()
            count += len(obj)
            if count >= enough:
                return count
            children: Iterator[Any] = iter(obj.values())
        else:
            children = iter(lists.pop())
        for child in children:
            if isinstance(child, dict):
                objects.append(child)
            elif isinstance(child, list) and child and isinstance(child[0], (dict, list)):
                lists.append(child)
    return count
