"""Every limit is a setting, refused with a 413 naming it (`limit`) and the value asked (`value`),
before anything large is read or allocated. Body limits are checked on every POST route."""

import pytest

from app.config import Settings
from app.errors import InvalidInput
from app.main import create_app
from tests.live_server import ServerThread, raw_request, read_response

LINEAR = {"in_features": 4, "out_features": 1}


def post_routes() -> list[str]:
    """Every documented POST route (layers, and whatever later issues add) with layerlab's error
    envelope; /v2 answers in the Open Inference Protocol's form (test_v2_body_over_limit below)."""
    paths = create_app(Settings()).openapi()["paths"]
    return sorted(path for path, operations in paths.items() if "post" in operations and not path.startswith("/v2"))


@pytest.mark.parametrize("path", ["/v2/models/linear/infer", "/v2/models/linear/versions/1/infer", "/v2/repository/index"])
def test_v2_body_over_limit_is_a_413_in_the_protocols_form(make_client, path):
    client = make_client(max_body_bytes=1000)
    response = client.post(path, content=b" " * 1500 + b"{}", headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert set(response.json()) == {"error"} and "LAYERLAB_MAX_BODY_BYTES" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/linear/infer", "/v2/models/linear/versions/1/infer"])
def test_v2_streamed_body_over_limit_is_a_413(make_client, path):
    client = make_client(max_body_bytes=1000)
    chunks = (b" " * 400 for _ in range(5))  # a generator: sent chunked, without Content-Length
    response = client.post(path, content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert set(response.json()) == {"error"}


def assert_limit(response, limit: str, value: int | None = None, status: int = 413) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == "PayloadTooLarge" and body["status"] == status
    assert body["limit"] == limit and limit in Settings.model_fields
    assert f"LAYERLAB_{limit.upper()}" in body["detail"]
    if value is not None:
        assert body["value"] == value
    return body


@pytest.mark.parametrize("path", post_routes())
def test_declared_body_over_limit_is_refused_on_every_route(make_client, path):
    client = make_client(max_body_bytes=1000)
    response = client.post(path, content=b" " * 1500 + b"{}", headers={"content-type": "application/json"})
    assert_limit(response, "max_body_bytes", 1502)


@pytest.mark.parametrize("path", post_routes())
def test_streamed_body_over_limit_is_refused_on_every_route(make_client, path):
    client = make_client(max_body_bytes=1000)
    chunks = (b" " * 400 for _ in range(5))  # a generator: sent chunked, without Content-Length
    response = client.post(path, content=chunks, headers={"content-type": "application/json"})
    body = assert_limit(response, "max_body_bytes")
    assert body["value"] > 1000


def test_chunked_body_is_refused_before_it_ends_over_real_http():
    """Real uvicorn, raw socket: 80 KiB of a chunked body (never terminated) against a 64 KiB limit."""
    with ServerThread(max_body_bytes=64 * 1024) as server:
        head = (b"POST /v1/layers/linear HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked")
        chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
        sock = raw_request(server.port, head, chunk * 5)  # no terminating 0-size chunk: the body never ends
        with sock:
            status, headers, body = read_response(sock)
        assert status == 413, body
        assert b'"limit":"max_body_bytes"' in body
        assert 64 * 1024 < int(body.split(b'"value":')[1].split(b"}")[0].split(b",")[0]) <= 80 * 1024
        assert server.app.state.compute.counters.started == 0


def test_declared_content_length_is_refused_without_reading_the_body():
    """Content-Length: 1 TB, and not one byte of body sent: the 413 comes at once."""
    with ServerThread(max_body_bytes=1024) as server:
        head = (b"POST /v1/layers/linear HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000000000")
        with raw_request(server.port, head, timeout_s=5) as sock:
            status, _, body = read_response(sock)
        assert status == 413 and b'"value":1000000000000' in body


@pytest.mark.parametrize("tensor, value", [
    ({"random": "normal", "shape": [10**6, 10**6]}, 10**12),
    ({"random": "uniform", "shape": [2**63, 4]}, 2**65),
    ({"base64": "AAAAAAAA", "shape": [10**6, 10**6]}, 10**12),
    ({"data": [1.0, 2.0], "shape": [10**6, 10**6], "dtype": "float64"}, 10**12),
])
def test_input_elements(client, tensor, value):
    body = assert_limit(client.post("/v1/layers/linear", json={"config": LINEAR, "input": tensor}),
                        "max_tensor_elements", value)
    assert body["field"] == "input"


@pytest.mark.parametrize("shape, fragment", [([-1, 4], "negative"), ([4, 2**64], "integers")])
def test_shapes_negative_or_not_integers_are_422(client, shape, fragment):
    """(A zero dimension is a shape torch computes on: tests/api/routes/test_layers_empty_batch.py.)"""
    response = client.post("/v1/layers/linear", json={"config": LINEAR, "input": {"random": "normal", "shape": shape}})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"] and response.json()["field"].startswith("input")


def test_output_elements(make_client):
    client = make_client(max_tensor_elements=1000)
    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": 4, "out_features": 20}, "input": {"random": "normal", "shape": [100, 4]}})
    body = assert_limit(response, "max_tensor_elements", 2000)
    assert body["field"] == "output"


def test_output_limit_is_checked_on_nested_inputs_too(make_client):
    client = make_client(max_tensor_elements=1000)
    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": 4, "out_features": 300}, "input": [[0.5] * 4] * 10})
    assert assert_limit(response, "max_tensor_elements", 3000)["field"] == "output"


@pytest.mark.parametrize("bias, value", [(True, 10**12 + 10**6), (False, 10**12)])
def test_parameter_elements(client, bias, value):
    """The issue's own example: Linear(10^6, 10^6) is refused at once, not allocated (4 TB)."""
    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": 10**6, "out_features": 10**6, "bias": bias}, "input": [[1.0]]})
    assert_limit(response, "max_parameter_elements", value)


def test_multiply_adds(make_client):
    client = make_client(max_macs=1000)
    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": 4, "out_features": 100}, "input": {"random": "normal", "shape": [10, 4]}})
    assert_limit(response, "max_macs", 4000)


def test_values_past_64_bits_are_reported_exactly(client):
    """Found by the fuzzer: a 413's value past 2^64 once broke the JSON writer (a 500)."""
    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": 2**63, "out_features": 4}, "input": [[1.0]]})
    assert_limit(response, "max_parameter_elements", 2**65 + 4)


def nested(depth: int) -> list:
    value: list | float = 1.0
    for _ in range(depth):
        value = [value]
    return value


def test_tensor_nesting_depth(make_client):
    client = make_client(max_json_depth=3)
    ok = client.post("/v1/layers/linear", json={"config": {"in_features": 1, "out_features": 1}, "input": nested(3)})
    assert ok.status_code == 200, ok.text
    deep = client.post("/v1/layers/linear", json={"config": {"in_features": 1, "out_features": 1}, "input": nested(4)})
    assert_limit(deep, "max_json_depth")
    dims = client.post("/v1/layers/linear", json={
        "config": {"in_features": 1, "out_features": 1}, "input": {"random": "normal", "shape": [1] * 4}})
    assert_limit(dims, "max_json_depth", 4)


def test_default_tensor_depth_is_64(client):
    response = client.post("/v1/layers/linear", json={"config": {"in_features": 1, "out_features": 1},
                                                      "input": nested(65)})
    assert_limit(response, "max_json_depth")


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_body_nested_past_the_parser_limit(client, depth):
    """orjson stops at 1024 levels; the answer names the limit instead of 'invalid JSON'."""
    response = client.post("/v1/layers/linear", content=b"[" * depth + b"]" * depth,
                           headers={"content-type": "application/json"})
    body = assert_limit(response, "max_json_depth")
    assert "1024" in body["detail"]


def test_parameter_of_declared_wrong_shape_is_refused_before_decoding(client):
    response = client.post("/v1/layers/linear", json={
        "config": LINEAR, "input": [[1.0] * 4], "parameters": {"weight": {"random": "normal", "shape": [5000, 5000]}}})
    assert response.status_code == 422
    assert response.json()["field"] == "parameters.weight" and response.json()["expected"] == [1, 4]


def test_random_draws_are_float_only(client):
    """int64 is allowed for integer buffers given as data, not for torch.randn (once a 500)."""
    response = client.post("/v1/layers/linear", json={
        "config": LINEAR, "input": [[1.0] * 4], "parameters": {"weight": {"random": "normal", "shape": [1, 4],
                                                                           "dtype": "int64"}}})
    assert response.status_code == 422 and response.json()["field"] == "parameters.weight.dtype"


def test_requests_are_sized_from_config_and_shapes_without_drawing():
    """The lanes' measure (the plan's size): parameters + input + output elements + multiply-adds."""
    from app.schemas.requests import LayerRequestOptions
    from app.stacks.plan import plan_stack, stack_of_one

    def size(body: dict) -> int:
        return plan_stack(stack_of_one("linear", LayerRequestOptions.model_validate(body)), Settings()).size

    small = {"config": LINEAR, "input": [[0.1, 0.2, 0.3, 0.4]] * 10}
    assert size(small) == 5 + 40 + 10 + 40
    big = {"config": {"in_features": 2048, "out_features": 2048}, "input": {"random": "normal", "shape": [2048, 2048]}}
    assert size(big) == 2048 * 2049 + 2 * 2048 * 2048 + 2048**3
    assert size({"config": LINEAR, "input": {"data": [0.0] * 40, "shape": [10, 4]}}) == size(small)
    with pytest.raises(InvalidInput):  # an invalid request is refused while planning, before any lane
        size({"config": {"in_features": -1}, "input": [[1.0]]})


# --- Validation before limits: a request both invalid and too large is answered 422 ----------

HUGE_LINEAR = {"in_features": 10**6, "out_features": 10**6}  # 10^12 parameters: a 413 when valid
HUGE_RANDOM = {"random": "normal", "shape": [10**6, 10**6]}  # 10^12 input elements: a 413 when valid


@pytest.mark.parametrize("body, field", [
    ({"config": HUGE_LINEAR, "input": {"data": [[1.0]], "dtype": "int64"}}, "input.dtype"),
    ({"config": HUGE_LINEAR, "input": [[1.0, True]]}, "body"),  # refused by the JSON reader itself
    ({"config": HUGE_LINEAR, "input": [[1.0, 2.0], [3.0]]}, "input"),
    ({"config": HUGE_LINEAR, "input": [[1.0]], "parameters": {"bias": {"random": "bogus", "shape": [10**6]}}},
     "parameters.bias.random"),
    ({"config": LINEAR, "input": {"base64": "AAAA====", "shape": [10**6, 10**6]}}, "input.base64"),
    ({"config": LINEAR, "input": {"base64": "AAAAA", "shape": [10**6, 10**6]}}, "input.base64"),
    ({"config": LINEAR, "input": {**HUGE_RANDOM, "seed": 2**64}}, "input.seed"),
    ({"config": LINEAR, "input": HUGE_RANDOM, "parameters": {"weight": [["NaN", "nope", 1.0, 2.0]]}},
     "parameters.weight"),
])
def test_invalid_and_over_a_limit_is_422(client, body, field):
    response = client.post("/v1/layers/linear", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_empty_base64_is_valid_so_an_over_the_limit_shape_is_413(client):
    """"" is an empty tensor's base64: not invalid on its own, so the shape's limit answers first."""
    response = client.post("/v1/layers/linear", json={"config": LINEAR, "input": {"base64": "", "shape": [10**6, 10**6]}})
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "input"


def test_invalid_and_over_a_limit_is_422_in_a_stack(client):
    layers = [{"kind": "linear", "config": HUGE_LINEAR, "parameters": {"bias": {"data": [1.0], "dtype": "int32"}}}]
    response = client.post("/v1/sequential", json={"layers": layers, "input": HUGE_RANDOM})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "layers[0].parameters.bias.dtype"
    response = client.post("/v1/sequential", json={"layers": [{"kind": "relu"}], "input": {**HUGE_RANDOM, "dtype": "int64"}})
    assert response.status_code == 422 and response.json()["field"] == "input.dtype"
