"""The tensor forms a request may use, and the forms a response returns.

Tensor payloads are typed with `SkipValidation`: the OpenAPI schema shows their real shape, but
pydantic never walks the elements. `app.codec.tensors` converts them with NumPy in one pass.
"""

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, WithJsonSchema
from typing_extensions import TypeAliasType

DType = Literal["float32", "float64"]
ParameterDType = Literal["float32", "float64", "int64"]
NonFinite = Literal["NaN", "Infinity", "-Infinity"]

NestedNumbers = TypeAliasType(
    "NestedNumbers",
    "list[float | NonFinite | NestedNumbers]",
)

Shape = Annotated[
    list[int],
    Field(description="Tensor shape, outermost dimension first.", examples=[[10, 4]]),
]


class TensorData(BaseModel):
    """Values as a JSON array, nested like the tensor or flat with `shape`."""

    model_config = ConfigDict(extra="forbid")

    data: SkipValidation[NestedNumbers | float] = Field(
        description='Numbers, nested to any depth or flat (a bare number for a 0-d tensor, shape `[]`). '
        'Non-finite values as the strings "NaN", "Infinity", "-Infinity".',
        examples=[[[0.3102, 0.1271, -0.0823, 1.0858]]],
    )
    shape: Shape | None = Field(None, description="Required when `data` is flat; checked when nested.")
    dtype: ParameterDType = Field("float32", description="Element type.")


class TensorBase64(BaseModel):
    """Raw little-endian, C-order bytes, base64-encoded: the fast and bit-exact JSON form."""

    model_config = ConfigDict(extra="forbid")

    base64: str = Field(description="base64 of the raw bytes (standard alphabet, padded).")
    shape: Shape
    dtype: ParameterDType = Field("float32", description="Element type.")


class TensorRandom(BaseModel):
    """Values drawn as `torch.manual_seed(seed); torch.randn(*shape)` (or `torch.rand`), so they can be rebuilt locally."""

    model_config = ConfigDict(extra="forbid")

    random: Literal["normal", "uniform"] = Field(description="`normal`: torch.randn; `uniform`: torch.rand.")
    shape: Shape
    seed: int = Field(0, description="torch.manual_seed value used for the draw.")
    dtype: DType = Field("float32", description="Element type (passed to torch.randn/rand as dtype).")


RawBytes = Annotated[bytes, SkipValidation, WithJsonSchema({"type": "string", "contentMediaType": "application/octet-stream"})]
"""A msgpack `bin` (named apart: a field called `bytes` would shadow the type inside a model). Its
schema is the one JSON Schema gives raw bytes, the same for requests and responses."""


class TensorBytes(BaseModel):
    """Raw little-endian, C-order bytes as a msgpack `bin`: the fastest form (`application/msgpack` bodies only)."""

    model_config = ConfigDict(extra="forbid")

    shape: Shape
    dtype: ParameterDType = Field("float32", description="Element type.")
    bytes: RawBytes = Field(description="The raw bytes (a msgpack bin; JSON bodies use `base64`).")


TensorInput = SkipValidation[Union[NestedNumbers, float, TensorData, TensorBase64, TensorBytes, TensorRandom]]  # noqa: UP007 (a recursive alias)
"""Any of the request forms (a bare number is a 0-d tensor); decoded by `app.codec.tensors.decode_tensor`."""


class TensorSummary(BaseModel):
    min: float | NonFinite
    max: float | NonFinite
    mean: float | NonFinite
    std: float | NonFinite


class TensorOut(BaseModel):
    """A returned tensor: `data` (encoding=list), `base64` (encoding=base64) or `summary` (encoding=none)."""

    shape: list[int]
    dtype: Literal["float32", "float64", "int64"]
    data: SkipValidation[NestedNumbers | float | NonFinite] | None = Field(
        None, description="Nested lists (encoding=list); a bare number for a 0-d tensor (shape `[]`).")
    base64: str | None = Field(None, description="Raw little-endian bytes (encoding=base64).")
    summary: TensorSummary | None = Field(None, description="Statistics only (encoding=none).")
    bytes: RawBytes | None = Field(None, description="Raw little-endian bytes (application/msgpack responses).")
