"""The Open Inference Protocol (V2, KServe / Triton) as a codec: infer requests in, responses out.

A V2 infer request is a JSON header, optionally followed by raw tensor bytes (the binary tensor
data extension; the header's length is in `Inference-Header-Content-Length`):

    {"id": "42", "parameters": {"config": {"in_features": 4, "out_features": 1}, "seed": 0},
     "inputs": [{"name": "input", "shape": [10, 4], "datatype": "FP32", "data": [...]},
                {"name": "weight", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
     "outputs": [{"name": "output", "parameters": {"binary_data": true}}]}

`read_infer_request` turns it into the options `/v1/layers/{kind}` runs (`LayerRequestOptions`,
tensors as NumPy arrays: binary ones are views of the received body, never copied), and
`infer_response` turns the tensors a layer produced into a V2 response: JSON with flat `data`, or
a JSON header followed by each binary output's little-endian bytes, as separate pieces (the
arrays' own memory; small ones are gathered into one piece).

Sizes are checked before anything is allocated: a declared shape against the element limit, each
`binary_data_size` against its shape and datatype, and their sum against the bytes received.
Errors are `app.errors` classes; the routes write them as the protocol's `{"error": message}`.
Imports neither torch nor FastAPI itself (the error classes come from app.errors).
"""

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from app.codec.tensors import _brief, check_elements, check_shape, decode_tensor, to_json_values
from app.errors import BadRequest, InvalidInput, ShapeMismatch, validation_error
from app.schemas.requests import LayerRequestOptions
from app.shared_memory import SharedMemoryRegistry

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
JSON_MEDIA_TYPE = "application/json"
DATATYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT64": np.dtype("<i8")}
FLOAT_DATATYPES = ("FP32", "FP64")
_DATATYPE_OF = {
    np.dtype(dtype).newbyteorder(order): name for name, dtype in DATATYPES.items() for order in ("<", ">", "=")
}
OPTION_PARAMETERS = ("config", "backend", "seed", "training", "compare", "device")
"""Request `parameters` that become the layer options (`config` an object or a JSON string)."""
REQUEST_PARAMETERS = (*OPTION_PARAMETERS, "binary_data_output")
SHARED_MEMORY_PARAMETERS = ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")
"""An input's or output's parameters naming bytes of a registered region (the shared-memory extension)."""
_INLINE_BYTES = 64 * 1024
"""Binary outputs smaller than this are gathered into one piece (fewer, larger writes)."""


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 for a dimension that varies (every one here: they follow the config and the input)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """What a model (one layer kind) takes and returns, by tensor name."""

    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]

    def input_named(self, name: str) -> TensorMetadata | None:
        return next((tensor for tensor in self.inputs if tensor.name == name), None)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None
    """None: as `binary_data_output` says."""
    shared: memoryview | None = None
    """The region's bytes to write the output into (the shared-memory extension), else None."""
    shared_parameters: dict[str, Any] | None = None
    """The request's shared_memory_* parameters, echoed in the response."""


@dataclass
class InferRequest:
    id: str | None
    options: LayerRequestOptions
    """config, input (`{"data": ndarray, "shape", "dtype"}`) and state tensors (ndarrays), seed, backend,
    training, compare, device."""
    outputs: list[RequestedOutput] | None
    """The request's `outputs`, or None for every output the layer produces."""
    binary_output: bool
    """`binary_data_output`: outputs not named in `outputs` (or all, without it) come back binary."""


@dataclass
class InferResponse:
    chunks: list[bytes | memoryview]
    """The body in pieces: the JSON header, then the binary outputs' bytes."""
    header_length: int | None
    """The JSON header's length when binary outputs follow it (`Inference-Header-Content-Length`)."""
    media_type: str


# ---------------------------------------------------------------------------------------------
# Requests


def header_length(value: str | None, body_size: int) -> int | None:
    """`Inference-Header-Content-Length` as an int no longer than the body; None when absent."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or int(text) > body_size or int(text) == 0:
        raise BadRequest(
            f"{HEADER_LENGTH} must be the length in bytes of the JSON header, between 1 and the "
            f"body's {body_size} bytes; got {_brief(value)!r}",
            field=HEADER_LENGTH,
            expected=f"1..{body_size}",
            actual=_brief(value),
        )
    return int(text)


def split_body(body: bytes | memoryview, json_length: int | None) -> tuple[bytes, memoryview]:
    """(the JSON header, the binary section after it). The header is copied (it is small when a
    binary section follows); the binary section stays a view of the body."""
    view = memoryview(body)
    if json_length is None:
        return (body if isinstance(body, bytes) else view.tobytes()), view[0:0]
    return view[:json_length].tobytes(), view[json_length:]


def read_infer_request(
    header: Any,
    binary: memoryview,
    signature: ModelSignature,
    *,
    max_elements: int,
    max_depth: int,
    shared_memory: SharedMemoryRegistry | None = None,
) -> InferRequest:
    """A parsed V2 header and the binary section after it -> the layer options. Inputs and outputs
    may name bytes of a region registered with `shared_memory` (inputs are read in place)."""
    if not isinstance(header, dict):
        raise InvalidInput("the inference request must be a JSON object", field="body", actual=type(header).__name__)
    unknown = sorted(set(header) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise InvalidInput(
            f"the inference request has an unknown key {unknown[0][:100]!r}; it takes "
            "'id', 'parameters', 'inputs' and 'outputs'",
            field=unknown[0][:100],
        )
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, got {_brief(request_id)!r}", field="id", actual=_brief(request_id))
    parameters = _parameters(header.get("parameters", {}), "the request's 'parameters'")
    unknown = sorted(set(parameters) - set(REQUEST_PARAMETERS))
    if unknown:
        raise InvalidInput(
            f"request parameter {unknown[0][:100]!r} is not supported; the request parameters are "
            f"{list(REQUEST_PARAMETERS)}",
            field=f"parameters.{unknown[0][:100]}",
            expected=list(REQUEST_PARAMETERS),
            actual=unknown[0][:100],
        )
    if "config" not in parameters:
        raise InvalidInput(
            "request parameter 'config' is required: the layer's constructor arguments as a JSON "
            'object or a JSON string, e.g. {"in_features": 4, "out_features": 1}',
            field="parameters.config",
        )
    tensors = _read_inputs(header.get("inputs"), binary, signature, max_elements, max_depth, shared_memory)
    options = {name: parameters[name] for name in OPTION_PARAMETERS if name in parameters}
    options["config"] = _config(options["config"])
    state = {name: array for name, array in tensors.items() if name != "input"}  # they take the input's dtype
    x = tensors["input"]
    # The `data` form with its dtype: a bare array would be read as /v1's default, float32.
    layer_input = {"data": x, "shape": list(x.shape), "dtype": str(x.dtype.newbyteorder("="))}
    try:
        layer_options = LayerRequestOptions.model_validate({**options, "input": layer_input, "parameters": state})
    except ValidationError as exc:
        raise validation_error(exc, prefix="parameters") from None
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise InvalidInput(
            f"request parameter 'binary_data_output' must be true or false, got {_brief(binary_output)!r}",
            field="parameters.binary_data_output",
        )
    outputs = _requested_outputs(header.get("outputs"), signature, shared_memory)
    return InferRequest(request_id, layer_options, outputs, binary_output)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object, got {type(value).__name__}", actual=type(value).__name__)
    return value


def _config(value: Any) -> Any:
    """`config` as given: an object, or a JSON string holding one (V2 parameter values are scalars)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                f"request parameter 'config' is a string but not JSON: {exc}", field="parameters.config"
            ) from None
    if not isinstance(value, dict):
        raise InvalidInput(
            "request parameter 'config' must be a JSON object of the layer's constructor "
            f"arguments (or a string holding one), got {type(value).__name__}",
            field="parameters.config",
            actual=type(value).__name__,
        )
    return value


def _read_inputs(
    inputs: Any,
    binary: memoryview,
    signature: ModelSignature,
    max_elements: int,
    max_depth: int,
    shared_memory: SharedMemoryRegistry | None,
) -> dict[str, np.ndarray]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors, one named 'input'", field="inputs")
    described = [
        _describe_input(i, item, signature, max_elements, max_depth, shared_memory) for i, item in enumerate(inputs)
    ]
    _check_together(described, binary, signature)
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for d in described:
        if d.binary_size is not None:
            part = binary[offset : offset + d.binary_size]
            offset += d.binary_size
            tensors[d.name] = np.frombuffer(part, dtype=DATATYPES[d.datatype]).reshape(d.shape)
        elif d.shared is not None:  # the mapping itself: no copy
            tensors[d.name] = np.frombuffer(d.shared, dtype=DATATYPES[d.datatype]).reshape(d.shape)
        else:
            tensors[d.name] = _from_data(d, max_elements, max_depth)
    return tensors


def _check_together(described: list["_Described"], binary: memoryview, signature: ModelSignature) -> None:
    """What the inputs must satisfy together: unique names, an `input`, one float datatype, and
    binary sizes that add up to the bytes after the JSON header."""
    names = [d.name for d in described]
    for name in names:
        if names.count(name) > 1:
            raise InvalidInput(f"input {name!r} is given more than once", field=f"inputs.{name}")
    if "input" not in names:
        raise InvalidInput(
            f"no input named 'input'; this model takes {[t.name for t in signature.inputs]}",
            field="inputs",
            expected="input",
            actual=names,
        )
    floats = {d.datatype for d in described if d.datatype in FLOAT_DATATYPES}
    if len(floats) > 1:
        input_type = next(d.datatype for d in described if d.name == "input")
        other = next(d for d in described if d.datatype in FLOAT_DATATYPES and d.datatype != input_type)
        raise InvalidInput(
            f"input {other.name!r} is {other.datatype} but 'input' is {input_type}; a layer's "
            "tensors share one floating-point datatype",
            field=f"inputs.{other.name}.datatype",
            expected=input_type,
            actual=other.datatype,
        )
    declared = sum(d.binary_size for d in described if d.binary_size is not None)
    if declared != len(binary):
        raise BadRequest(
            f"the inputs' binary_data_size add up to {declared} bytes, but {len(binary)} bytes follow "
            f"the JSON header ({HEADER_LENGTH})",
            field="binary_data_size",
            expected=declared,
            actual=len(binary),
        )


@dataclass
class _Described:
    name: str
    datatype: str
    shape: tuple[int, ...]
    binary_size: int | None
    data: Any
    shared: memoryview | None = None


def _describe_input(
    index: int,
    item: Any,
    signature: ModelSignature,
    max_elements: int,
    max_depth: int,
    shared_memory: SharedMemoryRegistry | None,
) -> _Described:
    """One entry of `inputs`, checked against the model and the limits; its data not yet read."""
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise InvalidInput(
            f"{where} must be a JSON object with name, shape, datatype and data",
            field=where,
            actual=type(item).__name__,
        )
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"{where}.name must be a string, got {_brief(name)!r}", field=f"{where}.name")
    where = f"input {name[:100]!r}"
    unknown = sorted(set(item) - {"name", "shape", "datatype", "parameters", "data"})
    if unknown:
        raise InvalidInput(
            f"{where} has an unknown key {unknown[0][:100]!r}; an input takes name, shape, datatype, "
            "parameters and data",
            field=f"inputs.{name[:100]}.{unknown[0][:100]}",
        )
    metadata = signature.input_named(name)
    if metadata is None:
        raise InvalidInput(
            f"{where} is not an input of this model; it takes {[t.name for t in signature.inputs]}",
            field=f"inputs.{name[:100]}",
            expected=[t.name for t in signature.inputs],
            actual=name[:100],
        )
    datatype = item.get("datatype")
    allowed = list(FLOAT_DATATYPES) if metadata.datatype in FLOAT_DATATYPES else [metadata.datatype]
    if datatype not in allowed:
        raise InvalidInput(
            f"{where} has datatype {_brief(datatype)!r}; it must be {' or '.join(allowed)}",
            field=f"inputs.{name}.datatype",
            expected=allowed,
            actual=_brief(datatype),
        )
    if "shape" not in item:
        raise InvalidInput(f"{where} needs a shape", field=f"inputs.{name}.shape")
    shape = check_shape(item["shape"], f"inputs.{name}.shape")
    if len(shape) > max_depth:
        raise InvalidInput(
            f"{where} has {len(shape)} dimensions; at most {max_depth} are accepted (setting LAYERLAB_MAX_JSON_DEPTH)",
            field=f"inputs.{name}.shape",
        )
    check_elements(shape, f"inputs.{name}", max_elements)  # before a byte of it is read
    parameters = _known_parameters(item, ("binary_data_size", *SHARED_MEMORY_PARAMETERS), where, f"inputs.{name}")
    needed = math.prod(shape) * DATATYPES[datatype].itemsize
    shared = _shared_bytes(parameters, needed, shared_memory, where, f"inputs.{name}")
    if shared is not None:
        if "data" in item or "binary_data_size" in parameters:
            raise InvalidInput(
                f"{where} is in shared memory (shared_memory_region) and has 'data' or binary_data_size too; send one",
                field=f"inputs.{name}.data",
            )
        return _Described(name, datatype, shape, None, None, shared)
    binary_size = parameters.get("binary_data_size")
    if binary_size is None:
        if "data" not in item:
            raise InvalidInput(
                f"{where} has neither 'data' nor parameters.binary_data_size", field=f"inputs.{name}.data"
            )
        return _Described(name, datatype, shape, None, item["data"])
    if "data" in item:
        raise InvalidInput(
            f"{where} has both 'data' and parameters.binary_data_size; send one", field=f"inputs.{name}.data"
        )
    if type(binary_size) is not int or binary_size != needed:
        raise ShapeMismatch(
            f"{where} has binary_data_size {_brief(binary_size)}; shape {list(shape)} of {datatype} is {needed} bytes",
            field=f"inputs.{name}.parameters.binary_data_size",
            expected=needed,
            actual=_brief(binary_size),
        )
    return _Described(name, datatype, shape, binary_size, None)


def _known_parameters(item: dict[str, Any], known: tuple[str, ...], where: str, field: str) -> dict[str, Any]:
    """An input's or output's `parameters`, each one a parameter it takes."""
    parameters = _parameters(item.get("parameters", {}), f"{where}'s parameters")
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        message = f"{where} has parameter {unknown[0][:100]!r}, which is not supported; it takes {list(known)}"
        raise InvalidInput(message, field=f"{field}.parameters", expected=list(known), actual=unknown[0][:100])
    return parameters


def _shared_bytes(
    parameters: dict[str, Any], needed: int | None, shared_memory: SharedMemoryRegistry | None, where: str, field: str
) -> memoryview | None:
    """The region bytes a tensor's shared_memory_* parameters name (exactly `needed` bytes, unless
    None: an output's size is known once computed); None without those parameters."""
    if "shared_memory_region" not in parameters:
        given = [name for name in SHARED_MEMORY_PARAMETERS if name in parameters]
        if given:
            raise InvalidInput(
                f"{where} has {given[0]} but no shared_memory_region", field=f"{field}.parameters.shared_memory_region"
            )
        return None
    if shared_memory is None:
        raise InvalidInput(f"{where}: shared memory is not available here", field=f"{field}.parameters")
    byte_size = parameters.get("shared_memory_byte_size")
    if needed is not None and byte_size is not None and (type(byte_size) is not int or byte_size != needed):
        raise ShapeMismatch(
            f"{where} has shared_memory_byte_size {_brief(byte_size)}; its tensor is {needed} bytes",
            field=f"{field}.parameters.shared_memory_byte_size",
            expected=needed,
            actual=_brief(byte_size),
        )
    return shared_memory.tensor_view(parameters, where)


def _from_data(d: _Described, max_elements: int, max_depth: int) -> np.ndarray:
    """JSON `data`, flat (row-major) or nested as the shape, -> an array of the declared datatype."""
    field = f"inputs.{d.name}"
    data = d.data
    if not isinstance(data, (list, np.ndarray)) and not (isinstance(data, (int, float)) and not isinstance(data, bool)):
        raise InvalidInput(
            f"input {d.name!r}: 'data' must be a JSON array of numbers, got {type(data).__name__}",
            field=f"{field}.data",
            actual=type(data).__name__,
        )
    # Integers come in as float64 first so that 1.5 is refused rather than truncated.
    dtype = "float64" if d.datatype == "INT64" else str(DATATYPES[d.datatype].newbyteorder("="))
    count = math.prod(d.shape)
    flat = (
        isinstance(data, (list, np.ndarray))
        and len(data) == count
        and (not d.shape or len(d.shape) > 1)
        and (len(data) == 0 or not isinstance(data[0], (list, np.ndarray)))
    )
    if isinstance(data, list) and len(d.shape) >= 1 and len(data) != d.shape[0] and not flat:
        raise ShapeMismatch(
            f"input {d.name!r} has shape {list(d.shape)}, so 'data' needs {count} values (flat) or "
            f"{d.shape[0]} rows (nested); it has {len(data)} entries",
            field=f"{field}.data",
            expected=list(d.shape),
            actual=len(data),
        )
    array = decode_tensor(
        {"data": data, "shape": list(d.shape), "dtype": dtype},
        field=field,
        max_elements=max_elements,
        max_depth=max_depth,
        dtypes=(dtype,),
        default_dtype=dtype,
    )
    if d.datatype == "INT64":
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise InvalidInput(f"input {d.name!r} is INT64 but its data holds non-integers", field=f"{field}.data")
        array = array.astype(np.int64)
    return array


def _requested_outputs(
    outputs: Any, signature: ModelSignature, shared_memory: SharedMemoryRegistry | None
) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    known = [t.name for t in signature.outputs]
    if not isinstance(outputs, list):
        raise InvalidInput('\'outputs\' must be a list of {"name": ..., "parameters": {...}}', field="outputs")
    requested: list[RequestedOutput] = []
    for index, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a 'name'", field=f"outputs[{index}]")
        name = item["name"]
        if name not in known:
            raise InvalidInput(
                f"output {name[:100]!r} is not an output of this model; it has {known}",
                field=f"outputs.{name[:100]}",
                expected=known,
                actual=name[:100],
            )
        unknown = sorted(set(item) - {"name", "parameters"})
        if unknown:
            raise InvalidInput(
                f"output {name!r} has an unknown key {unknown[0][:100]!r}; an output takes name and parameters",
                field=f"outputs.{name}",
            )
        where = f"output {name!r}"
        parameters = _known_parameters(item, ("binary_data", *SHARED_MEMORY_PARAMETERS), where, f"outputs.{name}")
        binary = parameters.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise InvalidInput(f"output {name!r}: binary_data must be true or false", field=f"outputs.{name}")
        if any(r.name == name for r in requested):
            raise InvalidInput(f"output {name!r} is requested more than once", field=f"outputs.{name}")
        # Its size is checked against the output's once computed; the region and bounds now.
        shared = _shared_bytes(parameters, None, shared_memory, where, f"outputs.{name}")
        shared_parameters = {p: parameters[p] for p in SHARED_MEMORY_PARAMETERS if p in parameters}
        requested.append(RequestedOutput(name, binary, shared, shared_parameters if shared is not None else None))
    return requested


# ---------------------------------------------------------------------------------------------
# Responses


def datatype_of(array: np.ndarray) -> str:
    return _DATATYPE_OF[array.dtype]


def infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    produced: dict[str, np.ndarray],
    parameters: dict[str, Any],
    absent: dict[str, str] | None = None,
) -> InferResponse:
    """The response to `request`: the outputs it selected (all that were `produced`, by default),
    each as flat JSON `data` or as binary bytes after the JSON header. `absent` explains outputs of
    the model this call did not produce (requesting one is an error)."""
    if request.outputs is None:
        selected = [RequestedOutput(name, request.binary_output) for name in produced]
    else:
        selected = []
        for wanted in request.outputs:
            if wanted.name not in produced:
                why = (absent or {}).get(wanted.name, "")
                raise InvalidInput(
                    f"output {wanted.name!r} is not produced by this call{': ' + why if why else ''}; "
                    f"it produces {list(produced)}",
                    field=f"outputs.{wanted.name}",
                    expected=list(produced),
                    actual=wanted.name,
                )
            binary = request.binary_output if wanted.binary is None else wanted.binary
            selected.append(replace(wanted, binary=binary))
    outputs: list[dict[str, Any]] = []
    pieces: list[bytes | memoryview] = []
    for wanted in selected:
        array = produced[wanted.name]
        entry: dict[str, Any] = {"name": wanted.name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if wanted.shared is not None:
            _write_shared(wanted, array)
            entry["parameters"] = wanted.shared_parameters
        elif wanted.binary:
            data = _little_endian_bytes(array)
            entry["parameters"] = {"binary_data_size": data.nbytes}
            pieces.append(data)
        else:
            entry["data"] = to_json_values(np.asarray(array).reshape(-1))  # a view: flat, row-major
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        body["id"] = request.id
    if parameters:
        body["parameters"] = parameters
    body["outputs"] = outputs
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not pieces:
        return InferResponse([head], None, JSON_MEDIA_TYPE)
    return InferResponse(_gather([head, *pieces]), len(head), BINARY_MEDIA_TYPE)


def _write_shared(wanted: RequestedOutput, array: np.ndarray) -> None:
    """The output's little-endian bytes into the region, which must hold exactly that many."""
    assert wanted.shared is not None
    if wanted.shared.nbytes != array.nbytes:
        raise ShapeMismatch(
            f"output {wanted.name!r} is {datatype_of(array)} of shape {list(array.shape)}, {array.nbytes} bytes; "
            f"its shared_memory_byte_size is {wanted.shared.nbytes}",
            field=f"outputs.{wanted.name}.parameters.shared_memory_byte_size",
            expected=array.nbytes,
            actual=wanted.shared.nbytes,
        )
    target = np.frombuffer(wanted.shared, dtype=array.dtype.newbyteorder("<")).reshape(array.shape)
    if _same_memory(target, array):  # the compute step wrote it there (app.stacks.run.output_destination)
        return
    np.copyto(target, array)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are the same bytes in the same layout (not merely overlapping)."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.flags.c_contiguous
        and b.flags.c_contiguous
    )


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    """The array's little-endian C-order bytes: its own memory when it already is (the usual case)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    if array.size == 0:  # an empty batch's output; memoryview refuses to cast a view with a zero in its shape
        return memoryview(b"")
    return array.data.cast("B")


def _gather(pieces: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Runs of small pieces joined into one; big ones stay views of their arrays."""
    chunks: list[bytes | memoryview] = []
    pending = bytearray()
    for piece in pieces:
        if memoryview(piece).nbytes < _INLINE_BYTES:
            pending += piece
            continue
        if pending:
            chunks.append(bytes(pending))
            pending.clear()
        chunks.append(piece)
    if pending:
        chunks.append(bytes(pending))
    return chunks
