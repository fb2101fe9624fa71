"""Request bodies. Per-kind models (with their typed `config`) are built from the registry."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model

from app.schemas.tensors import TensorInput

BackendName = Literal["torch", "reference"]
EncodingName = Literal["list", "base64", "none"]


class LayerRequestOptions(BaseModel):
    """Everything in `POST /v1/layers/{kind}` but the typed config."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(description="The layer's PyTorch constructor arguments.")
    input: TensorInput = Field(
        description="The input tensor: a nested JSON array (float32), or an object with "
        "`data` / `base64` / `random`, `shape` and `dtype`."
    )
    parameters: dict[str, TensorInput] = Field(
        default_factory=dict,
        description="Tensors named like the module's state_dict keys (weight, bias, running_mean, ...). "
        "Any not given is initialized as `torch.manual_seed(seed)` then building the module would.",
    )
    seed: StrictInt = Field(0, description="The parameter-initialization seed (torch.manual_seed).")
    backend: BackendName = Field("torch", description="`torch` (torch.nn) or `reference` (the NumPy formulas).")
    compare: StrictBool = Field(False, description="Also compute with the other backend and report the difference.")
    training: StrictBool = Field(True, description="Training mode, like a freshly built module (matters for BatchNorm).")
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="Where the torch backend computes: `cpu`, or `cuda` / `cuda:N` when the server has GPUs "
        "(`GET /v1/info` lists them). The reference backend always computes on the CPU.",
    )
    encoding: EncodingName = Field(
        "list", description="How tensors come back: `list` (nested lists), `base64` (raw bytes) or `none` (summary only)."
    )


def layer_request_model(kind: str, title: str, config_model: type[BaseModel]) -> type[BaseModel]:
    """`Conv2dRequest`: the options with `config` typed as the layer's constructor (for OpenAPI)."""
    return create_model(
        f"{title}Request",
        __base__=LayerRequestOptions,
        config=(config_model, Field(description=f"The layer: torch.nn.{title}'s constructor arguments, with "
                                    "PyTorch's names and defaults.")),
    )
