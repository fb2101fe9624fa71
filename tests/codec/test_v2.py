"""app.codec.v2 in-process: binary inputs read in place, binary outputs written from the arrays'
own memory, output selection, and the module's boundary (no torch)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from app.codec import v2
from app.errors import InvalidInput, PayloadTooLarge
from app.layers.registry import LAYERS

SIGNATURE = v2.ModelSignature(
    inputs=(v2.TensorMetadata("input", "FP32", (-1, -1)), v2.TensorMetadata("weight", "FP32", (-1, -1)),
            v2.TensorMetadata("num_batches_tracked", "INT64", ())),
    outputs=(v2.TensorMetadata("output", "FP32", (-1, -1)), v2.TensorMetadata("weight", "FP32", (-1, -1))))


def read(header: dict, binary: bytes = b"", **limits) -> v2.InferRequest:
    return v2.read_infer_request(header, memoryview(binary), SIGNATURE,
                                 max_elements=limits.get("max_elements", 10**6), max_depth=8)


def test_binary_inputs_are_views_of_the_body():
    x, w = np.arange(6, dtype="<f4").reshape(2, 3), np.ones((1, 3), "<f4")
    body = bytearray(x.tobytes() + w.tobytes())
    request = read({"parameters": {"config": {"in_features": 3, "out_features": 1}, "seed": 4, "training": False},
                    "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32",
                                "parameters": {"binary_data_size": 24}},
                               {"name": "weight", "shape": [1, 3], "datatype": "FP32",
                                "parameters": {"binary_data_size": 12}}]}, body)
    options = request.options
    assert options.config == {"in_features": 3, "out_features": 1} and options.seed == 4 and options.training is False
    np.testing.assert_array_equal(options.input["data"], x)
    assert options.input["dtype"] == "float32"
    assert np.shares_memory(options.input["data"], np.frombuffer(body, np.uint8))  # no copy
    assert np.shares_memory(options.parameters["weight"], np.frombuffer(body, np.uint8))


def test_int64_and_zero_dimensional_inputs():
    request = read({"parameters": {"config": {}}, "inputs": [
        {"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]},
        {"name": "num_batches_tracked", "shape": [], "datatype": "INT64", "data": [7]}]})
    count = request.options.parameters["num_batches_tracked"]
    assert count.dtype == np.int64 and count.shape == () and int(count) == 7
    assert request.options.input["dtype"] == "float64"


def test_declared_shapes_are_refused_before_reading_data():
    with pytest.raises(PayloadTooLarge) as caught:
        read({"parameters": {"config": {}}, "inputs": [
            {"name": "input", "shape": [10**9, 10**9], "datatype": "FP32", "data": [1.0]}]})
    assert caught.value.field == "inputs.input"


def test_binary_outputs_are_the_arrays_own_memory():
    big = np.random.default_rng(0).standard_normal((300, 100)).astype(np.float32)
    small = np.ones((2, 2), np.float32)
    request = v2.InferRequest("7", None, [v2.RequestedOutput("output", True), v2.RequestedOutput("weight", False)],
                              False)  # type: ignore[arg-type]
    answer = v2.infer_response("linear", "1", request, {"output": big, "weight": small}, {"backend": "torch"})
    assert answer.media_type == "application/octet-stream" and len(answer.chunks) == 2
    head, piece = answer.chunks
    assert answer.header_length == len(head)
    assert isinstance(piece, memoryview) and np.shares_memory(np.frombuffer(piece, np.float32), big)
    header = json.loads(head)
    assert header["id"] == "7" and header["parameters"] == {"backend": "torch"}
    assert header["outputs"] == [
        {"name": "output", "datatype": "FP32", "shape": [300, 100], "parameters": {"binary_data_size": big.nbytes}},
        {"name": "weight", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 1.0, 1.0, 1.0]}]


def test_small_binary_outputs_are_gathered_and_json_only_has_no_header_length():
    request = v2.InferRequest(None, None, None, True)  # type: ignore[arg-type]
    produced = {"output": np.arange(3, dtype=np.float64), "weight": np.zeros(2, np.float32)}
    answer = v2.infer_response("linear", "1", request, produced, {})
    assert len(answer.chunks) == 1 and answer.header_length is not None
    body = bytes(answer.chunks[0])
    assert body[answer.header_length:] == produced["output"].tobytes() + produced["weight"].tobytes()
    json_only = v2.infer_response("linear", "1", v2.InferRequest(None, None, None, False), produced, {})  # type: ignore[arg-type]
    assert json_only.header_length is None and json_only.media_type == "application/json"
    assert json.loads(json_only.chunks[0])["outputs"][0]["data"] == [0.0, 1.0, 2.0]


def test_non_finite_json_outputs_are_strings_as_on_v1():
    request = v2.InferRequest(None, None, None, False)  # type: ignore[arg-type]
    answer = v2.infer_response("relu", "1", request, {"output": np.array([np.nan, np.inf, 1.0], np.float32)}, {})
    assert json.loads(answer.chunks[0])["outputs"][0]["data"] == ["NaN", "Infinity", 1.0]


def test_an_output_the_call_did_not_produce_is_explained():
    request = v2.InferRequest(None, None, [v2.RequestedOutput("weight", None)], False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="output 'weight' is not produced by this call: no weight here"):
        v2.infer_response("linear", "1", request, {"output": np.ones(1, np.float32)}, {}, {"weight": "no weight here"})


def test_the_codec_imports_no_torch():
    code = "import sys, app.codec.v2; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_every_kind_has_a_signature():
    from app.api.routes.v2 import SIGNATURES

    assert set(SIGNATURES) == set(LAYERS)
    for signature in SIGNATURES.values():
        assert signature.inputs[0].name == "input" and signature.outputs[0].name == "output"
