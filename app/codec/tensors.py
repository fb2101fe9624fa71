"""Tensors: request forms <-> NumPy arrays, in one vectorized pass, with clear 4xx errors.

Decoding checks sizes against the limits *before* allocating (shape products, base64 lengths),
and never walks elements in Python: NumPy converts nested lists in C. A `random` tensor is drawn
by the `draw` function the caller passes: its numbers are defined by torch's generator
(app.backends.registry.draw_random), and this module imports no backend.
"""

import math
import reprlib
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pybase64

from app.errors import InvalidInput, PayloadTooLarge, ShapeMismatch

DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
}
FLOAT_DTYPES = ("float32", "float64")
ALL_DTYPES = tuple(DTYPES)
NON_FINITE = ("NaN", "Infinity", "-Infinity")
Encoding = Literal["list", "base64", "none", "bytes"]
"""`bytes` keeps the array itself, for msgpack bodies (`app.codec.msgpack`) to write as raw bytes."""
Draw = Callable[[str, tuple[int, ...], int, str], np.ndarray]
"""(distribution, shape, seed, dtype) -> the array `torch.manual_seed(seed); torch.randn(*shape)` gives."""


def check_shape(shape: Any, field: str) -> tuple[int, ...]:
    """A shape is a list of non-negative ints; returns it as a tuple."""
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise InvalidInput(f"{field} must be a list of integers", field=field, actual=_brief(shape))
    if any(d < 0 for d in shape):
        shown = shape if len(shape) <= 16 else _REPR.repr(shape)
        raise InvalidInput(f"{field} has a negative dimension: {shown}", field=field, actual=shown)
    return tuple(shape)


def check_elements(shape: tuple[int, ...], field: str, max_elements: int) -> int:
    """The element count of `shape`, refused (413) above the limit. Zero is allowed: torch computes
    on empty tensors (a batch of 0), and each layer's shape check refuses what torch refuses."""
    count = math.prod(shape)
    if count > max_elements:
        raise PayloadTooLarge(
            f"{field} would have {count} elements (shape {list(shape)}); the limit is {max_elements} "
            "(setting LAYERLAB_MAX_TENSOR_ELEMENTS)",
            field=field,
            limit="max_tensor_elements",
            value=count,
            expected=f"<= {max_elements}",
        )
    return count


def declared_shape(value: Any, field: str, max_depth: int = 64) -> tuple[int, ...] | None:
    """The shape a `random` or `base64` tensor declares, read without decoding anything, so output
    and work limits can be checked before allocating. (`data` is already in memory as parsed JSON;
    its own consistency errors come first.)"""
    if not isinstance(value, dict) or not isinstance(value.get("shape"), list) or "data" in value:
        return None
    shape = check_shape(value["shape"], f"{field}.shape")
    if len(shape) > max_depth:
        raise _too_deep(f"{field}.shape", len(shape), max_depth)
    return shape


def probable_shape(value: Any, field: str, max_depth: int = 64) -> tuple[int, ...]:
    """A tensor's shape without decoding it: declared, or read off a nested list's first elements
    (a ragged list is found when it is decoded). For sizing a request, not for trusting."""
    if isinstance(value, dict):
        if isinstance(value.get("shape"), list):
            return check_shape(value["shape"], f"{field}.shape")
        value = value.get("data")
    if isinstance(value, np.ndarray):  # nested arrays read by checked_tensor
        return value.shape
    shape: list[int] = []
    while isinstance(value, list) and len(shape) <= max_depth:
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _too_deep(field: str, depth: int, max_depth: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{field} has {depth} dimensions (nesting levels); the limit is {max_depth} (setting LAYERLAB_MAX_JSON_DEPTH)",
        field=field,
        limit="max_json_depth",
        value=depth,
        expected=f"<= {max_depth}",
    )


def check_form(value: Any, *, field: str, dtypes: tuple[str, ...] = FLOAT_DTYPES) -> str:
    """The request form of a tensor, checked for everything but its size and its elements: which
    form, its keys, `dtype`, a well-formed `shape`, the payload's type, a random draw's arguments
    (422s). Cheap, so a request is validated whole before any limit is checked (413s come after)
    and before anything is decoded. Returns "nested" (a bare array or number) or the form's key."""
    if isinstance(value, (list, np.ndarray)) or _is_number(value):  # ndarray: a big JSON array (app.codec.json_arrays)
        return "nested"
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{field} must be a JSON array of numbers (a bare number for a 0-d tensor) "
            "or an object with 'data', 'base64', 'bytes' or 'random'",
            field=field,
            actual=type(value).__name__,
        )
    form = _form_key(value, field)
    _check_dtype_and_shape(value, field, dtypes)
    _check_payload(value, form, field)
    return form


FORM_KEYS = {
    "data": {"data", "shape", "dtype"},
    "base64": {"base64", "shape", "dtype"},
    "bytes": {"bytes", "shape", "dtype"},
    "random": {"random", "shape", "seed", "dtype"},
}


def _form_key(value: dict, field: str) -> str:
    """Which of the object forms `value` is; 422 for none, several, or a key the form does not have."""
    forms = [k for k in FORM_KEYS if k in value]
    if len(forms) != 1:
        raise InvalidInput(
            f"{field} needs exactly one of 'data', 'base64', 'bytes' or 'random' (got {forms or sorted(value)})",
            field=field,
        )
    form = forms[0]
    allowed = FORM_KEYS[form]
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidInput(
            f"{field} has unknown keys {unknown} for the '{form}' form; allowed: {sorted(allowed)}",
            field=f"{field}.{unknown[0]}",
        )
    return form


def _check_dtype_and_shape(value: dict, field: str, dtypes: tuple[str, ...]) -> None:
    if "dtype" in value and value["dtype"] not in dtypes:
        dtype = value["dtype"]
        raise InvalidInput(
            f"{field}.dtype must be one of {list(dtypes)}, got {_brief(dtype)!r}",
            field=f"{field}.dtype",
            expected=list(dtypes),
            actual=_brief(dtype),
        )
    if "shape" in value and value["shape"] is not None:
        check_shape(value["shape"], f"{field}.shape")  # a zero size is a shape: each layer refuses what torch refuses


def _check_payload(value: dict, form: str, field: str) -> None:
    """The payload's type for its form; every form but `data` needs a shape."""
    if form == "data":
        if not isinstance(value["data"], (list, np.ndarray)) and not _is_number(value["data"]):
            raise InvalidInput(
                f"{field}.data must be a JSON array (or a number for a 0-d tensor, shape [])",
                field=f"{field}.data",
                actual=type(value["data"]).__name__,
            )
        return
    if value.get("shape") is None:
        raise InvalidInput(f"{field}.shape is required with '{form}'", field=f"{field}.shape")
    if form == "base64" and not isinstance(value["base64"], (str, DecodedBase64)):
        raise InvalidInput(f"{field}.base64 must be a string", field=f"{field}.base64")
    if form == "bytes" and not isinstance(value["bytes"], (bytes, bytearray, memoryview)):
        # memoryview: a big bin read in place (app.codec.msgpack)
        raise InvalidInput(
            f"{field}.bytes must be binary (a msgpack bin; in JSON bodies use 'base64')",
            field=f"{field}.bytes",
            actual=type(value["bytes"]).__name__,
        )
    if form == "random":
        _check_random(value, field)


def _check_random(value: dict, field: str) -> None:
    distribution, seed, dtype = value["random"], value.get("seed", 0), value.get("dtype", "float32")
    if dtype not in FLOAT_DTYPES:
        raise InvalidInput(
            f"{field}.dtype must be one of {list(FLOAT_DTYPES)} for a random draw, got {dtype!r}",
            field=f"{field}.dtype",
            expected=list(FLOAT_DTYPES),
            actual=dtype,
        )
    if distribution not in ("normal", "uniform"):
        raise InvalidInput(
            f"{field}.random must be 'normal' or 'uniform', got {_brief(distribution)!r}",
            field=f"{field}.random",
            expected=["normal", "uniform"],
            actual=_brief(distribution),
        )
    if type(seed) is not int or not -(2**63) <= seed < 2**64:
        raise InvalidInput(
            f"{field}.seed must be an integer in [-2^63, 2^64)", field=f"{field}.seed", actual=_brief(seed)
        )


def decode_tensor(
    value: Any,
    *,
    field: str,
    max_elements: int,
    max_depth: int = 64,
    dtypes: tuple[str, ...] = FLOAT_DTYPES,
    default_dtype: str = "float32",
    draw: Draw | None = None,
) -> np.ndarray:
    """Any request form of a tensor -> a C-contiguous array of one of `dtypes`.

    `default_dtype` applies when the form names none (bare arrays included): parameters take the
    input's dtype, so float64 values sent as bare lists keep their precision. `draw` draws a
    `random` tensor (a caller without one gets a ValueError for that form).
    """
    form = check_form(value, field=field, dtypes=dtypes)
    if form == "nested":
        return _from_nested(value, None, default_dtype, field, max_elements, max_depth)
    dtype = value.get("dtype", default_dtype)
    shape = None
    if value.get("shape") is not None:
        shape = tuple(value["shape"])
        if len(shape) > max_depth:
            raise _too_deep(f"{field}.shape", len(shape), max_depth)
        check_elements(shape, field, max_elements)
    if form == "data":
        return _from_nested(value["data"], shape, dtype, field, max_elements, max_depth)
    assert shape is not None  # check_form: the other forms need one
    if form == "base64":
        return _from_base64(value["base64"], shape, dtype, field)
    if form == "bytes":
        return _from_bytes(value["bytes"], shape, dtype, field)
    if draw is None:
        raise ValueError("decode_tensor was given no `draw` for a random tensor")
    return draw(value["random"], shape, value.get("seed", 0), dtype)  # arguments checked by check_form


def _is_number(value: Any) -> bool:
    """A JSON number: a 0-d tensor (BatchNorm's num_batches_tracked). Booleans are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def checked_tensor(value: Any, *, field: str, dtypes: tuple[str, ...] = FLOAT_DTYPES) -> Any:
    """A request's tensor, validated whole before any limit is checked: its form (`check_form`) and,
    when its values came as nested arrays, the values themselves, which are read into an ndarray
    here (numbers only, not ragged). They are in memory already, as parsed JSON or msgpack, so this
    allocates nothing a limit guards; `decode_tensor` takes the ndarray as it is. Returns `value`,
    its nested arrays replaced by ndarrays."""
    form = check_form(value, field=field, dtypes=dtypes)
    if form == "nested":
        return _checked_values(value, field)
    if form == "data":
        data = _checked_values(value["data"], field)
        return value if data is value["data"] else {**value, "data": data}
    if form == "base64":
        return {**value, "base64": _checked_base64(value["base64"], field)}
    return value


class DecodedBase64(bytes):
    """The bytes of a base64 text `checked_tensor` has read (once: `decode_tensor` takes them as
    they are), with the text's length for messages."""

    chars: int


def _checked_base64(text: str | DecodedBase64, field: str) -> DecodedBase64:
    if isinstance(text, DecodedBase64):
        return text
    if len(text) % 4:  # a wrong length whatever the shape ("" is an empty tensor's)
        raise ShapeMismatch(
            f"{field}.base64 has {len(text)} characters: padded base64 comes in groups of 4",
            field=f"{field}.base64",
            expected="a multiple of 4",
            actual=len(text),
        )
    try:
        decoded = DecodedBase64(pybase64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{field}.base64 is not valid base64: {exc}", field=f"{field}.base64") from None
    decoded.chars = len(text)
    return decoded


PROBED_DEPTH = 64
"""`checked_tensor` leaves arrays nested deeper than this as they are: the depth limit
(LAYERLAB_MAX_JSON_DEPTH, a 413) is `decode_tensor`'s to report."""


def _nesting_depth(data: Any, stop: int) -> int:
    """Depth of a nested list along its first elements, counted up to stop + 1."""
    depth, probe = (data.ndim, None) if isinstance(data, np.ndarray) else (0, data)
    while isinstance(probe, list) and probe:
        depth, probe = depth + 1, probe[0]
        if depth > stop:
            break
    return depth


def _checked_values(data: Any, field: str) -> Any:
    if not isinstance(data, list) or _nesting_depth(data, PROBED_DEPTH) > PROBED_DEPTH:
        return data
    return _numbers_array(data, field)


def _numbers_array(data: list | np.ndarray | int | float, field: str) -> np.ndarray:
    try:
        raw = data if isinstance(data, np.ndarray) else np.array(data)
    except (ValueError, TypeError) as exc:
        raise ShapeMismatch(
            f"{field} is a ragged nested array: every row at one depth must have the same length ({exc})", field=field
        ) from None
    return _numbers_only(raw, data, field)


def _from_nested(
    data: list | np.ndarray | int | float,
    shape: tuple[int, ...] | None,
    dtype: str,
    field: str,
    max_elements: int,
    max_depth: int,
) -> np.ndarray:
    if _nesting_depth(data, max_depth) > max_depth:
        raise PayloadTooLarge(
            f"{field} is nested more than {max_depth} deep (setting LAYERLAB_MAX_JSON_DEPTH)",
            field=field,
            limit="max_json_depth",
            expected=f"<= {max_depth}",
            actual=f"> {max_depth}",
        )
    raw = _numbers_array(data, field)
    if raw.size > max_elements:
        check_elements(raw.shape, field, max_elements)
    if shape is not None:
        if raw.ndim == 1 and len(shape) != 1:
            if raw.size != math.prod(shape):
                raise ShapeMismatch(
                    f"{field}.data has {raw.size} values but shape {list(shape)} needs {math.prod(shape)}",
                    field=f"{field}.data",
                    expected=math.prod(shape),
                    actual=raw.size,
                )
            raw = raw.reshape(shape)
        elif raw.size == 0 and raw.ndim and raw.shape[-1] == 0 and raw.shape == shape[: raw.ndim]:
            # An empty tensor nests only down to its first zero dimension: torch.empty(2, 0, 4).tolist()
            # is [[], []], which is how the list encoding writes it back.
            raw = raw.reshape(shape)
        elif raw.shape != shape:
            raise ShapeMismatch(
                f"{field}.data is nested as {list(raw.shape)} but shape says {list(shape)}",
                field=f"{field}.shape",
                expected=list(raw.shape),
                actual=list(shape),
            )
    target = DTYPES[dtype].newbyteorder("=")
    # asarray(order="C"), not ascontiguousarray: that one turns a 0-d array into shape (1,).
    if raw.dtype == target:
        return np.asarray(raw, order="C")
    with np.errstate(over="ignore"):  # float64 values beyond float32's range become +-inf, as in torch.tensor
        return np.asarray(raw, dtype=target, order="C")


def _numbers_only(raw: np.ndarray, data: Any, field: str) -> np.ndarray:
    """Reject booleans, nulls and strings (other than the non-finite tokens) in a tensor."""
    kind = raw.dtype.kind
    if kind in "iuf":
        return raw
    if kind == "b":
        raise InvalidInput(f"{field} holds booleans; tensors hold numbers", field=field, actual="boolean")
    if kind == "U":
        # Rare path: strings are allowed only as "NaN", "Infinity", "-Infinity".
        objects = np.array(data, dtype=object)
        is_str = np.frompyfunc(lambda v: isinstance(v, str), 1, 1)(objects).astype(bool)
        bad = is_str & ~np.isin(raw, NON_FINITE)
        not_number = ~is_str & ~np.frompyfunc(lambda v: type(v) in (int, float), 1, 1)(objects).astype(bool)
        if bad.any() or not_number.any():
            where = tuple(int(i) for i in np.argwhere(bad | not_number)[0])
            raise InvalidInput(
                f"{field} holds {_brief(objects[where])!r} at index {list(where)}; tensors hold numbers "
                '(non-finite values as the strings "NaN", "Infinity", "-Infinity")',
                field=field,
                actual=_brief(objects[where]),
            )
        return raw.astype(np.float64)
    if kind == "O":
        if raw.ndim == 0 or raw.size == 0:
            raise InvalidInput(f"{field} must be a non-empty array of numbers", field=field)
        raise InvalidInput(
            f"{field} holds null or non-numeric values (or integers beyond 64 bits); tensors hold numbers", field=field
        )
    raise InvalidInput(f"{field} holds values of type {raw.dtype}; tensors hold numbers", field=field)


def _from_base64(text: str | DecodedBase64, shape: tuple[int, ...], dtype: str, field: str) -> np.ndarray:
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    expected_chars = 4 * math.ceil(nbytes / 3)
    chars = text.chars if isinstance(text, DecodedBase64) else len(text)
    if chars != expected_chars:
        raise ShapeMismatch(
            f"{field}.base64 has {chars} characters; shape {list(shape)} of {dtype} is {nbytes} bytes, "
            f"which is {expected_chars} base64 characters",
            field=f"{field}.base64",
            expected=expected_chars,
            actual=chars,
        )
    return _from_bytes(_checked_base64(text, field), shape, dtype, field, form="base64", has="decodes to")


def _from_bytes(
    raw: bytes | bytearray | memoryview,
    shape: tuple[int, ...],
    dtype: str,
    field: str,
    form: str = "bytes",
    has: str = "has",
) -> np.ndarray:
    """Raw bytes (a msgpack `bin`, or what `form` base64 decodes to), read in place: no copy on a
    little-endian machine. Their length must be the shape's."""
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if len(raw) != nbytes:
        raise ShapeMismatch(
            f"{field}.{form} {has} {len(raw)} bytes; shape {list(shape)} of {dtype} needs {nbytes}",
            field=f"{field}.{form}",
            expected=nbytes,
            actual=len(raw),
        )
    return np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape).astype(DTYPES[dtype].newbyteorder("="), copy=False)


def encode_tensor(array: np.ndarray, encoding: Encoding) -> dict[str, Any]:
    """An array -> its response form. `data` stays an ndarray: orjson writes it natively."""
    array = np.asarray(array, order="C")  # keeps 0-d arrays 0-d
    out: dict[str, Any] = {"shape": list(array.shape), "dtype": dtype_name(array.dtype)}
    if encoding == "base64":
        out["base64"] = pybase64.b64encode(array.astype(array.dtype.newbyteorder("<"), copy=False).data).decode("ascii")
    elif encoding == "none":
        out["summary"] = summarize(array)
    elif encoding == "bytes":
        out["bytes"] = array
    else:
        out["data"] = to_json_values(array)
    return out


_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()} | {
    dtype.newbyteorder(">"): name for name, dtype in DTYPES.items()
}
"""str(dtype) runs Python code in NumPy (~5 us); a response names a few dtypes."""


def dtype_name(dtype: np.dtype) -> str:
    """'float32' for float32 (either byte order), as str(dtype) says, without its ~5 us of Python."""
    return _DTYPE_NAMES.get(dtype) or str(dtype)


def to_json_values(array: np.ndarray) -> Any:
    """An ndarray that orjson can write; non-finite floats become "NaN"/"Infinity"/"-Infinity"."""
    if array.ndim == 0:
        return json_scalar(array.item())
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return array
    values = array.astype(object)
    values[np.isnan(array)] = "NaN"
    values[np.isposinf(array)] = "Infinity"
    values[np.isneginf(array)] = "-Infinity"
    return values.tolist()


def summarize(array: np.ndarray) -> dict[str, Any]:
    """min, max, mean and std (unbiased, like torch.std) of the whole tensor; all NaN for an empty
    one (torch.mean of an empty tensor is NaN, and it has no min or max)."""
    if array.size == 0:
        return dict.fromkeys(("min", "max", "mean", "std"), "NaN")
    values = array.astype(np.float64, copy=False)
    with np.errstate(all="ignore"):
        stats = {
            "min": values.min(),
            "max": values.max(),
            "mean": values.mean(),
            "std": values.std(ddof=1) if values.size > 1 else float("nan"),
        }
    return {k: json_scalar(float(v)) for k, v in stats.items()}


def json_scalar(v: Any) -> Any:
    """A number for a JSON body: non-finite floats as "NaN", "Infinity", "-Infinity" (JSON has no such tokens)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


_REPR = reprlib.Repr()  # for echoing user values: bounded in length and depth (100,000-deep lists too)
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 60, 60


_BRIEF_BYTES = 40


def _brief(value: Any) -> Any:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool) and len(_REPR.repr(value)) <= 80:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        # A misplaced msgpack bin: the same text whether it came as bytes or (a big body) as a view,
        # and never the repr of a whole 30 MB bin.
        value = bytes(value[:_BRIEF_BYTES])
    return _REPR.repr(value)[:80]
