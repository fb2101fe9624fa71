"""Response bodies, as documented in OpenAPI. Routes write them with orjson directly."""

from typing import Any

from pydantic import BaseModel, Field, create_model

from app.schemas.tensors import NonFinite, TensorOut


class GradientComparison(BaseModel):
    """One gradient against the other backend's, with the same tolerances as the output."""

    max_abs_diff: float | NonFinite
    max_rel_diff: float | NonFinite
    allclose: bool


GRADIENTS_DESCRIPTION = (
    "With gradients (or grad_output, or loss): dL/d(input) as `input` and dL/d(parameter) "
    "for each trainable parameter by state_dict name, in the requested encoding."
)
GRAD_FN_DESCRIPTION = (
    'The output\'s autograd node as torch names it ("AddmmBackward0"); null from the reference backend.'
)
LOSS_DESCRIPTION = "The loss's value (with `loss`)."


class Comparison(BaseModel):
    """The other backend against the requested one, with torch.testing.assert_close's tolerances."""

    backend: str = Field(description="The backend compared against.")
    max_abs_diff: float | NonFinite = Field(description="max |this - other| over the output's elements.")
    max_rel_diff: float | NonFinite = Field(description="max |this - other| / |other| where they differ.")
    allclose: bool = Field(description="Output (and buffers; indices equal) within rtol/atol.")
    rtol: float = Field(description="Relative tolerance: torch.testing.assert_close's default for the dtype.")
    atol: float = Field(description="Absolute tolerance: torch.testing.assert_close's default for the dtype.")
    elapsed_ms: float = Field(description="The other backend's compute time.")
    gradients: dict[str, GradientComparison] | None = Field(
        None, description="With gradients: each gradient by name against the other backend's."
    )
    indices_equal: bool | None = Field(None, description="Max-pool indices identical (return_indices).")
    buffers_max_abs_diff: float | NonFinite | None = Field(None, description="max |this - other| over the buffers.")


class LayerResponse(BaseModel):
    kind: str = Field(description="The layer kind, as in the route.", examples=["linear"])
    backend: str = Field(description="The backend that computed `output`: torch or reference.")
    device: str = Field("cpu", description="Where the torch backend computed.")
    config: dict[str, Any] = Field(description="Every constructor argument, defaults filled in.")
    input_shape: list[int] = Field(description="The input's shape.", examples=[[10, 4]])
    output_shape: list[int] = Field(description="The output's shape.", examples=[[10, 1]])
    output: TensorOut = Field(description="The layer's output, in the requested encoding.")
    parameters: dict[str, TensorOut] = Field(description="Trainable tensors (weight, bias) used.")
    parameter_count: int = Field(description="Trainable elements.")
    buffers: dict[str, TensorOut] | None = Field(None, description="Buffers after the pass (BatchNorm).")
    indices: TensorOut | None = Field(None, description="Max-pool argmax indices (return_indices).")
    statistics: dict[str, TensorOut] | None = Field(None, description="Per-channel statistics used (BatchNorm).")
    formula: list[str] | None = Field(None, description="Output-size formulas with the numbers substituted.")
    comparison: Comparison | None = Field(
        None, description="With compare=true: the other backend's output against this one."
    )
    gradients: dict[str, TensorOut] | None = Field(None, description=GRADIENTS_DESCRIPTION)
    grad_fn: str | None = Field(None, description=GRAD_FN_DESCRIPTION)
    loss: float | NonFinite | None = Field(None, description=LOSS_DESCRIPTION)
    elapsed_ms: float = Field(description="Compute time of the requested backend (forward and backward).")


def layer_response_model(title: str, config_model: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{title}Response", __base__=LayerResponse, config=(config_model, ...))


class ErrorItem(BaseModel):
    field: str | None = Field(None, description="The offending field, dotted: `config.kernel_size[0]`.")
    message: str = Field(description="What is wrong with it.")
    type: str | None = Field(None, description="pydantic's error type, e.g. `greater_than`.")


class ErrorBody(BaseModel):
    """The one error envelope, for every 4xx and 5xx."""

    error: str = Field(
        description="Error class: InvalidInput, ShapeMismatch, PayloadTooLarge, ...", examples=["ShapeMismatch"]
    )
    status: int = Field(description="The HTTP status, repeated.", examples=[422])
    detail: str = Field(
        description="What went wrong, with the expected and actual values.",
        examples=["input has 5 features in its last dimension (shape [10, 5]), config.in_features is 4"],
    )
    field: str | None = Field(None, description="The offending field, dotted.", examples=["input"])
    expected: Any = Field(None, description="What the field should have been, where it can be said.")
    actual: Any = Field(None, description="What it was (small values only, never a whole tensor).")
    limit: str | None = Field(None, description="The limit exceeded (413).")
    value: int | None = Field(None, description="The value that exceeded the limit (413).")
    retry_after: int | None = Field(
        None, description="Seconds to wait before retrying (503), as in the Retry-After header."
    )
    errors: list[ErrorItem] | None = Field(None, description="Every validation error (422).")
    layer: int | None = Field(
        None,
        description="In a stack (/v1/shapes, /v1/sequential): the index in `layers` of the layer that failed.",
        examples=[2],
    )
    kind: str | None = Field(None, description="In a stack: that layer's kind.", examples=["conv2d"])


class Health(BaseModel):
    status: str = Field(description="`ok` while the process is alive.", examples=["ok"])


class LayerKind(BaseModel):
    kind: str = Field(description="The URL name of the kind.", examples=["linear"])
    torch: str = Field(description="The torch.nn class.", examples=["torch.nn.Linear"])
    summary: str = Field(description="One line on what the layer computes.")
    path: str = Field(description="The route that computes it.", examples=["/v1/layers/linear"])
    config_schema: dict[str, Any] = Field(description="JSON schema of the config: the constructor's arguments.")
    defaults: dict[str, Any] = Field(
        description="The value of every optional argument when it is left out.", examples=[{"bias": True}]
    )
