"""Response bodies, as documented in OpenAPI. Routes write them with orjson directly."""

from typing import Any

from pydantic import BaseModel, Field, create_model

from app.schemas.tensors import NonFinite, TensorOut


class Comparison(BaseModel):
    """The other backend against the requested one, with torch.testing.assert_close's tolerances."""

    backend: str = Field(description="The backend compared against.")
    max_abs_diff: float | NonFinite
    max_rel_diff: float | NonFinite
    allclose: bool = Field(description="Output (and buffers; indices equal) within rtol/atol.")
    rtol: float
    atol: float
    elapsed_ms: float = Field(description="The other backend's compute time.")
    indices_equal: bool | None = None
    buffers_max_abs_diff: float | NonFinite | None = None


class LayerResponse(BaseModel):
    kind: str
    backend: str
    config: dict[str, Any] = Field(description="Every constructor argument, defaults filled in.")
    input_shape: list[int]
    output_shape: list[int]
    output: TensorOut
    parameters: dict[str, TensorOut] = Field(description="Trainable tensors (weight, bias) used.")
    parameter_count: int = Field(description="Trainable elements.")
    buffers: dict[str, TensorOut] | None = Field(None, description="Buffers after the pass (BatchNorm).")
    indices: TensorOut | None = Field(None, description="Max-pool argmax indices (return_indices).")
    statistics: dict[str, TensorOut] | None = Field(None, description="Per-channel statistics used (BatchNorm).")
    formula: list[str] | None = Field(None, description="Output-size formulas with the numbers substituted.")
    comparison: Comparison | None = None
    elapsed_ms: float = Field(description="Compute time of the requested backend.")


def layer_response_model(title: str, config_model: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{title}Response", __base__=LayerResponse, config=(config_model, ...))


class ErrorItem(BaseModel):
    field: str | None = None
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    """The one error envelope, for every 4xx and 5xx."""

    error: str = Field(description="Error class: InvalidInput, ShapeMismatch, PayloadTooLarge, ...", examples=["ShapeMismatch"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["input has 5 features in its last dimension (shape [10, 5]), config.in_features is 4"])
    field: str | None = Field(None, description="The offending field, dotted.", examples=["input"])
    expected: Any = None
    actual: Any = None
    limit: str | None = Field(None, description="The limit exceeded (413).")
    value: int | None = Field(None, description="The value that exceeded the limit (413).")
    retry_after: int | None = Field(None, description="Seconds to wait before retrying (503), as in the Retry-After header.")
    errors: list[ErrorItem] | None = Field(None, description="Every validation error (422).")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class LayerKind(BaseModel):
    kind: str
    torch: str = Field(description="The torch.nn class.")
    summary: str
    path: str
    config_schema: dict[str, Any]
    defaults: dict[str, Any]
