"""/v2 with plain V2 JSON (the ASGI app in-process; the binary extension by hand): data flat and
nested, FP64, selecting outputs, the protocol's error body, limits, API keys, metrics."""

import json
import logging

import numpy as np
import orjson
import pytest
import torch

from app.layers.registry import LAYERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LINEAR = {"config": {"in_features": 3, "out_features": 2}}
X = [[1.0, -2.0, 0.5], [0.25, 4.0, -1.0]]


def infer(client, kind: str, body: dict, status: int = 200, **kwargs) -> dict:
    response = client.post(f"/v2/models/{kind}/infer", json=body, **kwargs)
    assert response.status_code == status, response.text
    if status != 200:
        assert set(response.json()) == {"error"}, response.json()  # the protocol's error body, nothing else
    return response.json()


def output(body: dict, name: str) -> np.ndarray:
    entry = next(o for o in body["outputs"] if o["name"] == name)
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}[entry["datatype"]]
    return np.array(entry["data"], dtype=dtype).reshape(entry["shape"])


def linear_torch(x, seed: int = 0, dtype=torch.float32) -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    module = torch.nn.Linear(3, 2).to(dtype)
    with torch.no_grad():
        return module, module(torch.tensor(x, dtype=dtype))


@pytest.mark.parametrize("data", [X, [v for row in X for v in row]], ids=["nested", "flat"])
def test_data_nested_or_flat(client, data):
    body = infer(client, "linear", {"id": "r1", "parameters": LINEAR,
                                    "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": data}]})
    assert body["id"] == "r1" and body["model_name"] == "linear" and body["model_version"] == "1"
    module, expected = linear_torch(X)
    assert [o["name"] for o in body["outputs"]] == ["output", "weight", "bias"]
    assert body["outputs"][0]["shape"] == [2, 2] and len(body["outputs"][0]["data"]) == 4  # flat, row-major
    torch.testing.assert_close(torch.from_numpy(output(body, "output")), expected)
    torch.testing.assert_close(torch.from_numpy(output(body, "weight")), module.weight.detach())


def test_fp64_with_weights_config_as_string_and_version_path(client):
    weight, bias = [[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]], [0.5, -0.25]
    body = {"parameters": {"config": json.dumps(LINEAR["config"])},
            "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": X},
                       {"name": "weight", "shape": [2, 3], "datatype": "FP64", "data": [v for row in weight for v in row]},
                       {"name": "bias", "shape": [2], "datatype": "FP64", "data": bias}]}
    response = client.post("/v2/models/linear/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert {o["datatype"] for o in result["outputs"]} == {"FP64"}
    expected = torch.nn.functional.linear(torch.tensor(X, dtype=torch.float64), torch.tensor(weight, dtype=torch.float64),
                                          torch.tensor(bias, dtype=torch.float64))
    torch.testing.assert_close(torch.from_numpy(output(result, "output")), expected)


def test_selecting_outputs_binary_and_json_mixed(client):
    request = {"parameters": {**LINEAR, "seed": 5},
               "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}],
               "outputs": [{"name": "bias"}, {"name": "output", "parameters": {"binary_data": True}}]}
    response = client.post("/v2/models/linear/infer", json=request)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert [o["name"] for o in header["outputs"]] == ["bias", "output"]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 16} and "data" not in header["outputs"][1]
    got = np.frombuffer(response.content[length:], "<f4").reshape(2, 2)
    module, expected = linear_torch(X, seed=5)
    torch.testing.assert_close(torch.from_numpy(got), expected)
    torch.testing.assert_close(torch.from_numpy(output(header, "bias")), module.bias.detach())


def test_binary_inputs_by_hand(client):
    """The binary tensor data extension as the protocol writes it: JSON header, then raw bytes."""
    x = np.arange(24, dtype="<f8").reshape(2, 3, 4)
    header = json.dumps({"parameters": {"config": {"kernel_size": 2}, "binary_data_output": True},
                         "inputs": [{"name": "input", "shape": [2, 3, 4], "datatype": "FP64",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    response = client.post("/v2/models/maxpool1d/infer", content=header + x.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])["outputs"][0]
    assert meta == {"name": "output", "datatype": "FP64", "shape": [2, 3, 2], "parameters": {"binary_data_size": 96}}
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], "<f8").reshape(2, 3, 2),
                                  torch.nn.functional.max_pool1d(torch.from_numpy(x), 2).numpy())


def test_compare_figures_in_response_parameters(client):
    body = infer(client, "linear", {"parameters": {**LINEAR, "backend": "reference", "compare": True},
                                    "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]})
    parameters = body["parameters"]
    assert parameters["backend"] == "reference" and parameters["compare_backend"] == "torch"
    assert parameters["compare_allclose"] is True and parameters["compare_max_abs_diff"] < 1e-5
    assert all(not isinstance(v, (dict, list)) for v in parameters.values())  # the protocol's scalars


MALFORMED = {
    "wrong datatype": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "INT32", "data": X}]},
                       "input 'input' has datatype 'INT32'; it must be FP32 or FP64"),
    "datatypes differ": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X},
                                     {"name": "bias", "shape": [2], "datatype": "FP64", "data": [1, 2]}]},
                         "input 'bias' is FP64 but 'input' is FP32; a layer's tensors share one floating-point datatype"),
    "flat data too short": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]},
                            "input 'input' has shape [2, 3], so 'data' needs 6 values (flat) or 2 rows (nested); "
                            "it has 5 entries"),
    "nested rows against its shape": ({"inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP32", "data": X}]},
                                      "input 'input' has shape [3, 2], so 'data' needs 6 values (flat) or 3 rows "
                                      "(nested); it has 2 entries"),
    "nested columns against its shape": ({"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": X}]},
                                         "inputs.input.data is nested as [2, 3] but shape says [2, 2]"),
    "ragged data": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5]]}]},
                    "inputs.input is a ragged nested array"),
    "unknown input": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X},
                                  {"name": "weights", "shape": [2, 3], "datatype": "FP32", "data": X}]},
                      "input 'weights' is not an input of this model; it takes ['input', 'weight', 'bias']"),
    "no input named input": ({"inputs": [{"name": "bias", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
                             "no input named 'input'; this model takes ['input', 'weight', 'bias']"),
    "booleans in data": ({"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1.0, True]}]},
                         "a JSON boolean stands inside an array at byte"),
    "unknown output": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}],
                        "outputs": [{"name": "indices"}]},
                       "output 'indices' is not an output of this model; it has ['output', 'weight', 'bias']"),
    "state of the wrong shape": ({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X},
                                             {"name": "bias", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]},
                                 "input 'bias' has shape [3]; Linear with this config needs [2]"),
    "bad config": ({"parameters": {"config": {"in_features": 3, "out_features": 0}},
                    "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]},
                   "config.out_features: Input should be greater than 0"),
    "bad backend": ({"parameters": {**LINEAR, "backend": "numpy"},
                     "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]},
                    "parameters.backend: Input should be 'torch' or 'reference'"),
    "config missing": ({"parameters": {}, "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]},
                       "request parameter 'config' is required"),
    "config string not JSON": ({"parameters": {"config": "in_features=3"},
                                "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]},
                               "request parameter 'config' is a string but not JSON"),
    "INT64 count with a fraction": (
        {"parameters": {"config": {"num_features": 3}},
         "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X},
                    {"name": "num_batches_tracked", "shape": [], "datatype": "INT64", "data": [1.5]}]},
        "input 'num_batches_tracked' is INT64 but its data holds non-integers"),
    "count as FP32": ({"parameters": {"config": {"num_features": 3}},
                       "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X},
                                  {"name": "num_batches_tracked", "shape": [], "datatype": "FP32", "data": [1]}]},
                      "input 'num_batches_tracked' has datatype 'FP32'; it must be INT64"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_400_with_the_protocol_error(client, case):
    request, message = MALFORMED[case]
    kind = "batchnorm1d" if "num_batches_tracked" in json.dumps(request) else "linear"
    body = infer(client, kind, {"parameters": LINEAR, **request}, status=400)
    assert body["error"].startswith(message) or message in body["error"], body["error"]


def test_binary_sizes_are_checked_against_the_header_and_the_body(client):
    x = np.ones((2, 3), "<f4")

    def send(declared_size: int, payload: bytes, header_length: int | None = None):
        header = json.dumps({"parameters": LINEAR, "inputs": [
            {"name": "input", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": declared_size}}]}).encode()
        length = str(len(header) if header_length is None else header_length)
        return client.post("/v2/models/linear/infer", content=header + payload,
                           headers={"Inference-Header-Content-Length": length})

    wrong = send(20, x.tobytes()[:20])
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "input 'input' has binary_data_size 20; shape [2, 3] of FP32 is 24 bytes"}
    short = send(24, x.tobytes()[:20])
    assert short.json() == {"error": "the inputs' binary_data_size add up to 24 bytes, but 20 bytes follow the "
                                     "JSON header (Inference-Header-Content-Length)"}
    assert send(24, x.tobytes() + b"\0").status_code == 400
    beyond = send(24, x.tobytes(), header_length=10**6)
    assert beyond.status_code == 400 and "Inference-Header-Content-Length must be" in beyond.json()["error"]
    assert send(24, x.tobytes()).status_code == 200


def test_limits_are_checked_before_allocation(make_client):
    """A declared shape over the element limit is refused from the header alone (no data sent)."""
    client = make_client(max_tensor_elements=1000)
    header = json.dumps({"parameters": LINEAR, "inputs": [
        {"name": "input", "shape": [10**6, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12 * 10**6}}]})
    response = client.post("/v2/models/linear/infer", content=header.encode(),
                           headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 413
    assert response.json() == {"error": "inputs.input would have 3000000 elements (shape [1000000, 3]); the limit is "
                                        "1000 (setting LAYERLAB_MAX_TENSOR_ELEMENTS)"}
    small = make_client(max_body_bytes=100)
    too_big = small.post("/v2/models/linear/infer", content=b"{" + b" " * 200 + b"}")
    assert too_big.status_code == 413 and set(too_big.json()) == {"error"}
    assert "LAYERLAB_MAX_BODY_BYTES" in too_big.json()["error"]


def test_unknown_model_version_and_route_are_404_in_the_protocol_body(client):
    request = {"parameters": LINEAR, "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]}
    assert infer(client, "conv4d", request, status=404)["error"].startswith("unknown model 'conv4d'")
    response = client.post("/v2/models/linear/versions/7/infer", json=request)
    assert response.status_code == 404 and response.json() == {
        "error": "model 'linear' has no version '7'; its only version is '1'"}
    assert client.get("/v2/nothing").status_code == 404 and set(client.get("/v2/nothing").json()) == {"error"}
    assert client.post("/v2/models/linear/infer", content=b"{not json").json()["error"].startswith(
        "request body is not valid JSON")


def test_compressed_bodies_are_refused(client):
    response = client.post("/v2/models/linear/infer", content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 415 and "Content-Encoding 'gzip' is not supported" in response.json()["error"]


def test_metadata_routes(client):
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "parameters", "system_shared_memory"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/relu/ready").json() == {"name": "relu", "ready": True}
    index = client.post("/v2/repository/index").json()
    assert index == [{"name": kind, "version": "1", "state": "READY"} for kind in LAYERS]
    linear = client.get("/v2/models/linear/versions/1").json()
    assert linear["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, -1]},
                                {"name": "weight", "datatype": "FP32", "shape": [-1, -1]},
                                {"name": "bias", "datatype": "FP32", "shape": [-1]}]
    assert [t["name"] for t in client.get("/v2/models/batchnorm2d").json()["outputs"]] == [
        "output", "weight", "bias", "running_mean", "running_var", "num_batches_tracked", "statistics.mean",
        "statistics.var"]


def test_api_keys_guard_v2_but_not_its_health_routes(make_client):
    client = make_client(api_key=["s3cret"])
    request = {"parameters": LINEAR, "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]}
    refused = client.post("/v2/models/linear/infer", json=request)
    assert refused.status_code == 401 and set(refused.json()) == {"error"}
    assert "needs an API key" in refused.json()["error"]
    assert client.get("/v2").status_code == 401
    assert client.get("/v2/health/live").status_code == 200 and client.get("/v2/health/ready").status_code == 200
    allowed = client.post("/v2/models/linear/infer", json=request, headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200


def test_metrics_count_v2_by_route_template(client):
    request = {"parameters": LINEAR, "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]}
    infer(client, "linear", request)
    infer(client, "relu", {"parameters": {"config": {}}, "inputs": request["inputs"]})
    text = client.get("/metrics").text
    assert 'layerlab_http_requests_total{method="POST",route="/v2/models/{model_name}/infer",status="200"}' in text
    assert 'layerlab_compute_seconds_count{backend="torch",kind="relu"}' in text


def test_access_line_names_the_model_and_how_it_ran(client, caplog):
    caplog.set_level(logging.INFO, logger="layerlab.access")
    request = {"parameters": {**LINEAR, "backend": "reference"},
               "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": X}]}
    client.post("/v2/models/linear/infer", json=request, headers={"X-Request-ID": "v2-line"})
    line = next(orjson.loads(r.getMessage()) for r in caplog.records
                if r.name == "layerlab.access" and orjson.loads(r.getMessage())["request_id"] == "v2-line")
    assert line["route"] == "/v2/models/{model_name}/infer" and line["status"] == 200
    assert line["kind"] == "linear" and line["backend"] == "reference" and line["compare"] is False
