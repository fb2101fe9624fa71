"""Request and response bodies of POST /v1/shapes and POST /v1/sequential.

Requests are parsed with the generic `*Options` models (each layer's `config` is then parsed by
its own layer's model, so errors read `layers[2].config.kernel_size`); the per-kind models built by
`stack_request_model` only document the bodies in OpenAPI.
"""

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model, model_validator
from typing_extensions import TypeAliasType

from app.codec.tensors import ALL_DTYPES, FLOAT_DTYPES, checked_tensor
from app.schemas.requests import (
    INPUT_DESCRIPTION,
    MSGPACK_INPUT_DESCRIPTION,
    Backend,
    Device,
    GradientOptions,
    ResponseEncoding,
)
from app.schemas.responses import GRAD_FN_DESCRIPTION, LOSS_DESCRIPTION, Comparison
from app.schemas.tensors import (
    FloatDType,
    InputTensor,
    MsgpackInputTensor,
    MsgpackParameterTensor,
    NonFinite,
    ParameterTensor,
    TensorOut,
)

MAX_STACK_LAYERS = 1000
MAX_RANK = 64

KIND_DESCRIPTION = "A layer kind, as in `POST /v1/layers/{kind}`: `linear`, `conv2d`, `relu`, `flatten`, ..."
CONFIG_DESCRIPTION = "The layer's PyTorch constructor arguments (as in `POST /v1/layers/{kind}`)."
PARAMETERS_DESCRIPTION = (
    "Tensors named like this layer's state_dict keys (weight, bias, running_mean, ...), in any tensor form. Any not given is "
    "initialized as `torch.manual_seed(seed)` followed by building the whole `nn.Sequential` would."
)


class StackLayerOptions(BaseModel):
    """One layer of a stack: its kind and constructor arguments."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description=KIND_DESCRIPTION, examples=["conv2d"])
    config: dict[str, Any] = Field(default_factory=dict, description=CONFIG_DESCRIPTION)


class SequentialLayerOptions(StackLayerOptions):
    """One layer of a stack to run, with the tensors it should use."""

    parameters: dict[str, ParameterTensor] = Field(default_factory=dict, description=PARAMETERS_DESCRIPTION)


class ShapesOptions(BaseModel):
    """POST /v1/shapes: the shape arithmetic of a stack, without tensors."""

    model_config = ConfigDict(extra="forbid")

    input_shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(
        max_length=MAX_RANK,
        description="Shape of the stack's input, batch first: `(N, C, H, W)` for 2-D layers. "
        "N may be 0 (an empty batch, as torch allows); each layer refuses the other zero sizes torch refuses.",
        examples=[[100, 3, 120, 160]],
    )
    layers: list[StackLayerOptions] = Field(
        min_length=1,
        max_length=MAX_STACK_LAYERS,
        description="The layers in order, as `nn.Sequential(...)` takes them.",
    )
    dtype: FloatDType = Field("float32", description="Element type, for the memory totals (4 or 8 bytes per element).")


class SequentialOptions(GradientOptions):
    """POST /v1/sequential: run a stack on an input, as `nn.Sequential` would."""

    model_config = ConfigDict(extra="forbid")

    layers: list[SequentialLayerOptions] = Field(
        min_length=1,
        max_length=MAX_STACK_LAYERS,
        description="The layers in order, as `nn.Sequential(...)` takes them.",
    )
    input: InputTensor = Field(description=INPUT_DESCRIPTION)
    seed: StrictInt = Field(
        0, description="torch.manual_seed before the stack is built: initializes every tensor not given."
    )
    backend: Backend = "torch"
    compare: StrictBool = Field(
        False, description="Also run the whole stack on the other backend; compare every layer's output."
    )
    training: StrictBool = Field(True, description="Training mode for every layer, like a freshly built nn.Sequential.")
    device: Device = "cpu"
    encoding: ResponseEncoding = "list"
    return_intermediates: StrictBool = Field(False, description="Also return every layer's output.")

    @model_validator(mode="after")
    def _tensor_forms(self) -> "SequentialOptions":
        """Every tensor's form is checked with the rest of the request, before any limit (422 before 413)."""
        self.input = checked_tensor(self.input, field="input", dtypes=FLOAT_DTYPES)
        self._gradient_forms()
        for index, layer in enumerate(self.layers):
            layer.parameters = {
                name: checked_tensor(value, field=f"layers[{index}].parameters.{name}", dtypes=ALL_DTYPES)
                for name, value in layer.parameters.items()
            }
        return self


def stack_request_model(
    name: str,
    base: type[BaseModel],
    layer_base: type[BaseModel],
    configs: dict[str, tuple[str, type[BaseModel]]],
    msgpack: bool = False,
) -> type[BaseModel]:
    """`ShapesRequest`: `base` with `layers` typed as a union (named `StackLayer`) of every kind's
    {kind, config} (for OpenAPI). `SequentialMsgpackRequest` (msgpack=True): tensors in the forms a
    msgpack body takes, raw bytes included."""
    suffix = ("Stack" if layer_base is StackLayerOptions else "Sequential") + ("Msgpack" if msgpack else "") + "Layer"
    tensors: dict[str, Any] = {}
    if msgpack:
        tensors["parameters"] = (
            dict[str, MsgpackParameterTensor],
            Field(default_factory=dict, description=PARAMETERS_DESCRIPTION),
        )
    layer_models = []
    for kind, (title, config_model) in configs.items():
        required = any(f.is_required() for f in config_model.model_fields.values())
        layer_models.append(
            create_model(
                f"{title}{suffix}",
                __base__=layer_base,
                kind=(Literal[kind], Field(description=KIND_DESCRIPTION)),  # type: ignore[arg-type]  # a run-time Literal
                config=(
                    config_model,
                    Field(... if required else {}, description=f"torch.nn.{title}'s constructor arguments."),
                ),
                **tensors,
            )
        )
    item = (
        layer_models[0]
        if len(layer_models) == 1
        # Union[...] (not |): the union is built at run time from a tuple
        else TypeAliasType(suffix, Annotated[Union[tuple(layer_models)], Field(discriminator="kind")])  # noqa: UP007
    )
    fields: dict[str, Any] = {"layers": (list[item], base.model_fields["layers"])}  # type: ignore[valid-type]
    if msgpack:
        fields["input"] = (MsgpackInputTensor, Field(description=MSGPACK_INPUT_DESCRIPTION))
    return create_model(name, __base__=base, **fields)


class ShapesRow(BaseModel):
    """One layer of POST /v1/shapes, like a row of torchinfo.summary."""

    index: int = Field(description="Position in `layers`.")
    kind: str
    config: dict[str, Any] = Field(description="Every constructor argument, defaults filled in.")
    input_shape: list[int]
    output_shape: list[int]
    parameters: dict[str, list[int]] = Field(
        description="Trainable tensors' shapes by state_dict name.", examples=[{"weight": [16, 3, 3, 3], "bias": [16]}]
    )
    buffers: dict[str, list[int]] = Field(description="Buffers' shapes (BatchNorm's running statistics).")
    parameter_count: int = Field(description="Trainable elements (torchinfo's Param #).")
    macs: int = Field(description="Multiply-adds of one forward pass, torchinfo's convention (bias elements count).")
    output_bytes: int = Field(description="Bytes of this layer's output for the dtype.")
    formula: list[str] = Field(
        description="Output-size formulas with the numbers substituted, one per spatial dimension.",
        examples=[["H_out = floor((120 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 59"]],
    )
    receptive_field: list[int] | None = Field(
        description="Per spatial dimension: input elements one output element sees, r_out = r_in + (k-1)*d*j_in. "
        "Null before/without sliding windows or after a layer that mixes positions (Flatten, Linear)."
    )
    jump: list[int] | None = Field(
        description="Per spatial dimension: the effective stride j_out = j_in * s, "
        "in input elements (null when receptive_field is)."
    )


class ShapesTotals(BaseModel):
    """Totals, named after torchinfo.summary's (ModelStatistics) where it has them."""

    parameter_count: int = Field(description="torchinfo's total_params: trainable elements (buffers excluded).")
    macs: int = Field(
        description="torchinfo's total_mult_adds (for a Linear on more than one leading dimension "
        "torchinfo counts only the first; this counts every row)."
    )
    input_bytes: int = Field(
        description="The input tensor's bytes (torchinfo's total_input adds the Python "
        "storage object's header, as sys.getsizeof counts it)."
    )
    output_bytes: int = Field(description="Every layer's output, once (the activations one forward pass produces).")
    forward_backward_pass_bytes: int = Field(
        description="torchinfo's total_output_bytes ('Forward/backward pass size'): twice the outputs of the layers "
        "that have parameters (outputs and their gradients)."
    )
    parameter_bytes: int = Field(description="torchinfo's total_param_bytes.")
    buffer_bytes: int = Field(
        description="Buffers (running statistics; num_batches_tracked is 8-byte int64). torchinfo does not count them."
    )
    estimated_total_bytes: int = Field(
        description="torchinfo's 'Estimated Total Size': input + forward/backward pass + parameters."
    )


class ShapesResponse(BaseModel):
    input_shape: list[int]
    dtype: FloatDType
    output_shape: list[int] = Field(description="The last layer's output shape.")
    layers: list[ShapesRow]
    totals: ShapesTotals


class StackComparison(Comparison):
    """The final output against the other backend's, which ran the whole stack on its own."""

    all_layers_allclose: bool = Field(description="Every layer's output (and buffers, indices) within tolerance.")


class SequentialLayerResult(BaseModel):
    index: int
    kind: str
    config: dict[str, Any] = Field(description="Every constructor argument, defaults filled in.")
    input_shape: list[int]
    output_shape: list[int]
    parameters: dict[str, TensorOut] = Field(description="Trainable tensors (weight, bias) used.")
    parameter_count: int
    buffers: dict[str, TensorOut] | None = Field(None, description="Buffers after the pass (BatchNorm).")
    indices: TensorOut | None = Field(None, description="Max-pool argmax indices (return_indices).")
    statistics: dict[str, TensorOut] | None = Field(None, description="Per-channel statistics used (BatchNorm).")
    formula: list[str] | None = Field(None, description="Output-size formulas with the numbers substituted.")
    output: TensorOut | None = Field(None, description="This layer's output (return_intermediates).")
    comparison: Comparison | None = Field(None, description="This layer's output against the other backend's chain.")
    gradients: dict[str, TensorOut] | None = Field(
        None, description="With gradients: dL/d(parameter) for this layer's trainable parameters by state_dict name."
    )
    elapsed_ms: float


class SequentialResponse(BaseModel):
    backend: str
    device: str = Field(description="Where the torch backend computed.")
    input_shape: list[int]
    output_shape: list[int]
    output: TensorOut = Field(description="The last layer's output.")
    layers: list[SequentialLayerResult]
    parameter_count: int = Field(description="Trainable elements in the whole stack.")
    comparison: StackComparison | None = None
    gradients: dict[str, TensorOut] | None = Field(
        None, description="With gradients: dL/d(input) as `input`; each layer's parameter gradients are in its row."
    )
    grad_fn: str | None = Field(None, description=GRAD_FN_DESCRIPTION)
    loss: float | NonFinite | None = Field(None, description=LOSS_DESCRIPTION)
    elapsed_ms: float = Field(description="Compute time of the requested backend, all layers.")
