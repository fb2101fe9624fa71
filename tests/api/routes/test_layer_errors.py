"""Every user mistake is a 4xx whose body names the field and says what was expected: never a 500."""

import base64
import time

import pytest

from tests.wire import assert_names

LINEAR = {"in_features": 4, "out_features": 1}
ROW = [[1.0, 2.0, 3.0, 4.0]]


def error(client, body, status, path="/v1/layers/linear", **kwargs):
    response = client.post(path, json=body, **kwargs) if not isinstance(body, (bytes, str)) else client.post(path, content=body, **kwargs)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["status"] == status and payload["error"] and payload["detail"]
    assert "Traceback" not in response.text
    return payload


@pytest.mark.parametrize("body,field,words", [
    ({"config": LINEAR, "input": [[1.0, 2.0, 3.0, 4.0, 5.0]]}, "input", ["5 features", "in_features is 4"]),
    ({"config": LINEAR, "input": [[1.0, 2.0], [3.0]]}, "input", ["ragged"]),
    ({"config": LINEAR, "input": {"data": [1.0, 2.0, 3.0], "shape": [1, 4]}}, "input.data", ["3 values", "needs 4"]),
    ({"config": LINEAR, "input": {"data": [[1.0, 2.0, 3.0, 4.0]], "shape": [4, 1]}}, "input.shape", ["[1, 4]", "[4, 1]"]),
    ({"config": LINEAR, "input": {"base64": base64.b64encode(b"\0" * 12).decode(), "shape": [1, 4]}}, "input.base64", ["16 characters", "16 bytes"]),
    ({"config": LINEAR, "input": {"base64": "AAAAAAAA=AAAAAAAAAAAAAAA", "shape": [1, 4]}}, "input.base64", ["not valid base64"]),
    ({"config": LINEAR, "input": {"base64": "!!!!!!!!!!!!!!!!!!!!!!!!", "shape": [1, 4], "dtype": "float32"}}, "input.base64", ["not valid base64"]),
    ({"config": LINEAR, "input": {"data": ROW, "dtype": "float16"}}, "input.dtype", ["float32", "float16"]),
    ({"config": LINEAR, "input": {"data": ROW, "base64": "AAAA"}}, "input", ["exactly one"]),
    ({"config": LINEAR, "input": {"random": "cauchy", "shape": [1, 4]}}, "input.random", ["normal", "uniform"]),
    ({"config": LINEAR, "input": "abc"}, "input", ["JSON array"]),
    ({"config": LINEAR, "input": [["a", 1.0, 2.0, 3.0]]}, "input", ["'a'"]),
    ({"config": LINEAR, "input": [[None, 1.0, 2.0, 3.0]]}, "input", ["null"]),
    ({"config": LINEAR, "input": []}, "input", ["0 features", "in_features is 4"]),  # an empty (0,): no features
    ({"config": LINEAR, "input": {"random": "normal", "shape": [1, -4]}}, "input.shape", ["negative"]),
    ({"config": {"in_features": 0, "out_features": 1}, "input": ROW}, "config.in_features", ["greater than 0"]),
    ({"config": {"in_features": -3, "out_features": 1}, "input": ROW}, "config.in_features", ["greater than 0"]),
    ({"config": {"in_features": 4}, "input": ROW}, "config.out_features", ["required"]),
    ({"config": {**LINEAR, "bias": "yes"}, "input": ROW}, "config.bias", ["boolean"]),
    ({"config": {**LINEAR, "stride": 2}, "input": ROW}, "config.stride", ["not permitted"]),
    ({"config": LINEAR, "input": ROW, "parameters": {"weight": [[1.0, 2.0, 3.0]]}}, "parameters.weight", ["[1, 3]", "[1, 4]"]),
    ({"config": LINEAR, "input": ROW, "parameters": {"running_mean": [1.0]}}, "parameters.running_mean", ["weight"]),
    ({"config": LINEAR, "input": ROW, "backend": "jax"}, "backend", ["torch"]),
    ({"config": LINEAR, "input": ROW, "encoding": "hex"}, "encoding", ["list"]),
    ({"config": LINEAR, "input": ROW, "seed": 1.5}, "seed", ["integer"]),
    ({"config": LINEAR, "input": ROW, "extra": 1}, "extra", ["not permitted"]),
    ({"input": ROW}, "config", ["required"]),
    ({"config": LINEAR}, "input", ["required"]),
    ({"config": LINEAR, "input": [[1.0, True, 3.0, 4.0]]}, "body", ["boolean"]),
])
def test_bad_input_is_422_naming_the_field(client, body, field, words):
    payload = error(client, body, 422)
    assert_names(payload, field, words)


def test_body_not_json_is_400(client):
    payload = error(client, b'{"config": {', 400, headers={"content-type": "application/json"})
    assert "not valid JSON" in payload["detail"]
    payload = error(client, b'{"config": {"in_features": 1, "out_features": 1}, "input": [[NaN]]}', 400,
                    headers={"content-type": "application/json"})
    assert "NaN" in payload["detail"]


def test_wrong_content_type_is_415(client):
    payload = error(client, b"in_features=4", 415, headers={"content-type": "application/x-www-form-urlencoded"})
    assert "application/json" in payload["detail"]


def test_unknown_kind_is_404_listing_the_kinds(client):
    payload = error(client, {"config": {}, "input": ROW}, 404, path="/v1/layers/conv9d")
    assert "linear" in payload["detail"] and payload["field"] == "kind"


def test_huge_layer_is_refused_at_once_without_allocating(client):
    started = time.perf_counter()
    payload = error(client, {"config": {"in_features": 1000000, "out_features": 1000000}, "input": ROW}, 413)
    assert time.perf_counter() - started < 1.0
    assert payload["limit"] == "max_parameter_elements" and payload["value"] == 1000001000000
    assert "LAYERLAB_MAX_PARAMETER_ELEMENTS" in payload["detail"]


def test_huge_random_input_is_refused_before_drawing(client):
    payload = error(client, {"config": LINEAR, "input": {"random": "normal", "shape": [1000000, 1000000, 4]}}, 413)
    assert payload["limit"] == "max_tensor_elements" and payload["field"] == "input"


def test_limits_are_settings(make_client):
    small = make_client(max_macs=10, max_body_bytes=200)
    payload = error(small, {"config": LINEAR, "input": [[1.0, 2.0, 3.0, 4.0]] * 3}, 413)
    assert payload["limit"] == "max_macs" and payload["value"] == 12
    payload = error(small, {"config": LINEAR, "input": [[1.0, 2.0, 3.0, 4.0]] * 30}, 413)
    assert payload["limit"] == "max_body_bytes"
