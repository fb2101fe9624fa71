"""The Open Inference Protocol (V2): Triton's and KServe's clients call layerlab, each layer kind a model.

Inference is a TensorRoute on the one tensor path (app.api.endpoint.serve) with the V2 exchange and
codec (app.codec.v2): read the body (the same byte limit), decode it into the same layer options,
plan and run it as /v1 does (the same lanes of the same compute pool), and present the V2 response. Errors are the
protocol's `{"error": message}` (app.errors writes every error under /v2 that way).

Every model has one version, "1", and is always ready: a layer kind needs no loading.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import __version__
from app.api.body_limits import read_body, read_body_buffer
from app.api.deps import SettingsDep
from app.api.endpoint import TensorRoute, serve
from app.api.negotiation import ChunkedResponse, json_response
from app.api.raw_route import RawRoute
from app.api.routes.ops import check_readiness
from app.codec import v2
from app.codec.json import parse_json
from app.codec.tensors import Encoding, probable_shape
from app.config import Settings
from app.errors import LayerlabError, UnknownKind, UnsupportedMediaType, validation_error
from app.layers.base import LayerSpec
from app.layers.registry import LAYERS
from app.observability import record_compute
from app.shared_memory import SharedMemoryRegistry
from app.stacks.plan import Plan, plan_stack, stack_of_one
from app.stacks.run import StackOutcome, run_plan

router = APIRouter(prefix="/v2", tags=["open-inference-protocol-v2"])

VERSION = "1"
"""Each model's only version."""
PLATFORM = "layerlab_torch.nn"
EXTENSIONS = ["binary_tensor_data", "parameters", "system_shared_memory"]


def shared_memory_registry(request: Request) -> SharedMemoryRegistry:
    """The app's registered regions (app.shared_memory; made in create_app, unmapped at shutdown)."""
    registry: SharedMemoryRegistry = request.app.state.shared_memory
    return registry


# ---------------------------------------------------------------------------------------------
# Models: what each layer kind takes and returns


def signature(spec: LayerSpec) -> v2.ModelSignature:
    """Inputs and outputs of a kind, every dimension -1: the input, then its state_dict tensors
    (all a config can give it: bias, affine and running statistics on), `indices` for max-pool.
    Ranks are those of the kind's first documented example (the batched layout)."""
    example = next(iter((spec.examples or {}).values()))["value"]
    fullest = {
        **example["config"],
        **{
            flag: True
            for flag in ("bias", "affine", "track_running_stats", "return_indices")
            if flag in spec.config_model.model_fields
        },
    }
    config = spec.config_model.model_validate(fullest)
    input_shape = probable_shape(example["input"], "input")
    output_rank = len(spec.output_shape(config, input_shape))
    state = {**spec.parameter_shapes(config), **spec.buffer_shapes(config)}

    def tensor(name: str, rank: int, datatype: str = "FP32") -> v2.TensorMetadata:
        return v2.TensorMetadata(name, datatype, (-1,) * rank)

    def datatype(name: str) -> str:
        return "INT64" if name == "num_batches_tracked" else "FP32"

    inputs = [tensor("input", len(input_shape))] + [tensor(k, len(s), datatype(k)) for k, s in state.items()]
    outputs = [tensor("output", output_rank)] + [tensor(k, len(s), datatype(k)) for k, s in state.items()]
    if "return_indices" in spec.config_model.model_fields:
        outputs.append(tensor("indices", output_rank, "INT64"))
    if "track_running_stats" in spec.config_model.model_fields:  # BatchNorm: the per-channel statistics it used
        outputs += [tensor("statistics.mean", 1), tensor("statistics.var", 1)]
    return v2.ModelSignature(tuple(inputs), tuple(outputs))


SIGNATURES = {kind: signature(spec) for kind, spec in LAYERS.items()}


def _model(request: Request) -> LayerSpec:
    """The layer kind a /v2/models/... path names; 404 for an unknown kind or version."""
    name = request.path_params["model_name"]
    spec = LAYERS.get(name)
    if spec is None:
        raise UnknownKind(
            f"unknown model {name[:100]!r}; the models are the layer kinds {sorted(LAYERS)}",
            field="model_name",
            expected=sorted(LAYERS),
            actual=name[:100],
        )
    version = request.path_params.get("model_version", VERSION)
    if version != VERSION:
        raise UnknownKind(
            f"model {name!r} has no version {version[:100]!r}; its only version is {VERSION!r}",
            field="model_version",
            expected=[VERSION],
            actual=version[:100],
        )
    return spec


def model_metadata(spec: LayerSpec) -> dict[str, Any]:
    sig = SIGNATURES[spec.kind]
    return {
        "name": spec.kind,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": [t.as_dict() for t in sig.inputs],
        "outputs": [t.as_dict() for t in sig.outputs],
    }


# ---------------------------------------------------------------------------------------------
# Inference: another codec and presenter on the one tensor path (app.api.endpoint.serve)


class V2Incoming:
    """A V2 body: its JSON header (what sizes the request for the lanes) and the binary section after it."""

    def __init__(
        self,
        body: bytes | memoryview,
        json_length: int | None,
        signature: v2.ModelSignature,
        settings: Settings,
        shared_memory: SharedMemoryRegistry,
    ) -> None:
        self._body: bytes | memoryview | None = body
        self._json_length = json_length
        self._signature = signature
        self._settings = settings
        self._shared_memory = shared_memory
        self.size = json_length if json_length is not None else len(body)

    def decode(self) -> dict[str, Any]:
        body, self._body = self._body, None
        assert body is not None, "a body is decoded once"
        header, binary = v2.split_body(body, self._json_length)
        request = v2.read_infer_request(
            parse_json(header),
            binary,
            self._signature,
            max_elements=self._settings.max_tensor_elements,
            max_depth=self._settings.max_json_depth,
            shared_memory=self._shared_memory,
        )
        return {"request": request}


@dataclass(frozen=True)
class V2Exchange:
    """The protocol's exchange: a JSON header with optional binary tensors after it, each way."""

    signature: v2.ModelSignature

    async def read(self, request: Request, settings: Settings) -> V2Incoming:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            raise UnsupportedMediaType(
                f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed",
                field="content-encoding",
                expected="identity",
                actual=encoding[:40],
            )
        declared = request.headers.get(v2.HEADER_LENGTH)
        # With binary tensors: one buffer, read in place. JSON alone: bytes, as the JSON parser wants them.
        body = await (read_body_buffer(request, settings) if declared is not None else read_body(request, settings))
        json_length = v2.header_length(declared, len(body))
        return V2Incoming(body, json_length, self.signature, settings, shared_memory_registry(request))

    def tensor_encoding(self, requested: Encoding) -> Encoding:
        return "list"  # the presenter writes each output as flat data or binary, as the request asked

    def respond(self, answer: v2.InferResponse) -> Response:
        response = ChunkedResponse(answer.chunks, answer.media_type)
        if answer.header_length is not None:
            response.headers[v2.HEADER_LENGTH] = str(answer.header_length)
        return response


class InferOptions(BaseModel):
    """The V2 route's options: the decoded infer request (layer options, requested outputs, id)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)
    request: v2.InferRequest

    @property
    def backend(self) -> str:
        return self.request.options.backend

    @property
    def device(self) -> str:
        return self.request.options.device

    @property
    def compare(self) -> bool:
        return self.request.options.compare


@dataclass(frozen=True)
class InferPlan:
    request: v2.InferRequest
    plan: Plan

    @property
    def size(self) -> int:
        return self.plan.size

    @property
    def output_bytes(self) -> memoryview | None:
        """The region bytes the request wants the output in (the compute step writes it there)."""
        return next((o.shared for o in self.request.outputs or () if o.name == "output"), None)


@dataclass(frozen=True)
class InferOutcome:
    request: v2.InferRequest
    outcome: StackOutcome


@contextmanager
def state_as_inputs() -> Iterator[None]:
    """/v1's errors name state tensors `parameters.weight`; here they are inputs."""
    try:
        yield
    except LayerlabError as exc:
        if exc.field and exc.field.startswith("parameters."):
            name = exc.field.split(".")[1].split("[")[0]
            exc.detail = exc.detail.replace(f"parameters.{name}", f"input {name!r}")
        raise


def produced_outputs(outcome: StackOutcome) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor the call produced, by output name, and why the model's others are absent."""
    run = outcome.layers[0]
    spec = run.layer.entry.spec
    produced = {"output": outcome.output}
    produced.update({name: run.state[name] for name in run.layer.parameter_shapes})
    produced.update(run.buffers)
    produced.update({(k if k == "indices" else f"statistics.{k}"): v for k, v in run.extras.items()})
    absent = {
        t.name: f"{spec.torch_name} with this config has no {t.name!r}"
        for t in SIGNATURES[spec.kind].outputs
        if t.name not in produced
    }
    if "indices" in absent:
        absent["indices"] = f"{spec.torch_name} returns indices only with config return_indices: true"
    return produced, absent


def response_parameters(outcome: StackOutcome) -> dict[str, Any]:
    """Scalars only, as the protocol's parameters are: how it was computed, and `compare`'s figures."""
    request = outcome.plan.request
    parameters: dict[str, Any] = {
        "backend": request.backend,
        "device": request.device,
        "elapsed_ms": round(outcome.elapsed_ms, 3),
    }
    comparison = outcome.comparison if outcome.comparison is not None else outcome.layers[0].comparison
    for key, value in (comparison or {}).items():
        parameters[f"compare_{key}"] = round(value, 3) if key == "elapsed_ms" else value
    return parameters


def present_infer(done: InferOutcome, encoding: Encoding) -> v2.InferResponse:
    """The present step: the selected outputs as JSON data or binary bytes (`encoding` is unused)."""
    produced, absent = produced_outputs(done.outcome)
    kind = done.outcome.layers[0].layer.entry.spec.kind
    return v2.infer_response(kind, VERSION, done.request, produced, response_parameters(done.outcome), absent)


def infer_route(spec: LayerSpec) -> TensorRoute[InferOptions, InferPlan, InferOutcome]:
    exchange = V2Exchange(SIGNATURES[spec.kind])

    def plan(options: InferOptions, settings: Settings) -> InferPlan:
        with state_as_inputs():
            return InferPlan(options.request, plan_stack(stack_of_one(spec.kind, options.request.options), settings))

    def run(planned: InferPlan) -> InferOutcome:
        with state_as_inputs():
            return InferOutcome(planned.request, run_plan(planned.plan, into=planned.output_bytes))

    return TensorRoute(
        spec.kind,
        InferOptions,
        plan,
        run,
        present_infer,
        size=lambda planned: planned.size,
        record=lambda done: record_compute(done.outcome),
        negotiate=lambda request: exchange,
    )


INFER_ROUTES = {kind: infer_route(spec) for kind, spec in LAYERS.items()}


async def infer(request: Request) -> Response:
    return await serve(INFER_ROUTES[_model(request).kind], request)


# ---------------------------------------------------------------------------------------------
# OpenAPI: the protocol's bodies, documented


class V2Error(BaseModel):
    error: str = Field(
        description="What was wrong, naming the input, parameter or output at fault.",
        examples=["input 'input' has datatype 'INT32'; it must be FP32 or FP64"],
    )


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(
        description="FP32 (FP64 is accepted too: outputs take the input's), INT64 for counts and indices."
    )
    shape: list[int] = Field(description="-1: the dimension follows the config and the input.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ModelReady(BaseModel):
    name: str
    ready: bool


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": V2Error,
        "description": "The request cannot run: its message names the input, parameter or "
        "output at fault (datatype, shape, data length, binary_data_size).",
    },
    404: {"model": V2Error, "description": "No such model (layer kind) or version."},
}
_MODEL_PATH = {
    "name": "model_name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": sorted(LAYERS)},
    "description": "A layer kind (each example names its own in `x-path`).",
    "example": "linear",
}
_VERSION_PATH = {
    "name": "model_version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": [VERSION]},
    "example": VERSION,
}

_SHARED_MEMORY = {
    "shared_memory_region": {"type": "string", "description": "A registered region: the tensor's bytes are there."},
    "shared_memory_offset": {"type": "integer", "description": "Bytes into the region (default 0)."},
    "shared_memory_byte_size": {"type": "integer", "description": "The tensor's size in bytes, exactly."},
}
_LINEAR_EXAMPLE = {
    "id": "notebook-linear",
    "parameters": {"config": {"in_features": 4, "out_features": 1}, "seed": 0},
    "inputs": [
        {
            "name": "input",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [0.3102, 0.1271, -0.0823, 1.0858, -1.1686, 1.6650, 1.3797, -0.9915],
        }
    ],
    "outputs": [{"name": "output"}, {"name": "weight"}],
}
_INFER_EXAMPLES = {
    "linear": {
        "summary": "Linear(4, 1): flat data, its output and weight",
        "value": _LINEAR_EXAMPLE,
        "x-path": {"model_name": "linear"},
    },
    "weights_given": {
        "summary": "Linear with its weight and bias given, nested data, config as a JSON string",
        "x-path": {"model_name": "linear"},
        "value": {
            "parameters": {"config": '{"in_features": 2, "out_features": 1}'},
            "inputs": [
                {"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [[1.0, 2.0], [3.0, 4.0]]},
                {"name": "weight", "shape": [1, 2], "datatype": "FP64", "data": [0.5, -1.0]},
                {"name": "bias", "shape": [1], "datatype": "FP64", "data": [0.25]},
            ],
        },
    },
    "batchnorm_training": {
        "summary": "BatchNorm1d (model batchnorm1d) in training mode: the running statistics come back",
        "x-path": {"model_name": "batchnorm1d"},
        "value": {
            "parameters": {"config": {"num_features": 2}, "training": True},
            "inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 7]}],
            "outputs": [
                {"name": "output"},
                {"name": "running_mean"},
                {"name": "running_var"},
                {"name": "num_batches_tracked"},
            ],
        },
    },
}
_INFER_BODY = {
    "parameters": [_MODEL_PATH],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs", "parameters"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "description": "`config` (an object, or a JSON string: the layer's "
                            "constructor arguments), and `backend`, `seed`, `training`, `compare`, `device` as on /v1; "
                            "`binary_data_output`: outputs come back as binary data.",
                        },
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string", "enum": list(v2.DATATYPES)},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data_size": {"type": "integer"}, **_SHARED_MEMORY},
                                    },
                                    "data": {"type": "array", "description": "Flat (row-major) or nested."},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}, **_SHARED_MEMORY},
                                    },
                                },
                            },
                        },
                    },
                },
                "examples": _INFER_EXAMPLES,
            },
            v2.BINARY_MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "The binary tensor data extension: the JSON request, then each input with "
                    "`binary_data_size` as little-endian bytes, in order; the header "
                    "`Inference-Header-Content-Length` gives the JSON's length.",
                }
            },
        },
    },
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`model_name`, `model_version`, `id`, `parameters` (backend, device, elapsed_ms, and "
        "`compare_*` figures with compare) and `outputs` (flat `data`, or `binary_data_size` and "
        "the bytes after the JSON, whose length is in `Inference-Header-Content-Length`).",
        "headers": {
            v2.HEADER_LENGTH: {
                "schema": {"type": "integer"},
                "description": "With binary outputs: the JSON header's length.",
            }
        },
        "content": {
            "application/json": {
                "example": {
                    "model_name": "linear",
                    "model_version": "1",
                    "id": "notebook-linear",
                    "parameters": {"backend": "torch", "device": "cpu", "elapsed_ms": 0.05},
                    "outputs": [
                        {"name": "output", "datatype": "FP32", "shape": [2, 1], "data": [-0.3937, -0.8226]},
                        {
                            "name": "weight",
                            "datatype": "FP32",
                            "shape": [1, 4],
                            "data": [-0.0038, 0.2682, -0.4116, -0.3770],
                        },
                    ],
                }
            },
            v2.BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **_ERRORS,
    415: {"model": V2Error, "description": "A compressed body (Content-Encoding): send it uncompressed."},
}


# ---------------------------------------------------------------------------------------------
# Routes


@router.get(
    "",
    name="v2-server-metadata",
    summary="Server metadata",
    response_model=ServerMetadata,
    description="The server's name and version, and the protocol extensions it supports "
    "(`binary_tensor_data`: tensors as raw bytes after the JSON; `parameters`; `system_shared_memory`: "
    "tensors in shared-memory regions on the same host).",
)
async def server_metadata() -> dict[str, Any]:
    return {"name": "layerlab", "version": __version__, "extensions": EXTENSIONS}


@router.get(
    "/health/live",
    name="v2-live",
    summary="Liveness (200 while the process is alive)",
    description='`{"live": true}` at once, even when every compute worker is busy (as /healthz).',
)
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    name="v2-ready",
    summary="Readiness: a tiny layer computes on every backend",
    description="200 when /readyz's checks pass, else 503 with the failing checks.",
    responses={503: {"model": V2Error, "description": "Not ready."}},
)
async def ready(settings: SettingsDep) -> Response:
    checks = await check_readiness(settings)
    failed = {name: value for name, value in checks.items() if value != "ok"}
    if failed:
        return json_response({"error": f"not ready: {failed}"}, status_code=503)
    return json_response({"ready": True})


@router.post(
    "/repository/index",
    name="v2-repository-index",
    summary="Every model (layer kind), all READY",
    response_model=list[RepositoryModel],
    description='One entry per layer kind, version "1", state READY: a layer kind needs no loading.',
)
async def repository_index() -> list[dict[str, str]]:
    return [{"name": kind, "version": VERSION, "state": "READY"} for kind in LAYERS]


async def model(request: Request, model_name: str) -> dict[str, Any]:
    return model_metadata(_model(request))


async def model_ready(request: Request, model_name: str) -> dict[str, Any]:
    return {"name": _model(request).kind, "ready": True}


def _add_versioned_route(
    suffix: str,
    endpoint: Any,
    names: tuple[str, str],
    summaries: tuple[str, str],
    description: str,
    extra: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """`/models/{model_name}<suffix>` and the same under `/versions/{model_version}` (only "1")."""
    extra = extra or {}
    versioned = f'As /v2/models/{{model_name}}{suffix}; the only version is "1".'
    for path, name, summary, text, version in (
        (f"/models/{{model_name}}{suffix}", names[0], summaries[0], description, []),
        (f"/models/{{model_name}}/versions/{{model_version}}{suffix}", names[1], summaries[1], versioned, [_VERSION_PATH]),
    ):  # fmt: skip
        parameters = [*extra.get("parameters", []), *version]
        router.add_api_route(
            path,
            endpoint,
            name=name,
            summary=summary,
            description=text,
            openapi_extra={**extra, "parameters": parameters},
            **options,
        )


_add_versioned_route(
    "",
    model,
    ("v2-model-metadata", "v2-model-version-metadata"),
    ("A model's inputs and outputs", "A model version's inputs and outputs"),
    "The inputs a layer kind takes (the input and its state_dict tensors) and the outputs it "
    "returns, with datatypes and shapes (-1: follows the config and the input).",
    methods=["GET"],
    response_model=ModelMetadata,
    responses=_ERRORS,
)
_add_versioned_route(
    "/ready",
    model_ready,
    ("v2-model-ready", "v2-model-version-ready"),
    ("Model readiness (every kind is ready)", "Model version readiness"),
    '`{"name": kind, "ready": true}` for every layer kind; 404 for an unknown one.',
    methods=["GET"],
    response_model=ModelReady,
    responses=_ERRORS,
)


_INFER_DESCRIPTION = (
    "Run the layer kind `model_name` on the `inputs` (named as its state_dict: `input`, `weight`, `bias`, "
    "`running_mean`, `running_var`, `num_batches_tracked`; state not given is initialized from `seed` as on /v1) "
    "with the config in the request `parameters`. Outputs: `output`, the parameters and buffers by name, "
    "`indices` for max-pool with return_indices, `statistics.mean`/`statistics.var` for BatchNorm; `outputs` "
    "selects among them. Inputs and outputs may travel as binary data (the binary tensor data extension) or, "
    "from a client on this host, in registered shared-memory regions (`shared_memory_region`, "
    "`shared_memory_offset`, `shared_memory_byte_size` in their parameters: an output so requested is written "
    "there and answered without data)."
)
_add_versioned_route(
    "/infer",
    infer,
    ("v2-infer", "v2-version-infer"),
    ("Inference", "Inference on a model version"),
    _INFER_DESCRIPTION,
    {**_INFER_BODY, "parameters": [_MODEL_PATH]},
    methods=["POST"],
    response_model=None,
    responses=_INFER_RESPONSES,
    route_class_override=RawRoute,
)


# ---------------------------------------------------------------------------------------------
# System shared memory (the extension `system_shared_memory`; app.shared_memory does the work)


class SharedMemoryRegion(BaseModel):
    name: str = Field(description="The region's name, as infer requests give it in `shared_memory_region`.")
    key: str = Field(description="The POSIX shared-memory object's key (`/name`: the file /dev/shm/name).")
    offset: int = Field(description="Where the region starts in the object, in bytes.")
    byte_size: int = Field(description="The region's size in bytes.")


class SharedMemoryRegister(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str = Field(
        pattern=r"^/?[^/\x00]{1,100}$",
        description="The key of a POSIX shared-memory object on this host (what shm_open takes: `/` and a "
        "name, no other `/`, no `..`), created by the client; the server maps /dev/shm/<name>.",
        examples=["/layerlab_input0"],
    )
    offset: int = Field(0, ge=0, description="Where the region starts in the object, in bytes.")
    byte_size: int = Field(ge=1, description="The region's size in bytes; offset + byte_size fits in the object.")


_SHM_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": V2Error,
        "description": "Not done: the message names the field (`key`, `offset`, `byte_size`, `region_name`): no "
        "such object or region, a key outside /dev/shm, or bounds past the object's end.",
    }
}


async def shm_status(request: Request) -> list[dict[str, Any]]:
    return shared_memory_registry(request).status(request.path_params.get("region_name"))


async def shm_unregister(request: Request) -> dict[str, Any]:
    shared_memory_registry(request).unregister(request.path_params.get("region_name"))
    return {}


_REGION_NAME = {"name": "region_name", "in": "path", "required": True, "schema": {"type": "string"}}
for _suffix, _endpoint, _method, _names, _summaries, _descriptions, _response_model in (
    ("/status", shm_status, "GET", ("v2-shm-status", "v2-shm-region-status"),
     ("Registered system shared-memory regions", "One registered system shared-memory region"),
     ("Every registered region: its name, the key of its shared-memory object, offset and byte_size.",
      "The region `region_name` (a list of one, as Triton answers); 400 when it is not registered."),
     list[SharedMemoryRegion]),
    ("/unregister", shm_unregister, "POST", ("v2-shm-unregister", "v2-shm-region-unregister"),
     ("Unregister every system shared-memory region", "Unregister a system shared-memory region (and unmap it)"),
     ("Every region is unregistered and unmapped (an array a request in flight still reads keeps its "
      "mapping until it is done).",
      "The region is unregistered and unmapped; an unknown name is not an error (as Triton)."),
     None),
):  # fmt: skip
    for _path, _name, _summary, _description, _parameters in (
        (f"/systemsharedmemory{_suffix}", _names[0], _summaries[0], _descriptions[0], []),
        (f"/systemsharedmemory/region/{{region_name}}{_suffix}", _names[1], _summaries[1], _descriptions[1],
         [_REGION_NAME]),
    ):  # fmt: skip
        router.add_api_route(
            _path,
            _endpoint,
            methods=[_method],
            name=_name,
            summary=_summary,
            description=_description,
            response_model=_response_model,
            responses=_SHM_ERRORS if _parameters else None,
            openapi_extra={"parameters": _parameters} if _parameters else None,
        )


@router.post(
    "/systemsharedmemory/region/{region_name}/register",
    name="v2-shm-register",
    summary="Register a system shared-memory region",
    description="Map `byte_size` bytes at `offset` of the shared-memory object `key` (on the server's host) "
    "as the region `region_name`: infer requests then name it in an input's or output's parameters "
    "(`shared_memory_region`, `shared_memory_offset`, `shared_memory_byte_size`) instead of sending bytes. "
    "A name is registered once (409 again, until unregistered).",
    responses={**_SHM_ERRORS, 409: {"model": V2Error, "description": "The region name is registered already."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": SharedMemoryRegister.model_json_schema(),
                    "examples": {
                        "one_mebibyte": {
                            "summary": "1 MiB of /dev/shm/layerlab_example (the client creates the object first)",
                            "value": {"key": "/layerlab_example", "offset": 0, "byte_size": 1 << 20},
                        }
                    },
                }
            },
        }
    },
)
async def shm_register(request: Request, region_name: str, settings: SettingsDep) -> dict[str, Any]:
    # The body is read here, not declared: tritonclient sends it without a JSON Content-Type.
    try:
        body = SharedMemoryRegister.model_validate(parse_json(await read_body(request, settings)))
    except ValidationError as exc:
        raise validation_error(exc) from None
    shared_memory_registry(request).register(region_name, body.model_dump())
    return {}
