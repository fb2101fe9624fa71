"""POST /v1/shapes end to end: rows, totals, formulas identical to the single-layer routes, and the errors."""

import pytest
import torch

from app.api.routes.shapes import EXAMPLES
from tests.stacking import STACKS, documented_stack_route, torch_sequential
from tests.wire import assert_names, post_json, post_layer

MLP = STACKS["mlp"][1]


def shapes(client, body, status=200):
    return post_json(client, "/v1/shapes", body, status)


def test_mlp_rows_and_totals(client):
    body = shapes(client, {"input_shape": [10, 4], "layers": MLP})
    assert body["input_shape"] == [10, 4] and body["output_shape"] == [10, 1] and body["dtype"] == "float32"
    first, relu, last = body["layers"]
    assert first == {
        "index": 0, "kind": "linear", "config": {"in_features": 4, "out_features": 8, "bias": True},
        "input_shape": [10, 4], "output_shape": [10, 8], "parameters": {"weight": [8, 4], "bias": [8]}, "buffers": {},
        "parameter_count": 40, "macs": 10 * 40, "output_bytes": 320, "formula": [], "receptive_field": None, "jump": None,
    }
    assert relu["config"] == {"inplace": False} and relu["parameter_count"] == 0 and relu["macs"] == 0
    assert last["parameters"] == {"weight": [1, 8]} and last["parameter_count"] == 8 and last["macs"] == 80
    assert body["totals"] == {
        "parameter_count": 48, "macs": 480, "input_bytes": 160, "output_bytes": 320 + 320 + 40,
        "forward_backward_pass_bytes": 2 * (320 + 40), "parameter_bytes": 192, "buffer_bytes": 0,
        "estimated_total_bytes": 160 + 720 + 192,
    }


def test_float64_doubles_the_bytes(client):
    single = shapes(client, {"input_shape": [10, 4], "layers": MLP})["totals"]
    double = shapes(client, {"input_shape": [10, 4], "layers": MLP, "dtype": "float64"})["totals"]
    for key in ("input_bytes", "output_bytes", "forward_backward_pass_bytes", "parameter_bytes", "estimated_total_bytes"):
        assert double[key] == 2 * single[key]
    assert double["parameter_count"] == single["parameter_count"] and double["macs"] == single["macs"]


def test_notebook_cells(client):
    body = shapes(client, EXAMPLES["notebook"]["value"])
    conv, pool = body["layers"]
    assert conv["output_shape"] == [100, 16, 59, 79] and conv["parameters"]["weight"] == [16, 3, 3, 3]
    assert len(conv["formula"]) == 2 and conv["formula"][0].endswith("= 59") and conv["formula"][1].endswith("= 79")
    assert "120" in conv["formula"][0] and "160" in conv["formula"][1]
    assert pool["output_shape"] == [100, 16, 19, 39] and pool["receptive_field"] == [7, 5] and pool["jump"] == [6, 4]
    body = shapes(client, {"input_shape": [100, 3, 120, 160], "layers": STACKS["notebook_maxpool"][1]})
    assert body["output_shape"] == [100, 3, 40, 80]


@pytest.mark.parametrize("name", sorted(STACKS))
def test_formula_lines_equal_the_single_layer_routes(client, name):
    """The same text a POST /v1/layers/{kind} response carries, for every layer of every stack."""
    input_shape, layers = STACKS[name]
    input_shape = [2, *input_shape[1:]]  # formulas do not depend on the batch (flatten's shows it: same batch)
    rows = shapes(client, {"input_shape": input_shape, "layers": layers})["layers"]
    for row, layer in zip(rows, layers):
        single = post_layer(client, layer["kind"], {
            "config": layer.get("config", {}), "input": {"random": "normal", "shape": row["input_shape"]}, "encoding": "none"})
        assert single.get("formula", []) == row["formula"]
        assert single["output_shape"] == row["output_shape"] and single["parameter_count"] == row["parameter_count"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_swagger_examples_answer(client, name):
    value = EXAMPLES[name]["value"]
    body = shapes(client, value)
    model = torch_sequential(value["layers"])
    with torch.no_grad():
        expected = model.eval()(torch.zeros(value["input_shape"]))
    assert body["output_shape"] == list(expected.shape)


LINEAR = {"kind": "linear", "config": {"in_features": 4, "out_features": 8}}


@pytest.mark.parametrize("layers,input_shape,field,words", [
    ([LINEAR, {"kind": "relu"}, {"kind": "linear", "config": {"in_features": 9, "out_features": 1}}], [10, 4],
     "layers[2]", ["layers[2] (Linear)", "input shape [10, 8]", "in_features is 9"]),
    ([LINEAR, {"kind": "conv9d", "config": {}}], [10, 4], "layers[1].kind", ["conv9d", "linear", "relu"]),
    ([{"kind": "linear", "config": {"in_features": 4, "out_features": 0}}], [10, 4], "layers[0].config.out_features",
     ["greater than 0"]),
    ([LINEAR, {"kind": "flatten", "config": {"start_dim": 2}}], [10, 4], "layers[1].config.start_dim",
     ["layers[1] (Flatten)", "[-2, 1]"]),
    ([LINEAR, {"kind": "flatten", "config": {"start_dim": -1, "end_dim": 0}}], [10, 4], "layers[1].config.start_dim",
     ["comes after"]),
    ([{"kind": "relu", "config": {"inplace": "no"}}], [10, 4], "layers[0].config.inplace", ["boolean"]),
    ([{"kind": "relu", "config": {"negative_slope": 0.1}}], [10, 4], "layers[0].config.negative_slope", ["not permitted"]),
    ([{"config": {}}], [10, 4], "layers[0].kind", ["required"]),
    ([{"kind": "relu", "parameters": {}}], [10, 4], "layers[0].parameters", ["not permitted"]),
    ([{"kind": "relu", "config": [1]}], [10, 4], "layers[0].config", ["dictionary"]),
    ([], [10, 4], "layers", ["at least 1"]),
    ([LINEAR], [10, 0], "layers[0]", ["0 features", "in_features is 4"]),  # zero sizes reach the layer, as in torch
    ([LINEAR], [10, -1], "input_shape[1]", ["greater than or equal to 0"]),
    ([LINEAR], [10, 4.5], "input_shape[1]", ["integer"]),
])
def test_broken_stacks_are_422_naming_the_layer(client, layers, input_shape, field, words):
    body = shapes(client, {"input_shape": input_shape, "layers": layers}, 422)
    assert_names(body, field, words)


def test_shape_error_carries_layer_and_kind(client):
    body = shapes(client, {"input_shape": [3, 5], "layers": [{"kind": "relu"}, LINEAR]}, 422)
    assert body["layer"] == 1 and body["kind"] == "linear" and body["error"] == "ShapeMismatch"
    assert body["expected"] == ["*", 4] and body["actual"] == [3, 5]


def test_conv_channel_mismatch_names_the_layer(client):
    layers = STACKS["lenet"][1][:3] + [{"kind": "conv2d", "config": {"in_channels": 7, "out_channels": 16, "kernel_size": 5}}]
    body = shapes(client, {"input_shape": [1, 1, 32, 32], "layers": layers}, 422)
    assert body["field"].startswith("layers[3]") and body["layer"] == 3
    assert "7" in body["detail"] and "6" in body["detail"] and body["detail"].startswith("layers[3] (Conv2d)")


def test_output_below_one_names_the_layer_dimension_and_formula(client):
    layers = STACKS["lenet"][1][:6] + [{"kind": "conv2d", "config": {"in_channels": 16, "out_channels": 4, "kernel_size": 7}}]
    body = shapes(client, {"input_shape": [1, 1, 32, 32], "layers": layers}, 422)
    assert body["field"].startswith("layers[6]") and body["layer"] == 6
    assert "floor((5 + 2*0 - 1*(7-1) - 1) / 1) + 1" in body["detail"].replace(")/", ") /"), body["detail"]


def test_absurd_sizes_are_413_without_allocating(client):
    huge = {"kind": "linear", "config": {"in_features": 100000, "out_features": 100000}}
    body = shapes(client, {"input_shape": [1, 100000], "layers": [huge]}, 413)
    assert body["field"] == "layers" and body["limit"] == "max_parameter_elements" and body["value"] == 100000 * 100001
    assert body["detail"].startswith("the stack (parameters and buffers) would have 10000100000 parameter elements")
    body = shapes(client, {"input_shape": [10**9, 10**9], "layers": [{"kind": "relu"}]}, 413)
    assert body["field"] == "input_shape" and body["limit"] == "max_tensor_elements"
    body = shapes(client, {"input_shape": [4000, 10], "layers": [{"kind": "relu"},
                                                             {"kind": "linear", "config": {"in_features": 10, "out_features": 10000}}]}, 413)
    assert body["field"] == "layers[1]" and body["value"] == 4000 * 10000 and "layers[1] output" in body["detail"]


def test_limits_are_the_settings(make_client):
    small = make_client(max_tensor_elements=100, max_parameter_elements=47)
    body = shapes(small, {"input_shape": [20, 4], "layers": [{"kind": "linear", "config": {"in_features": 4, "out_features": 6}}]}, 413)
    assert body["field"] == "layers[0]" and body["value"] == 120
    body = shapes(small, {"input_shape": [2, 4], "layers": MLP}, 413)
    assert body["limit"] == "max_parameter_elements" and body["value"] == 48


def test_too_many_layers_is_422(client):
    body = shapes(client, {"input_shape": [1], "layers": [{"kind": "relu"}] * 1001}, 422)
    assert body["field"] == "layers" and "1000" in body["detail"]


def test_openapi_documents_shapes(client):
    spec = documented_stack_route(client, "/v1/shapes", "ShapesRequest", EXAMPLES)
    request = spec["components"]["schemas"]["ShapesRequest"]
    assert request["properties"]["layers"]["items"] == {"$ref": "#/components/schemas/StackLayer"}
    variants = spec["components"]["schemas"]["StackLayer"]["discriminator"]["mapping"]
    assert {"linear", "relu", "flatten"} <= set(variants)
    linear = spec["components"]["schemas"]["LinearStackLayer"]
    assert linear["properties"]["config"]["$ref"] == "#/components/schemas/LinearConfig"
    assert "config" in linear["required"] and "config" not in spec["components"]["schemas"]["ReLUStackLayer"].get("required", [])
