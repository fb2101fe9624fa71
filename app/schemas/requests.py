"""Request bodies. Per-kind models (with their typed `config`) are built from the registry."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model, model_validator

from app.codec.tensors import ALL_DTYPES, FLOAT_DTYPES, checked_tensor
from app.schemas.tensors import InputTensor, MsgpackInputTensor, MsgpackParameterTensor, ParameterTensor

BackendName = Literal["torch", "reference"]
EncodingName = Literal["list", "base64", "none"]
# The options every tensor request has, typed once for the layer and the sequential requests.
Backend = Annotated[BackendName, Field(description="`torch` (torch.nn) or `reference` (the NumPy formulas).")]
Device = Annotated[
    str,
    Field(
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="Where the torch backend computes: `cpu`, or `cuda` / `cuda:N` when the server has GPUs "
        "(`GET /v1/info` lists them). The reference backend always computes on the CPU.",
    ),
]
ResponseEncoding = Annotated[
    EncodingName,
    Field(description="How tensors come back: `list` (nested lists), `base64` (raw bytes) or `none` (summary only)."),
]

INPUT_DESCRIPTION = (
    "The input tensor (float32 or float64): a nested JSON array (float32), or an object with "
    "`data` / `base64` / `random`, `shape` and `dtype`."
)
MSGPACK_INPUT_DESCRIPTION = (
    "The input tensor (float32 or float64): best `{shape, dtype, bytes: <bin>}`, raw "
    "little-endian bytes; or any of the JSON forms."
)
PARAMETERS_DESCRIPTION = (
    "Tensors named like the module's state_dict keys (weight, bias, running_mean, ...), in any tensor form. "
    "Any not given is initialized as `torch.manual_seed(seed)` then building the module would."
)


class LossOptions(BaseModel):
    """A loss on the output, with torch.nn.functional's semantics; its gradient starts the backward pass."""

    model_config = ConfigDict(extra="forbid")

    function: Literal["mse_loss", "cross_entropy", "sum"] = Field(
        description="`mse_loss`, `cross_entropy` (logits; class indices or probabilities as target) or `sum`."
    )
    target: InputTensor | None = Field(
        None,
        description="mse_loss: the output's shape. cross_entropy: integer class indices of shape (N,) or "
        "(N, d1, ...), or class probabilities of the output's shape. sum: none.",
    )
    reduction: Literal["mean", "sum"] = Field("mean", description="As torch.nn.functional's `reduction`.")


class GradientOptions(BaseModel):
    """The backward pass a layer or stack request may ask for (app.stacks.run's backward step)."""

    gradients: StrictBool = Field(
        False,
        description="Also compute the gradients of the input and of every trainable parameter "
        "(grad_output or loss imply it).",
    )
    grad_output: InputTensor | None = Field(
        None,
        description="The upstream gradient dL/d(output), of the output's shape; default all ones "
        "(the gradient of output.sum()). Not with `loss`.",
    )
    loss: LossOptions | None = Field(None, description="A loss of the output whose gradient starts the backward pass.")

    def _gradient_forms(self) -> None:
        if self.grad_output is not None and self.loss is not None:
            raise ValueError("grad_output and loss both start the backward pass: give one of them")
        if self.grad_output is not None or self.loss is not None:
            self.gradients = True
        if self.grad_output is not None:
            self.grad_output = checked_tensor(self.grad_output, field="grad_output", dtypes=FLOAT_DTYPES)
        if self.loss is not None and self.loss.target is not None:
            self.loss.target = checked_tensor(self.loss.target, field="loss.target", dtypes=ALL_DTYPES)


class LayerRequestOptions(GradientOptions):
    """Everything in `POST /v1/layers/{kind}` but the typed config."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(description="The layer's PyTorch constructor arguments.")
    input: InputTensor = Field(description=INPUT_DESCRIPTION)
    parameters: dict[str, ParameterTensor] = Field(default_factory=dict, description=PARAMETERS_DESCRIPTION)
    seed: StrictInt = Field(0, description="The parameter-initialization seed (torch.manual_seed).")
    backend: Backend = "torch"
    compare: StrictBool = Field(False, description="Also compute with the other backend and report the difference.")
    training: StrictBool = Field(
        True, description="Training mode, like a freshly built module (matters for BatchNorm)."
    )
    device: Device = "cpu"
    encoding: ResponseEncoding = "list"

    @model_validator(mode="after")
    def _tensor_forms(self) -> "LayerRequestOptions":
        """Every tensor's form is checked with the rest of the request, before any limit: a request
        both invalid (422) and too large (413) is answered 422."""
        self.input = checked_tensor(self.input, field="input", dtypes=FLOAT_DTYPES)
        self._gradient_forms()
        self.parameters = {
            name: checked_tensor(value, field=f"parameters.{name}", dtypes=ALL_DTYPES)
            for name, value in self.parameters.items()
        }
        return self


def layer_request_model(title: str, config_model: type[BaseModel], msgpack: bool = False) -> type[BaseModel]:
    """`Conv2dRequest` (`Conv2dMsgpackRequest`): the options with `config` typed as the layer's
    constructor and the tensors in the forms a JSON (msgpack) body takes (for OpenAPI)."""
    tensors: dict[str, Any] = {}
    if msgpack:
        tensors = {
            "input": (MsgpackInputTensor, Field(description=MSGPACK_INPUT_DESCRIPTION)),
            "parameters": (
                dict[str, MsgpackParameterTensor],
                Field(default_factory=dict, description=PARAMETERS_DESCRIPTION),
            ),
        }
    return create_model(
        f"{title}{'Msgpack' if msgpack else ''}Request",
        __base__=LayerRequestOptions,
        config=(
            config_model,
            Field(
                description=f"The layer: torch.nn.{title}'s constructor arguments, with PyTorch's names and defaults."
            ),
        ),
        **tensors,
    )
