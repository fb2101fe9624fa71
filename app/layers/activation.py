"""The glue of a stack: torch.nn.ReLU(inplace=False) and torch.nn.Flatten(start_dim=1, end_dim=-1)."""

import math

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from app.errors import InvalidInput
from app.layers.base import LayerSpec, Shape


class ReLUConfig(BaseModel):
    """torch.nn.ReLU's constructor arguments."""

    model_config = ConfigDict(extra="forbid", title="ReLUConfig")

    inplace: StrictBool = Field(
        False,
        description="Accepted for compatibility with nn.ReLU; it changes nothing in the results "
        "(the service never overwrites a request's tensors).",
    )


class FlattenConfig(BaseModel):
    """torch.nn.Flatten's constructor arguments."""

    model_config = ConfigDict(extra="forbid", title="FlattenConfig")

    start_dim: StrictInt = Field(1, description="First dimension to merge; negative counts from the end.", examples=[1])
    end_dim: StrictInt = Field(
        -1, description="Last dimension to merge (inclusive); negative counts from the end.", examples=[-1]
    )


def same_shape(config: ReLUConfig, input_shape: Shape) -> Shape:
    return tuple(input_shape)


def output_elements(config: BaseModel, input_shape: Shape, output_shape: Shape) -> int:
    return math.prod(output_shape)


def flatten_dims(config: FlattenConfig, input_shape: Shape) -> tuple[int, int]:
    """start_dim and end_dim made non-negative, checked as torch.flatten checks them (0-d counts as 1-d)."""
    rank = max(len(input_shape), 1)
    dims = []
    for name in ("start_dim", "end_dim"):
        dim = getattr(config, name)
        if not -rank <= dim < rank:
            raise InvalidInput(
                f"config.{name} is {dim}, but the input has {len(input_shape)} dimension(s) (shape "
                f"{list(input_shape)}): it must be in [{-rank}, {rank - 1}]",
                field=f"config.{name}",
                expected=f"[{-rank}, {rank - 1}]",
                actual=dim,
            )
        dims.append(dim % rank)
    start, end = dims
    if start > end:
        raise InvalidInput(
            f"config.start_dim ({config.start_dim}, dimension {start}) comes after config.end_dim "
            f"({config.end_dim}, dimension {end}) for an input of shape {list(input_shape)}",
            field="config.start_dim",
            expected=f"<= {end}",
            actual=start,
        )
    return start, end


def flatten_shape(config: FlattenConfig, input_shape: Shape) -> Shape:
    start, end = flatten_dims(config, input_shape)
    shape = tuple(input_shape) or (1,)
    return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])


def flatten_formulas(config: FlattenConfig, input_shape: Shape) -> list[str]:
    start, end = flatten_dims(config, input_shape)
    shape = tuple(input_shape) or (1,)
    merged = shape[start : end + 1]
    return [
        f"{_tuple(input_shape)} -> {_tuple(flatten_shape(config, input_shape))}: dims {start}..{end} merged, "
        f"{'*'.join(map(str, merged))} = {math.prod(merged)}"
    ]


def _tuple(shape: Shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def no_parameters(config: BaseModel) -> dict[str, Shape]:
    return {}


SPECS = [
    LayerSpec(
        kind="relu",
        torch_name="ReLU",
        config_model=ReLUConfig,
        summary="ReLU: y = max(0, x), elementwise",
        description="torch.nn.ReLU. Any input shape; the output has the same shape. No parameters.",
        output_shape=same_shape,
        parameter_shapes=no_parameters,
        work=output_elements,
        examples={
            "small": {
                "summary": "ReLU on a 2x3 tensor, compared with the reference",
                "value": {"config": {}, "input": [[-1.5, 0.0, 2.0], [0.25, -0.75, 3.0]], "compare": True},
            },
        },
    ),
    LayerSpec(
        kind="flatten",
        torch_name="Flatten",
        config_model=FlattenConfig,
        summary="Flatten: merge dimensions start_dim..end_dim into one",
        description="torch.nn.Flatten. With the defaults, `(N, C, H, W)` becomes `(N, C*H*W)`, the step between "
        "the convolutional and the linear part of a network. Negative dims count from the end; "
        "a 0-d input counts as 1-d, as in torch.flatten. No parameters.",
        output_shape=flatten_shape,
        parameter_shapes=no_parameters,
        formulas=flatten_formulas,
        examples={
            "conv_to_linear": {
                "summary": "Flatten (2, 16, 5, 5) feature maps to (2, 400)",
                "value": {
                    "config": {},
                    "input": {"random": "normal", "shape": [2, 16, 5, 5], "seed": 0},
                    "encoding": "none",
                },
            },
            "middle_dims": {
                "summary": "Flatten dims 1..2 of (2, 3, 4, 5) into (2, 12, 5)",
                "value": {
                    "config": {"start_dim": 1, "end_dim": 2},
                    "input": {"random": "normal", "shape": [2, 3, 4, 5], "seed": 0},
                },
            },
        },
    ),
]
