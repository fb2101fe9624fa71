"""The tensor forms a request may use, and the forms a response returns.

Tensor payloads are typed with `SkipValidation`: the OpenAPI schema shows their real shape, but
pydantic never walks the elements. `app.codec.tensors` checks each form (`check_form`, before any limit)
and converts it with NumPy in one pass.

The schemas say exactly what the server accepts, per body type: the JSON forms (`InputTensor`,
`ParameterTensor`) and, for application/msgpack bodies, the same plus the raw-bytes form
(`MsgpackInputTensor`, `MsgpackParameterTensor`). Every schema that appears in more than one place
has a name of its own (`NonFinite`, `FloatDType`, `TensorShape`, ...), so code generators make one
type of it instead of numbered copies.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StrictInt, WithJsonSchema
from typing_extensions import TypeAliasType

from app.config import Settings

MAX_JSON_DEPTH = Settings.model_fields["max_json_depth"].default
MAX_TENSOR_ELEMENTS = Settings.model_fields["max_tensor_elements"].default

FloatDType = TypeAliasType("FloatDType", Literal["float32", "float64"])
"""What inputs and random draws take: the server refuses int64 there."""
TensorDType = TypeAliasType("TensorDType", Literal["float32", "float64", "int64"])
"""What given parameters and buffers take (int64: num_batches_tracked; other tensors are cast to the
input's dtype), and what responses carry (int64: indices, num_batches_tracked)."""
NonFinite = TypeAliasType("NonFinite", Literal["NaN", "Infinity", "-Infinity"])
"""JSON has no tokens for non-finite numbers: these strings stand for them."""

SPELLED_OUT_LEVELS = 8
"""Nesting levels NestedNumbers' schema writes out (every layer's input is at most 5-D)."""


def _nested_levels(levels: int) -> Any:
    """list[float | NonFinite | list[... | list[Any]]]: `levels` levels of numbers, then any array."""
    nested: Any = list[Any]
    for _ in range(levels):
        nested = list[float | NonFinite | nested]
    return nested


if TYPE_CHECKING:  # built at run time, which a type checker cannot follow
    NestedNumbers = list[Any]
else:
    NestedNumbers = TypeAliasType(
        "NestedNumbers",
        Annotated[
            _nested_levels(SPELLED_OUT_LEVELS),
            Field(
                description="A tensor as JSON arrays nested like it: the nesting depth is the rank, the innermost arrays hold "
                'the numbers (C order). Non-finite values as the strings "NaN", "Infinity", "-Infinity". Every row at one '
                "depth must have the same length (a ragged array is refused), and arrays nest at most LAYERLAB_MAX_JSON_DEPTH "
                f"({MAX_JSON_DEPTH}) deep (413 beyond). The schema spells out {SPELLED_OUT_LEVELS} levels, enough for every "
                f"layer's input (5-D at most), and leaves deeper levels open; they follow the same rule. (A recursive schema "
                "would say it in one line, but client generators cannot handle one.)",
                examples=[[[0.3102, 0.1271, -0.0823, 1.0858], [-1.1686, 1.665, 1.3797, -0.9915]]],
            ),
        ],
    )

TensorShape = TypeAliasType(
    "TensorShape",
    Annotated[
        list[Annotated[StrictInt, Field(ge=0)]],
        Field(
            max_length=MAX_JSON_DEPTH,
            description="Tensor shape, outermost dimension first: sizes >= 0 (`[]` for a 0-d tensor; a 0 batch size "
            "N is an empty batch, as torch allows, and each layer refuses the other zero sizes torch refuses), at most "
            f"LAYERLAB_MAX_JSON_DEPTH ({MAX_JSON_DEPTH}) of them. Their product, the element count, is at most "
            f"LAYERLAB_MAX_TENSOR_ELEMENTS ({MAX_TENSOR_ELEMENTS} by default; 413 above).",
            examples=[[10, 4]],
        ),
    ],
)

BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
Base64Text = Annotated[
    str,
    Field(
        pattern=BASE64_PATTERN,
        description="base64 (standard alphabet, padded, no line breaks) of the raw little-endian, C-order bytes: "
        '4 * ceil(bytes / 3) characters for shape and dtype\'s bytes (`""` for an empty tensor).',
    ),
]

RawBytes = Annotated[bytes, SkipValidation, WithJsonSchema({"type": "string", "format": "binary"})]
"""A msgpack `bin` (named apart: a field called `bytes` would shadow the type inside a model)."""
ResponseBytes = Annotated[
    bytes, SkipValidation, WithJsonSchema({"type": "string", "contentMediaType": "application/octet-stream"})
]
"""A response's msgpack `bin`: the string of raw bytes JSON Schema describes (not `format: binary`, which
client generators read as a file to upload)."""

DTYPE_DESCRIPTION = "Element type."
PARAMETER_DTYPE_DESCRIPTION = (
    "Element type; left out, the input's dtype (float64 for num_batches_tracked). "
    "The tensor is cast to the input's dtype (num_batches_tracked: to int64, and must "
    "hold a whole number)."
)


def _input_dtype_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a parameter's default dtype is the input's: no one value to document


class _DataForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: SkipValidation[NestedNumbers | float] = Field(
        description="Numbers, nested like the tensor, or flat in C order with `shape` (a bare number for a "
        '0-d tensor, shape `[]`). Non-finite values as the strings "NaN", "Infinity", "-Infinity".',
        examples=[[[0.3102, 0.1271, -0.0823, 1.0858]]],
    )
    shape: TensorShape | None = Field(None, description="Required when `data` is flat; checked when nested.")


class _Base64Form(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base64: Base64Text
    shape: TensorShape


class _BytesForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: TensorShape
    bytes: RawBytes = Field(description="The raw bytes, shape and dtype's size (a msgpack bin).")


class TensorData(_DataForm):
    """An input tensor's values as a JSON array, nested like the tensor or flat with `shape`."""

    dtype: FloatDType = Field("float32", description=DTYPE_DESCRIPTION)


class TensorBase64(_Base64Form):
    """An input tensor's raw little-endian, C-order bytes, base64-encoded: the fast and bit-exact JSON form."""

    dtype: FloatDType = Field("float32", description=DTYPE_DESCRIPTION)


class TensorBytes(_BytesForm):
    """An input tensor's raw little-endian, C-order bytes as a msgpack `bin`: the fastest form."""

    dtype: FloatDType = Field("float32", description=DTYPE_DESCRIPTION)


class TensorRandom(BaseModel):
    """Values drawn as `torch.manual_seed(seed); torch.randn(*shape)` (or `torch.rand`), so they can be rebuilt locally."""

    model_config = ConfigDict(extra="forbid")

    random: Literal["normal", "uniform"] = Field(description="`normal`: torch.randn; `uniform`: torch.rand.")
    shape: TensorShape
    seed: int = Field(0, ge=-(2**63), le=2**64 - 1, description="torch.manual_seed value used for the draw.")
    dtype: FloatDType = Field("float32", description="Element type (passed to torch.randn/rand as dtype).")


class ParameterData(_DataForm):
    """A parameter's or buffer's values as a JSON array, nested like the tensor or flat with `shape`."""

    dtype: TensorDType = Field(
        "float32", description=PARAMETER_DTYPE_DESCRIPTION, json_schema_extra=_input_dtype_default
    )


class ParameterBase64(_Base64Form):
    """A parameter's or buffer's raw little-endian, C-order bytes, base64-encoded."""

    dtype: TensorDType = Field(
        "float32", description=PARAMETER_DTYPE_DESCRIPTION, json_schema_extra=_input_dtype_default
    )


class ParameterBytes(_BytesForm):
    """A parameter's or buffer's raw little-endian, C-order bytes as a msgpack `bin`."""

    dtype: TensorDType = Field(
        "float32", description=PARAMETER_DTYPE_DESCRIPTION, json_schema_extra=_input_dtype_default
    )


InputTensor = SkipValidation[NestedNumbers | float | TensorData | TensorBase64 | TensorRandom]
"""An input in a JSON body (a bare number is a 0-d tensor); decoded by `app.codec.tensors.decode_tensor`."""
MsgpackInputTensor = SkipValidation[NestedNumbers | float | TensorData | TensorBase64 | TensorBytes | TensorRandom]
"""An input in a msgpack body: the JSON forms, and raw bytes."""
ParameterTensor = SkipValidation[NestedNumbers | float | ParameterData | ParameterBase64 | TensorRandom]
"""A given parameter or buffer in a JSON body."""
MsgpackParameterTensor = SkipValidation[
    NestedNumbers | float | ParameterData | ParameterBase64 | ParameterBytes | TensorRandom
]
"""A given parameter or buffer in a msgpack body."""


class TensorSummary(BaseModel):
    min: float | NonFinite
    max: float | NonFinite
    mean: float | NonFinite
    std: float | NonFinite


class TensorOut(BaseModel):
    """A returned tensor: `data` (encoding=list), `base64` (encoding=base64) or `summary` (encoding=none);
    in application/msgpack responses `bytes` (or `summary`)."""

    shape: list[int]
    dtype: TensorDType
    data: SkipValidation[NestedNumbers | float | NonFinite] | None = Field(
        None, description="Nested lists (encoding=list); a bare number for a 0-d tensor (shape `[]`)."
    )
    base64: str | None = Field(None, description="Raw little-endian bytes (encoding=base64).")
    summary: TensorSummary | None = Field(None, description="Statistics only (encoding=none).")
    bytes: ResponseBytes | None = Field(None, description="Raw little-endian bytes (application/msgpack responses).")
