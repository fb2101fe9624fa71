"""What the sliding-window layers' configs share (conv and pool): a base model, and PyTorch's
int-or-tuple arguments.

torch.nn.Conv2d(kernel_size=3) and kernel_size=(3, 3) mean the same; a tuple needs one entry per
spatial dimension. Validated by one function so an error says plainly what is allowed, instead of
one message per branch of a union.
"""

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError


class WindowConfig(BaseModel):
    """A sliding-window layer's constructor arguments; `dims` is its number of spatial dimensions."""

    model_config = ConfigDict(extra="forbid")
    dims: ClassVar[int]
    if TYPE_CHECKING:  # the fields every window has, added per kind by create_model, as type checkers should see them
        kernel_size: int | tuple[int, ...]


def int_or_tuple(dims: int, minimum: int, strings: tuple[str, ...] = ()) -> Any:
    """An int >= minimum, or a list of `dims` of them (or one of `strings`), kept as given
    (a list becomes a tuple), as PyTorch's constructors take them."""
    bound = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
    allowed = f"a {bound} integer or a list of {dims} {bound} integers"
    if strings:
        allowed = " or ".join(f'"{s}"' for s in strings) + f", or {allowed}"

    def validate(value: Any) -> int | str | tuple[int, ...]:
        if isinstance(value, str) and value in strings:
            return value
        items = value if isinstance(value, (list, tuple)) else [value]
        if (isinstance(value, (list, tuple)) and len(value) != dims) or not all(
                type(item) is int and item >= minimum for item in items):
            raise PydanticCustomError("int_or_tuple", "must be {allowed}, got {got}",
                                      {"allowed": allowed, "got": repr(value)[:100]})
        return tuple(value) if isinstance(value, (list, tuple)) else value

    integer = {"type": "integer", "minimum": minimum}
    schema: dict[str, Any] = {"anyOf": [integer, {"type": "array", "items": integer, "minItems": dims, "maxItems": dims}]}
    if strings:
        schema["anyOf"].insert(0, {"type": "string", "enum": list(strings)})
    return Annotated[int | str | tuple[int, ...] if strings else int | tuple[int, ...],
                     PlainValidator(validate), WithJsonSchema(schema)]
