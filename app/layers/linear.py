"""Linear: torch.nn.Linear(in_features, out_features, bias=True)."""

import math

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from app.errors import ShapeMismatch
from app.layers.base import LayerSpec, Shape


class LinearConfig(BaseModel):
    """torch.nn.Linear's constructor arguments."""

    model_config = ConfigDict(extra="forbid", title="LinearConfig")

    in_features: StrictInt = Field(
        gt=0, description="Size of each input sample (the input's last dimension).", examples=[4]
    )
    out_features: StrictInt = Field(gt=0, description="Size of each output sample.", examples=[1])
    bias: StrictBool = Field(True, description="Learn an additive bias.")


def output_shape(config: LinearConfig, input_shape: Shape) -> Shape:
    """(*, in_features) -> (*, out_features)."""
    if len(input_shape) < 1 or input_shape[-1] != config.in_features:
        got = input_shape[-1] if input_shape else "no"
        raise ShapeMismatch(
            f"input has {got} features in its last dimension (shape {list(input_shape)}), "
            f"config.in_features is {config.in_features}",
            field="input",
            expected=["*", config.in_features],
            actual=list(input_shape),
        )
    return (*input_shape[:-1], config.out_features)


def parameter_shapes(config: LinearConfig) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {"weight": (config.out_features, config.in_features)}
    if config.bias:
        shapes["bias"] = (config.out_features,)
    return shapes


def macs(config: LinearConfig, input_shape: Shape, out_shape: Shape) -> int:
    """torchinfo's convention: every weight and bias element once per output row.

    Equals torchinfo's count (output_size[0] x parameters) for `(N, in_features)` inputs; with more
    leading dimensions torchinfo counts only the first, this counts every row.
    """
    per_row = config.in_features * config.out_features + (config.out_features if config.bias else 0)
    return math.prod(out_shape[:-1]) * per_row


def work(config: LinearConfig, input_shape: Shape, out_shape: Shape) -> int:
    """Multiplications, for the MAC limit: in_features x out_features per output row."""
    return math.prod(out_shape[:-1]) * config.in_features * config.out_features


NOTEBOOK_INPUT = [
    [0.3102, 0.1271, -0.0823, 1.0858],
    [-1.1686, 1.6650, 1.3797, -0.9915],
    [0.3897, 0.3723, 1.0115, 0.1784],
    [1.9373, -1.0086, 0.7447, 0.2432],
    [0.4305, 0.0627, 0.7668, -1.9446],
    [1.0522, -0.2573, 0.6940, 0.0913],
    [-0.0278, -0.0746, -0.0560, -1.1732],
    [-1.1034, 0.8108, -1.1170, -0.2516],
    [-1.1515, 1.2772, -1.6101, -0.8164],
    [-0.6352, 0.9345, 0.4916, 1.1171],
]
NOTEBOOK_LINEAR = {
    "config": {"in_features": 4, "out_features": 1},
    "input": NOTEBOOK_INPUT,
    "parameters": {"weight": [[-0.2009, -0.0747, -0.2266, 0.2618]], "bias": [-0.4708]},
}
"""The notebook's first cell as a request: Linear(4, 1) with its printed weights on its 10x4 input."""

SPECS = [
    LayerSpec(
        kind="linear",
        torch_name="Linear",
        config_model=LinearConfig,
        summary="Linear: outputs = inputs x weight^T + bias",
        description="torch.nn.Linear. Input `(*, in_features)`, output `(*, out_features)`; "
        "weight `(out_features, in_features)`, bias `(out_features,)`.",
        output_shape=output_shape,
        parameter_shapes=parameter_shapes,
        macs=macs,
        work=work,
        examples={
            "notebook": {
                "summary": "Linear 10x4 to 1 (the notebook's first cell)",
                "value": {**NOTEBOOK_LINEAR, "compare": True},
            },
            "notebook_gradients": {
                "summary": "The notebook's Linear with its gradients (of output.sum(); grad_output or loss to choose)",
                "value": {**NOTEBOOK_LINEAR, "gradients": True, "compare": True},
            },
            "no_bias": {
                "summary": "Linear 4 to 1 without bias, seeded weights",
                "value": {
                    "config": {"in_features": 4, "out_features": 1, "bias": False},
                    "input": NOTEBOOK_INPUT,
                    "seed": 0,
                },
            },
            "random_input": {
                "summary": "Linear 4 to 1 on torch.randn(10, 4) with seed 0, reference backend",
                "value": {
                    "config": {"in_features": 4, "out_features": 1},
                    "input": {"random": "normal", "shape": [10, 4], "seed": 0},
                    "backend": "reference",
                    "compare": True,
                },
            },
        },
    )
]
