"""The real server: uvicorn on 127.0.0.1, plain HTTP, as curl would use it."""

import threading
import time

import httpx
import numpy as np
import pytest
import torch

from app.layers.linear import NOTEBOOK_INPUT
from tests.live_server import live_server


@pytest.fixture(scope="module")
def server_url():
    with live_server() as url:
        yield url


def test_notebook_linear_over_real_http(server_url):
    weight, bias = [[-0.2009, -0.0747, -0.2266, 0.2618]], [-0.4708]
    response = httpx.post(f"{server_url}/v1/layers/linear", json={
        "config": {"in_features": 4, "out_features": 1}, "input": NOTEBOOK_INPUT,
        "parameters": {"weight": weight, "bias": bias}, "compare": True})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    expected = torch.mm(torch.tensor(NOTEBOOK_INPUT), torch.tensor(weight).T).add(torch.tensor(bias))
    torch.testing.assert_close(torch.tensor(body["output"]["data"]), expected)
    assert body["output_shape"] == [10, 1] and body["comparison"]["allclose"] is True


def test_errors_over_real_http_are_json_4xx(server_url):
    response = httpx.post(f"{server_url}/v1/layers/linear", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "BadRequest"
    response = httpx.post(f"{server_url}/v1/layers/linear", json={"config": {"in_features": 4, "out_features": 1}, "input": [[1.0]]})
    assert response.status_code == 422 and response.json()["field"] == "input"


def test_chunked_body_over_the_limit_is_413():
    with live_server(env={"LAYERLAB_MAX_BODY_BYTES": "1000"}) as url:
        def chunks():
            yield b'{"config": {"in_features": 4, "out_features": 1}, "input": ['
            for _ in range(200):
                yield b"[1.0, 2.0, 3.0, 4.0],"
            yield b"[1.0, 2.0, 3.0, 4.0]]}"

        response = httpx.post(f"{url}/v1/layers/linear", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert response.json()["limit"] == "max_body_bytes"


def test_health_answers_while_a_heavy_request_computes(server_url):
    heavy = {"config": {"in_features": 2048, "out_features": 2048}, "input": {"random": "normal", "shape": [4096, 2048]},
             "encoding": "none", "backend": "reference", "compare": True}
    done = threading.Event()
    result = {}

    def run_heavy():
        result["response"] = httpx.post(f"{server_url}/v1/layers/linear", json=heavy, timeout=120)
        done.set()

    thread = threading.Thread(target=run_heavy)
    thread.start()
    time.sleep(0.2)
    latencies = []
    while not done.is_set() and len(latencies) < 20:
        started = time.perf_counter()
        assert httpx.get(f"{server_url}/healthz", timeout=5).status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    thread.join()
    assert result["response"].status_code == 200, result["response"].text
    assert latencies and np.median(latencies) < 0.5, latencies
