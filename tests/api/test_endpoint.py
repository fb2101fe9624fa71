"""The one path (app.api.endpoint): where each tensor route's steps run, picked by the plan's size."""

import pytest

from app.codec import msgpack

LINEAR = {"in_features": 4, "out_features": 1}
TINY = {
    "/v1/layers/linear": {"config": LINEAR, "input": [[0.1, 0.2, 0.3, 0.4]] * 2},
    "/v1/sequential": {"layers": [{"kind": "linear", "config": LINEAR}, {"kind": "relu"}], "input": [[0.1] * 4] * 2},
    "/v1/shapes": {"input_shape": [2, 4], "layers": [{"kind": "linear", "config": LINEAR}]},
}


@pytest.mark.parametrize("path", sorted(TINY))
def test_a_tiny_request_of_every_tensor_route_computes_on_the_event_loop(make_client, path):
    client = make_client()
    pool = client.app.state.compute
    response = client.post(path, json=TINY[path])
    assert response.status_code == 200, response.text
    assert pool.counters.started == 0


@pytest.mark.parametrize("path", ["/v1/layers/linear", "/v1/sequential"])
def test_a_request_over_the_inline_size_goes_to_a_light_worker(make_client, path):
    client = make_client(inline_request_size=10)
    pool = client.app.state.compute
    response = client.post(path, json=TINY[path])
    assert response.status_code == 200, response.text
    assert pool.counters.started == 1


def test_a_big_body_is_decoded_by_a_worker_and_answers_as_a_small_one_does(make_client):
    client = make_client()
    pool = client.app.state.compute
    rows = [[0.25, -0.5, 1.0, 2.0]] * 5000  # well over 64 KiB of JSON
    body = {"layers": [{"kind": "linear", "config": LINEAR, "parameters": {"weight": [[1.0, 1.0, 1.0, 1.0]],
                                                                          "bias": [0.0]}}], "input": rows}
    response = client.post("/v1/sequential", json=body)
    assert response.status_code == 200, response.text
    assert pool.counters.started == 1
    assert response.json()["output"]["data"][:2] == [[2.75], [2.75]]


def test_a_single_layer_and_a_stack_of_one_give_the_same_layer(client):
    """/v1/layers/{kind} is a stack of one: the same plan and run as /v1/sequential."""
    layer = {"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": 2}}
    tensor = {"random": "normal", "shape": [1, 1, 4, 4], "seed": 3}
    single = client.post("/v1/layers/conv2d", json={"config": layer["config"], "input": tensor, "seed": 5,
                                                    "compare": True}).json()
    stack = client.post("/v1/sequential", json={"layers": [layer], "input": tensor, "seed": 5, "compare": True}).json()
    row = stack["layers"][0]
    assert single["output"] == stack["output"]
    for key in ("config", "input_shape", "output_shape", "parameters", "parameter_count", "formula"):
        assert single[key] == row[key], key
    assert {k: v for k, v in single["comparison"].items() if k != "elapsed_ms"} == \
        {k: v for k, v in row["comparison"].items() if k != "elapsed_ms"}


def test_msgpack_in_json_out_through_the_same_path(client):
    body = msgpack.packb(TINY["/v1/layers/linear"])
    response = client.post("/v1/layers/linear", content=body,
                           headers={"content-type": msgpack.MEDIA_TYPE, "accept": "application/json"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json()["output_shape"] == [2, 1]
