"""The present step: a run's outcome -> the response body, tensors in the requested encoding.

One row shape for a layer, whether it ran alone (/v1/layers/{kind}) or in a stack (/v1/sequential),
and the /v1/shapes rows beside them.
"""

import math
from typing import Any

from app.codec.tensors import DTYPES, Encoding, encode_tensor, json_scalar
from app.stacks.plan import PlannedLayer, ShapesPlan
from app.stacks.run import LayerRun, StackOutcome


def layer_fields(run: LayerRun, encoding: Encoding) -> dict[str, Any]:
    """A layer's config, shapes, parameters (and buffers, indices, statistics, formulas, comparison)."""
    planned = run.layer
    body: dict[str, Any] = {
        "config": planned.entry.config.model_dump(),
        "input_shape": list(planned.input_shape),
        "output_shape": list(planned.output_shape),
        "parameters": {k: encode_tensor(run.state[k], encoding) for k in planned.parameter_shapes},
        "parameter_count": planned.parameter_count,
    }
    if run.buffers:
        body["buffers"] = {k: encode_tensor(v, encoding) for k, v in run.buffers.items()}
    if "indices" in run.extras:
        body["indices"] = encode_tensor(run.extras["indices"], encoding)
    statistics = {k: encode_tensor(v, encoding) for k, v in run.extras.items() if k != "indices"}
    if statistics:
        body["statistics"] = statistics
    if planned.formula:
        body["formula"] = planned.formula
    if run.output is not None:
        body["output"] = encode_tensor(run.output, encoding)
    if run.gradients is not None:
        body["gradients"] = {k: encode_tensor(v, encoding) for k, v in run.gradients.items()}
    if run.comparison is not None:
        body["comparison"] = run.comparison
    body["elapsed_ms"] = round(run.elapsed_ms, 3)
    return body


def present_layer(outcome: StackOutcome, encoding: Encoding) -> dict[str, Any]:
    """/v1/layers/{kind}: the stack of one's only layer, with the request's backend and device."""
    run, request = outcome.layers[0], outcome.plan.request
    body = {
        "kind": run.layer.entry.spec.kind,
        "backend": request.backend,
        "device": request.device,
        "output": encode_tensor(outcome.output, encoding),
        **layer_fields(run, encoding),
    }
    if outcome.gradients is not None:  # the input's gradient first, then the parameters' (one object)
        body["gradients"] = {"input": encode_tensor(outcome.gradients.input, encoding), **body.get("gradients", {})}
        body.update(gradient_fields(outcome))
        if run.comparison is not None and outcome.comparison is not None:
            run.comparison["gradients"] = outcome.comparison["gradients"]
    return body


def gradient_fields(outcome: StackOutcome) -> dict[str, Any]:
    """The loss (when the request gave one) and the output's grad_fn (torch backend)."""
    assert outcome.gradients is not None
    fields: dict[str, Any] = {"grad_fn": outcome.gradients.grad_fn}
    if outcome.gradients.loss is not None:
        fields["loss"] = json_scalar(outcome.gradients.loss)
    return fields


def present_sequential(outcome: StackOutcome, encoding: Encoding) -> dict[str, Any]:
    """/v1/sequential: the final output, one row per layer, the comparison of the whole stack."""
    plan = outcome.plan
    body: dict[str, Any] = {
        "backend": plan.request.backend,
        "device": plan.request.device,
        "input_shape": list(plan.input_shape),
        "output_shape": list(outcome.output.shape),
        "output": encode_tensor(outcome.output, encoding),
        "layers": [
            {"index": run.layer.entry.index, "kind": run.layer.entry.spec.kind, **layer_fields(run, encoding)}
            for run in outcome.layers
        ],
        "parameter_count": sum(run.layer.parameter_count for run in outcome.layers),
    }
    if outcome.gradients is not None:
        body["gradients"] = {"input": encode_tensor(outcome.gradients.input, encoding)}
        body.update(gradient_fields(outcome))
    if outcome.comparison is not None:
        body["comparison"] = outcome.comparison
    body["elapsed_ms"] = round(outcome.elapsed_ms, 3)
    return body


def present_shapes(plan: ShapesPlan, encoding: Encoding) -> dict[str, Any]:
    """/v1/shapes: one row of arithmetic per layer, then the totals (no tensors: `encoding` is unused)."""
    itemsize = DTYPES[plan.dtype].itemsize
    return {
        "input_shape": list(plan.input_shape),
        "dtype": plan.dtype,
        "output_shape": list(plan.layers[-1].output_shape),
        "layers": [_shapes_row(p, itemsize) for p in plan.layers],
        "totals": plan.totals,
    }


def _shapes_row(p: PlannedLayer, itemsize: int) -> dict[str, Any]:
    return {
        "index": p.entry.index,
        "kind": p.entry.spec.kind,
        "config": p.entry.config.model_dump(),
        "input_shape": list(p.input_shape),
        "output_shape": list(p.output_shape),
        "parameters": {k: list(v) for k, v in p.parameter_shapes.items()},
        "buffers": {k: list(v) for k, v in p.buffer_shapes.items()},
        "parameter_count": p.parameter_count,
        "macs": p.macs,
        "output_bytes": math.prod(p.output_shape) * itemsize,
        "formula": p.formula,
        "receptive_field": p.receptive_field,
        "jump": p.jump,
    }
