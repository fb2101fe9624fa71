"""What the sliding-window layers' configs share (conv and pool): a base model, and PyTorch's
int-or-tuple arguments.

torch.nn.Conv2d(kernel_size=3) and kernel_size=(3, 3) mean the same; a tuple needs one entry per
spatial dimension. Validated by one function so an error says plainly what is allowed, instead of
one message per branch of a union.
"""

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

LIST_NAMES = {1: "Size", 0: "Padding"}


class WindowConfig(BaseModel):
    """A sliding-window layer's constructor arguments; `dims` is its number of spatial dimensions."""

    model_config = ConfigDict(extra="forbid")
    dims: ClassVar[int]
    if TYPE_CHECKING:  # the fields every window has, added per kind by create_model, as type checkers should see them
        kernel_size: int | tuple[int, ...]


@cache  # one type per name: a schema is defined once and referenced from every config that uses it
def int_or_tuple(dims: int, minimum: int, strings: tuple[str, ...] = (), *, name: str) -> Any:
    """An int >= minimum, or a list of `dims` of them (or one of `strings`), kept as given
    (a list becomes a tuple), as PyTorch's constructors take them.

    In OpenAPI it is a schema named `{name}{dims}d` (`Size2d`), its list `Size2dList` and its
    strings `{name}String`: named, so client generators make one type of each instead of numbered
    copies (`Padding1` ... `Padding11`)."""
    bound = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
    allowed = f"a {bound} integer or a list of {dims} {bound} integers"
    if strings:
        allowed = " or ".join(f'"{s}"' for s in strings) + f", or {allowed}"

    def validate(value: Any) -> int | str | tuple[int, ...]:
        if isinstance(value, str) and value in strings:
            return value
        items = value if isinstance(value, (list, tuple)) else [value]
        if (isinstance(value, (list, tuple)) and len(value) != dims) or not all(
            type(item) is int and item >= minimum for item in items
        ):
            raise PydanticCustomError(
                "int_or_tuple", "must be {allowed}, got {got}", {"allowed": allowed, "got": repr(value)[:100]}
            )
        return tuple(value) if isinstance(value, (list, tuple)) else value

    integer = Annotated[int, Field(ge=minimum)]
    forms: tuple[Any, ...] = (integer, _int_list(dims, minimum))
    if strings:
        forms = (_strings(f"{name}String", strings), *forms)
    return TypeAliasType(
        f"{name}{dims}d",
        Annotated[
            Any,
            PlainValidator(validate, json_schema_input_type=Union[forms]),  # noqa: UP007 (built at run time)
            Field(description=f"{allowed[0].upper()}{allowed[1:]}."),
        ],
    )


@cache
def _int_list(dims: int, minimum: int) -> Any:
    name = LIST_NAMES.get(minimum, f"AtLeast{minimum}")
    return TypeAliasType(
        f"{name}{dims}dList",
        Annotated[list[Annotated[int, Field(ge=minimum)]], Field(min_length=dims, max_length=dims)],
    )


@cache
def _strings(name: str, strings: tuple[str, ...]) -> Any:
    return TypeAliasType(name, Literal[strings])
