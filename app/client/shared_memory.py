"""`Client(shared_memory=True)`: for a server on this host, big tensors go through POSIX shared
memory instead of the socket (the Open Inference Protocol's system shared-memory extension).

A layer call whose input is at least `MIN_BYTES` is sent as a /v2 infer request naming regions
this client created in /dev/shm and registered with the server once:

- the input and the given `parameters` are copied into the client's input region (one copy, on
  this side); the server reads them in place. An input made by `Client.shared_array` (an array
  in a region of its own, filled by the caller) is not copied at all: the request names its bytes;
- the server writes the output (and max-pool's indices) into an output region; `result.output`
  is an array over that region, no copy. A region is reused only once the array returned from it
  is gone (a weak reference tells), so results stay valid while you hold them (past
  `MAX_OUTPUT_REGIONS`, the oldest region is unregistered and its object removed, its mapping
  living on in the result's array until that goes);
- the other outputs (weight, bias, running statistics) come through the same region, copied out;
  the layer's full config, formulas and the shapes from POST /v1/shapes (once per config and
  input shape: cached).

Calls that /v2 cannot express (`gradients`, `grad_output`, `loss`, `encoding`), inputs given in a
wire form (`random_tensor(...)`) and smaller inputs take the socket path as usual. `statistics`
(BatchNorm's batch statistics) are not returned on this path.

The regions are unregistered and their objects removed when the client closes (or, failing that,
when it is garbage-collected or the interpreter exits). Imports neither torch nor the server.
"""

import contextlib
import mmap
import os
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from app.client.codec import TENSOR_FORMS, as_array
from app.client.results import Comparison, LayerResult

MIN_BYTES = 64 * 1024
"""Inputs smaller than this go over the socket: a request's fixed costs outweigh the copy."""
MAX_OUTPUT_REGIONS = 4
"""Output regions kept registered per client."""
UNSUPPORTED_OPTIONS = frozenset({"gradients", "grad_output", "loss", "encoding"})
"""Layer options /v2 has no parameter for: such calls take the socket path."""
ALIGN = 64
SHM_DIR = "/dev/shm"
_DATATYPES: dict[np.dtype, str] = {np.dtype("<f4"): "FP32", np.dtype("<f8"): "FP64", np.dtype("<i8"): "INT64"}
_DTYPES: dict[str, np.dtype] = {name: dtype for dtype, name in _DATATYPES.items()}

Send = Callable[..., Any]
"""The client's `_send(method, path, json=...)`: the decoded response, or a typed error."""


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _remove(path: str, mapping: mmap.mmap) -> None:
    """Unlink the object and unmap (or leave the mapping to the arrays still over it)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(BufferError):  # a result's array still views it: unmapped when that array goes
        mapping.close()


class Region:
    """A /dev/shm object this client created, mapped here and registered with the server as `name`."""

    def __init__(self, send: Send, size: int) -> None:
        self.name = f"layerlab-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.key = f"/{self.name}"
        self.size = size
        path = os.path.join(SHM_DIR, self.name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mapping = mmap.mmap(fd, size)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._finalizer = weakref.finalize(self, _remove, path, self.mapping)
        self.address = np.frombuffer(self.mapping, dtype=np.uint8).ctypes.data
        """Where the mapping starts in this process (to tell which arrays lie in it)."""
        self.holder: weakref.ref[np.ndarray] | None = None
        """The array last returned from this region: it is busy while that lives."""
        try:
            send(
                "POST", f"/v2/systemsharedmemory/region/{self.name}/register", json={"key": self.key, "byte_size": size}
            )
        except BaseException:
            self._finalizer()
            raise

    @property
    def free(self) -> bool:
        return self.holder is None or self.holder() is None

    def place_of(self, array: np.ndarray) -> int | None:
        """The offset of a C-contiguous array's bytes in this region, None unless they lie within it."""
        start = array.__array_interface__["data"][0]
        inside = self.address <= start and start + array.nbytes <= self.address + self.size
        return start - self.address if inside and array.flags.c_contiguous and self._finalizer.alive else None

    def array(self, dtype: np.dtype, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.mapping, dtype=dtype, count=count, offset=offset).reshape(shape)

    def close(self, send: Send | None) -> None:
        if not self._finalizer.alive:
            return
        if send is not None:
            with contextlib.suppress(Exception):  # the server may be gone already; the object goes anyway
                send("POST", f"/v2/systemsharedmemory/region/{self.name}/unregister")
        self._finalizer()


class SharedMemoryLayers:
    """The shared-memory path of one client (`Client(shared_memory=True)`)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._input: Region | None = None
        self._outputs: list[Region] = []
        self._given: list[Region] = []
        """Regions of `shared_array`s: each lives as long as its array."""
        self._shapes: dict[tuple[Any, ...], dict[str, Any]] = {}

    def takes(self, x: Any, options: Mapping[str, Any]) -> bool:
        """Whether this call goes through shared memory (else the socket path)."""
        if UNSUPPORTED_OPTIONS & set(options) or (isinstance(x, Mapping) and any(f in x for f in TENSOR_FORMS)):
            return False
        return bool(getattr(x, "nbytes", 0) >= MIN_BYTES or np.asarray(x).nbytes >= MIN_BYTES)

    def close(self) -> None:
        for region in [*([self._input] if self._input else []), *self._outputs, *self._given]:
            region.close(self._send)
        self._input, self._outputs, self._given = None, [], []

    def shared_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zeroed array in a region of its own, registered with the server: a layer call given it
        (or a C-contiguous slice of it) as its input or a parameter names its bytes instead of copying
        them. The region is unregistered and removed once the array is gone (at the next call)."""
        dtype = np.dtype(dtype).newbyteorder("<")
        if dtype not in _DATATYPES:
            raise TypeError(f"shared arrays hold float32, float64 or int64; got {dtype}")
        self._release_given()
        shape = tuple(int(n) for n in shape)
        region = Region(self._send, max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1))
        array = region.array(dtype, shape)
        region.holder = weakref.ref(array)
        self._given.append(region)
        return array

    def _release_given(self) -> None:
        """Regions whose shared array is gone: unregistered and removed (a view still over one keeps
        its mapping alive, as a result's array does, but is copied like any other array)."""
        for region in [r for r in self._given if r.free]:
            self._given.remove(region)
            region.close(self._send)

    # -- one call --------------------------------------------------------------------------------

    def layer(self, kind: str, x: Any, config: dict[str, Any], options: Mapping[str, Any]) -> LayerResult:
        array = as_array(x)
        row = self._shape_row(kind, config, array)
        inputs = {"input": array}
        for name, value in (options.get("parameters") or {}).items():
            given = as_array(value, integers=True)
            inputs[name] = given if given.dtype.kind == "i" else given.astype(array.dtype, copy=False)
        request_inputs = self._write_inputs(inputs)

        output_shape = tuple(row["output_shape"])
        shared = {"output": (array.dtype, output_shape)}
        if row["config"].get("return_indices"):
            shared["indices"] = (np.dtype("<i8"), output_shape)
        for name, shape in {**row["parameters"], **row["buffers"]}.items():
            shared[name] = (np.dtype("<i8") if name == "num_batches_tracked" else array.dtype, tuple(shape))
        region, places = self._output_region(shared)
        outputs = [
            {
                "name": name,
                "parameters": {
                    "shared_memory_region": region.name,
                    "shared_memory_offset": offset,
                    "shared_memory_byte_size": nbytes,
                },
            }
            for name, (offset, nbytes) in places.items()
        ]
        parameters = {"config": config}
        parameters.update(
            {k: v for k, v in options.items() if k in ("seed", "backend", "compare", "training", "device")}
        )
        body = {"parameters": parameters, "inputs": request_inputs, "outputs": outputs}
        response = self._send("POST", f"/v2/models/{kind}/infer", json=body)
        return self._result(kind, row, response, region, shared, places)

    def _shape_row(self, kind: str, config: dict[str, Any], array: np.ndarray) -> dict[str, Any]:
        """/v1/shapes' row for this layer: full config, output shape, parameter and buffer names, formulas."""
        dtype = "float64" if array.dtype.itemsize == 8 else "float32"
        cache_key = (kind, repr(sorted(config.items())), array.shape, dtype)
        row = self._shapes.get(cache_key)
        if row is None:
            body = {"input_shape": list(array.shape), "layers": [{"kind": kind, "config": config}], "dtype": dtype}
            row = self._send("POST", "/v1/shapes", json=body)["layers"][0]
            if len(self._shapes) > 256:
                self._shapes.clear()
            self._shapes[cache_key] = row
        return row

    def _write_inputs(self, inputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Each tensor as the request's `inputs`: named where it lies when it is in a `shared_array`'s
        region, else copied into the input region (grown as needed)."""
        self._release_given()
        places: dict[str, tuple[Region, int]] = {}
        for name, value in inputs.items():
            for region in self._given:
                if (offset := region.place_of(value)) is not None:
                    places[name] = (region, offset)
                    break
        needed = sum(_aligned(a.nbytes) for name, a in inputs.items() if name not in places)
        if needed and (self._input is None or self._input.size < needed):
            if self._input is not None:
                self._input.close(self._send)
                self._input = None
            self._input = Region(self._send, max(needed, 1 << 20))
        request_inputs, offset = [], 0
        for name, value in inputs.items():
            if name in places:
                region, at = places[name]
            else:
                assert self._input is not None
                region, at = self._input, offset
                np.copyto(region.array(value.dtype, value.shape, at), value)
                offset += _aligned(value.nbytes)
            request_inputs.append(
                {
                    "name": name,
                    "shape": list(value.shape),
                    "datatype": _DATATYPES[value.dtype],
                    "parameters": {
                        "shared_memory_region": region.name,
                        "shared_memory_offset": at,
                        "shared_memory_byte_size": value.nbytes,
                    },
                }
            )
        return request_inputs

    def _output_region(
        self, shared: dict[str, tuple[np.dtype, tuple[int, ...]]]
    ) -> tuple[Region, dict[str, tuple[int, int]]]:
        """A free output region big enough, and where each output goes in it (offset, bytes)."""
        places, offset = {}, 0
        for name, (dtype, shape) in shared.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            places[name] = (offset, nbytes)
            offset += _aligned(nbytes)
        needed = max(offset, 1)
        region = next((r for r in self._outputs if r.free and r.size >= needed), None)
        if region is None:
            for small in [r for r in self._outputs if r.free]:  # too small: replaced by one that fits
                self._outputs.remove(small)
                small.close(self._send)
            region = Region(self._send, needed)
            self._outputs.append(region)
        while len(self._outputs) > MAX_OUTPUT_REGIONS:  # results held for long: let their regions go
            oldest = next(r for r in self._outputs if r is not region)
            self._outputs.remove(oldest)
            oldest.close(self._send)  # unregistered and unlinked; its mapping lives as long as the result's array
        return region, places

    def _result(
        self,
        kind: str,
        row: dict[str, Any],
        response: dict[str, Any],
        region: Region,
        shared: dict[str, tuple[np.dtype, tuple[int, ...]]],
        places: dict[str, tuple[int, int]],
    ) -> LayerResult:
        arrays: dict[str, np.ndarray] = {}
        for entry in response["outputs"]:
            name = entry["name"]
            array = region.array(_DTYPES[entry["datatype"]], tuple(entry["shape"]), places[name][0])
            # Only the output stays a view of the region (its lifetime frees the region); the rest are copied.
            arrays[name] = array if name == "output" else array.copy()
        region.holder = weakref.ref(arrays["output"])
        parameters = response.get("parameters", {})
        compare = {k.removeprefix("compare_"): v for k, v in parameters.items() if k.startswith("compare_")}
        output = arrays["output"]
        # `raw` in /v1's form (tensors by shape and dtype only), the /v2 response itself under "v2".
        raw = {
            **row,
            "backend": parameters.get("backend", ""),
            "parameters": {name: _described(arrays[name]) for name in row["parameters"]},
            "buffers": {name: _described(arrays[name]) for name in row["buffers"]},
            "comparison": compare or None,
            "elapsed_ms": parameters.get("elapsed_ms"),
            "v2": response,
        }
        return LayerResult(
            kind=kind,
            backend=parameters.get("backend", ""),
            config=row["config"],
            input_shape=tuple(row["input_shape"]),
            output_shape=tuple(output.shape),
            output=output,
            parameters={name: arrays[name] for name in row["parameters"]},
            parameter_count=row["parameter_count"],
            buffers={name: arrays[name] for name in row["buffers"]},
            indices=arrays.get("indices"),
            statistics={},
            formula=row["formula"],
            comparison=Comparison.from_json(compare or None),
            elapsed_ms=parameters.get("elapsed_ms", float("nan")),
            raw=raw,
        )


def _described(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype.newbyteorder("="))}
