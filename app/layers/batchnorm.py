"""Batch normalization: torch.nn.BatchNorm1d/2d/3d(num_features, eps, momentum, affine, track_running_stats)."""

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from app.errors import InvalidInput, ShapeMismatch
from app.layers.base import LayerSpec, Shape


class BatchNormConfig(BaseModel):
    """torch.nn.BatchNorm1d/2d/3d's constructor arguments."""

    model_config = ConfigDict(extra="forbid", title="BatchNormConfig")

    num_features: StrictInt = Field(
        gt=0, description="C, the number of channels (the input's dimension 1).", examples=[3]
    )
    eps: StrictFloat = Field(
        1e-5,
        ge=0,
        allow_inf_nan=False,
        description="Added to the variance for numerical stability (must be > 0 when batch statistics are used).",
    )
    momentum: StrictFloat | None = Field(
        0.1,
        allow_inf_nan=False,
        description="Weight of the batch in the running statistics' update: "
        "running = (1 - momentum) * running + momentum * batch. null: a cumulative moving average.",
    )
    affine: StrictBool = Field(True, description="Learn a per-channel weight (init 1) and bias (init 0).")
    track_running_stats: StrictBool = Field(
        True,
        description="Keep running_mean, running_var and num_batches_tracked, and use them in evaluation mode "
        "(when false, evaluation mode normalizes with the batch's statistics too).",
    )
    bias: StrictBool = Field(
        True,
        description="With affine, also learn the per-channel bias (torch >= 2.13's keyword-only `bias`); "
        "false keeps only the weight.",
    )


RANKS = {"batchnorm1d": (2, 3), "batchnorm2d": (4,), "batchnorm3d": (5,)}
LAYOUTS = {"batchnorm1d": "(N, C) or (N, C, L)", "batchnorm2d": "(N, C, H, W)", "batchnorm3d": "(N, C, D, H, W)"}


def _output_shape(kind: str):
    def output_shape(config: BatchNormConfig, input_shape: Shape) -> Shape:
        """Shape-preserving: (N, C, *spatial) -> (N, C, *spatial), with C == num_features when the layer
        holds per-channel tensors (affine or running statistics). Without either, torch never reads
        num_features and normalizes any number of channels; so does this."""
        ranks = RANKS[kind]
        if len(input_shape) not in ranks:
            expected = " or ".join(f"{r}D" for r in ranks)
            raise ShapeMismatch(
                f"{kind} expects a {expected} input {LAYOUTS[kind]}; got {len(input_shape)}D input of shape {list(input_shape)}",
                field="input",
                expected=LAYOUTS[kind],
                actual=list(input_shape),
            )
        if input_shape[1] != config.num_features and (config.affine or config.track_running_stats):
            raise ShapeMismatch(
                f"input has {input_shape[1]} channels (dimension 1 of shape {list(input_shape)}); "
                f"config.num_features is {config.num_features}",
                field="input",
                expected=config.num_features,
                actual=input_shape[1],
            )
        return tuple(input_shape)

    return output_shape


def uses_batch_statistics(config: BatchNormConfig, training: bool) -> bool:
    """PyTorch's `bn_training`: training mode, or evaluation without running statistics."""
    return training or not config.track_running_stats


def check_mode(config: BatchNormConfig, input_shape: Shape, training: bool) -> None:
    """What F.batch_norm refuses once the mode is known: one value per channel, eps = 0."""
    if not uses_batch_statistics(config, training):
        return
    why = (
        "in training mode" if training else "in evaluation mode without running statistics (track_running_stats=false)"
    )
    if input_shape[0] * math.prod(input_shape[2:]) == 1:
        raise InvalidInput(
            f"input of shape {list(input_shape)} has 1 value per channel; batch statistics ({why}) need more than 1 "
            f'(PyTorch: "Expected more than 1 value per channel when training, got input size {list(input_shape)}")',
            field="input",
            expected="N * prod(spatial) > 1",
            actual=list(input_shape),
        )
    if config.eps <= 0:
        raise InvalidInput(
            f"config.eps must be positive when batch statistics are used ({why}), got {config.eps}",
            field="config.eps",
            expected="> 0",
            actual=config.eps,
        )


def parameter_shapes(config: BatchNormConfig) -> dict[str, Shape]:
    C = config.num_features
    if not config.affine:
        return {}
    return {"weight": (C,), "bias": (C,)} if config.bias else {"weight": (C,)}


def buffer_shapes(config: BatchNormConfig) -> dict[str, Shape]:
    C = config.num_features
    return {"running_mean": (C,), "running_var": (C,), "num_batches_tracked": ()} if config.track_running_stats else {}


def macs(config: BatchNormConfig, input_shape: Shape, out_shape: Shape) -> int:
    """torchinfo's convention: output_size[0] * trainable parameters, i.e. N * 2C (0 when affine=False)."""
    return out_shape[0] * sum(math.prod(s) for s in parameter_shapes(config).values())


def work(config: BatchNormConfig, input_shape: Shape, out_shape: Shape) -> int:
    """About two operations per element: one for the statistics, one multiply-add to normalize."""
    return 2 * math.prod(input_shape)


def _random(shape: list[int], seed: int = 0) -> dict[str, Any]:
    return {"random": "normal", "shape": shape, "seed": seed}


EXAMPLES = {
    "batchnorm1d": {
        "notebook": {
            "summary": "BatchNorm1d(5) on (10, 5) (the notebook's cell: torch.randn(10, 5), training mode)",
            "value": {"config": {"num_features": 5}, "input": _random([10, 5]), "compare": True},
        },
        "evaluation": {
            "summary": "BatchNorm1d(5) on (10, 5) in evaluation mode, running statistics = the notebook's batch mean and variance",
            "value": {
                "config": {"num_features": 5},
                "input": _random([10, 5]),
                "training": False,
                "parameters": {
                    "running_mean": [0.18866, -0.57365, -0.099263, -0.00033903, -0.38356],
                    "running_var": [1.2932, 0.7139, 1.5251, 1.4939, 0.5185],
                    "num_batches_tracked": {"data": 1, "shape": [], "dtype": "int64"},
                },
                "compare": True,
            },
        },
        "sequence": {
            "summary": "BatchNorm1d(4) on (8, 4, 6), cumulative average (momentum null), reference backend",
            "value": {
                "config": {"num_features": 4, "momentum": None},
                "input": _random([8, 4, 6], 1),
                "backend": "reference",
                "compare": True,
            },
        },
    },
    "batchnorm2d": {
        "notebook": {
            "summary": "BatchNorm2d(3) on (2, 3, 2, 2) (the notebook's cell: torch.randn(2, 3, 2, 2), training mode)",
            "value": {"config": {"num_features": 3}, "input": _random([2, 3, 2, 2]), "compare": True},
        },
        "next_step": {
            "summary": "BatchNorm2d(3), a second training step: the notebook example's buffers fed back as parameters",
            "value": {
                "config": {"num_features": 3},
                "input": _random([2, 3, 2, 2], 1),
                "parameters": {
                    "running_mean": [-0.027211294, 0.04198801, -0.011646985],
                    "running_var": [0.94399166, 1.0548435, 1.0273463],
                    "num_batches_tracked": {"data": 1, "shape": [], "dtype": "int64"},
                },
                "backend": "reference",
                "compare": True,
            },
        },
    },
    "batchnorm3d": {
        "small": {
            "summary": "BatchNorm3d(2) on (2, 2, 3, 4, 4), without affine parameters",
            "value": {
                "config": {"num_features": 2, "affine": False},
                "input": _random([2, 2, 3, 4, 4]),
                "compare": True,
            },
        },
    },
}

SPECS = [
    LayerSpec(
        kind=kind,
        torch_name=torch_name,
        config_model=BatchNormConfig,
        summary=f"{torch_name}: y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias, per channel",
        description=f"torch.nn.{torch_name}. Input and output {LAYOUTS[kind]}; weight and bias `(C,)` (affine), "
        "buffers running_mean and running_var `(C,)` and num_batches_tracked `()` (track_running_stats). "
        "Training mode (`training`, default true) normalizes with the batch's mean and biased variance over "
        "`(N, *spatial)` and updates the buffers (running_var with the unbiased variance); evaluation mode uses "
        "the running statistics when tracked. `buffers` in the response can be fed back as `parameters` for the "
        "next step; `statistics` holds the mean and biased variance that normalized.",
        output_shape=_output_shape(kind),
        parameter_shapes=parameter_shapes,
        buffer_shapes=buffer_shapes,
        macs=macs,
        work=work,
        check_mode=check_mode,
        examples=EXAMPLES[kind],
    )
    for kind, torch_name in (
        ("batchnorm1d", "BatchNorm1d"),
        ("batchnorm2d", "BatchNorm2d"),
        ("batchnorm3d", "BatchNorm3d"),
    )
]
