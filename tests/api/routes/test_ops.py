"""Operations routes (/healthz, /readyz, /v1/info, /metrics), request ids, access lines, devices, CORS."""

import logging
import re

import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app import __version__
from app.config import Settings
from app.layers.registry import LAYERS
from app.main import create_app
from tests.wire import as_base64, post_layer

LINEAR = "/v1/layers/linear"


def linear_body(rows: int = 3, **options) -> dict:
    return {"config": {"in_features": 4, "out_features": 2},
            "input": {"random": "normal", "shape": [rows, 4], "seed": 1}, **options}


def samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(table: dict, name: str, **labels) -> float:
    return table.get((name, tuple(sorted(labels.items()))), 0.0)


def access_lines(caplog) -> list[dict]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "layerlab.access"]


# -- health and readiness


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_computes_on_each_backend(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    expected = {"reference", "torch:cpu"} | {f"torch:cuda:{i}" for i in range(torch.cuda.device_count())}
    assert body["checks"] == {name: "ok" for name in expected}
    assert body["elapsed_ms"] > 0


def test_readyz_is_503_when_a_backend_cannot_compute(make_client):
    # A real failure, not a simulated one: limits too small for the probe's 2x3 input.
    response = make_client(max_tensor_elements=4).get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert set(body["checks"]) >= {"reference", "torch:cpu"}
    assert all(check.startswith("error: PayloadTooLarge") for check in body["checks"].values()), body


# -- info


def test_info_versions_devices_and_limits(make_client):
    settings = dict(max_macs=12345, max_json_depth=9, compute_workers=3, workers=4)
    body = make_client(**settings).get("/v1/info").json()
    assert body["name"] == "layerlab" and body["version"] == __version__
    assert body["versions"]["torch"] == torch.__version__
    assert body["versions"]["numpy"] == np.__version__
    assert body["devices"][0] == {"device": "cpu", "threads": torch.get_num_threads()}
    assert [d["device"] for d in body["devices"][1:]] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert body["limits"] == Settings(**settings).limits()
    assert body["limits"]["max_macs"] == 12345 and body["limits"]["max_json_depth"] == 9
    assert body["workers"] == 4 and body["compute_workers"] == 3
    assert body["layers"] == sorted(LAYERS) and body["backends"] == ["torch", "reference"]


# -- metrics


def test_metrics_count_a_layer_request(client):
    weight = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    body = {"config": {"in_features": 4, "out_features": 2},
            "input": as_base64(np.ones((5, 4), np.float32)),
            "parameters": {"weight": weight.tolist()}, "compare": True}
    before = samples(client)
    post_layer(client, "linear", body)
    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("layerlab_http_requests_total", method="POST", route=LINEAR, status="200") == 1
    assert delta("layerlab_http_request_duration_seconds_count", method="POST", route=LINEAR) == 1
    assert delta("layerlab_http_request_duration_seconds_sum", method="POST", route=LINEAR) > 0
    assert delta("layerlab_compute_seconds_count", kind="linear", backend="torch") == 1
    assert delta("layerlab_compute_seconds_count", kind="linear", backend="reference") == 1
    # in: the 5x4 input and the given weight; out: the 5x2 output, weight and (seeded) bias. float32.
    assert delta("layerlab_tensor_bytes_total", kind="linear", direction="in") == 4 * (20 + 8)
    assert delta("layerlab_tensor_bytes_total", kind="linear", direction="out") == 4 * (10 + 8 + 2)
    # The /metrics request that read `before` was in flight then; none is left over.
    assert value(after, "layerlab_http_requests_in_flight") == 1
    assert value(after, "layerlab_build_info", version=__version__, torch=torch.__version__,
                 numpy=np.__version__) == 1


def test_metrics_label_by_route_template_and_status(client):
    before = samples(client)
    client.post("/v1/layers/no-such-kind", json=linear_body())
    client.get("/no/such/path/123")
    client.post(LINEAR, json={**linear_body(), "backend": "tensorflow"})
    after = samples(client)
    assert value(after, "layerlab_http_requests_total", method="POST", route="/v1/layers/{kind}", status="404") \
        - value(before, "layerlab_http_requests_total", method="POST", route="/v1/layers/{kind}", status="404") == 1
    assert value(after, "layerlab_http_requests_total", method="GET", route="unmatched", status="404") \
        - value(before, "layerlab_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(after, "layerlab_http_requests_total", method="POST", route=LINEAR, status="422") \
        - value(before, "layerlab_http_requests_total", method="POST", route=LINEAR, status="422") == 1
    assert not any("no-such-kind" in str(labels) or "123" in str(labels) for _, labels in after)


def test_metrics_speak_openmetrics_when_asked(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# -- request ids and access lines


def test_request_id_is_echoed_or_generated(client):
    given = client.get("/healthz", headers={"X-Request-ID": "trace-42:a/b"})
    assert given.headers["x-request-id"] == "trace-42:a/b"
    made = [client.get("/healthz").headers["x-request-id"] for _ in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made) and made[0] != made[1]
    for unsafe in ("has space", "x" * 129, "quote\"", ""):
        echoed = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), unsafe
    error = client.post(LINEAR, json={"config": {}}, headers={"X-Request-ID": "bad-request-1"})
    assert error.status_code == 422 and error.headers["x-request-id"] == "bad-request-1"


def test_one_json_access_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="layerlab.access")
    ok = client.post(LINEAR, json=linear_body(compare=True), headers={"X-Request-ID": "line-1"})
    bad = client.post(LINEAR, json={**linear_body(), "config": {"in_features": 5, "out_features": 2}})
    health = client.get("/healthz")
    lines = access_lines(caplog)
    assert [line["request_id"] for line in lines] == [
        "line-1", bad.headers["x-request-id"], health.headers["x-request-id"]]
    first, second, third = lines
    assert ok.status_code == 200
    assert {k: first[k] for k in ("method", "route", "path", "status", "kind", "backend", "device", "compare")} == {
        "method": "POST", "route": LINEAR, "path": LINEAR, "status": 200,
        "kind": "linear", "backend": "torch", "device": "cpu", "compare": True}
    assert first["duration_ms"] > 0 and first["bytes_out"] == len(ok.content) and first["bytes_in"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["status"] == 422 and second["kind"] == "linear"
    assert third["route"] == "/healthz" and "kind" not in third


def test_access_lines_can_be_turned_off(make_client, caplog):
    caplog.set_level(logging.INFO, logger="layerlab.access")
    make_client(access_log=False).get("/healthz")
    assert access_lines(caplog) == []


def test_an_unexpected_error_is_counted_logged_and_keeps_its_request_id(caplog):
    caplog.set_level(logging.INFO, logger="layerlab.access")
    app = create_app(Settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        before = samples(client)
        response = client.get("/boom", headers={"X-Request-ID": "boom-1"})
        after = samples(client)
    assert response.status_code == 500 and response.json()["detail"] == "internal error: RuntimeError"
    assert response.headers["x-request-id"] == "boom-1"
    line = next(line for line in access_lines(caplog) if line["request_id"] == "boom-1")
    assert line["status"] == 500 and line["route"] == "/boom"
    assert value(after, "layerlab_http_requests_total", method="GET", route="/boom", status="500") \
        - value(before, "layerlab_http_requests_total", method="GET", route="/boom", status="500") == 1


# -- devices


def test_cpu_is_the_default_device_and_is_reported(client):
    default = post_layer(client, "linear", linear_body())
    explicit = post_layer(client, "linear", linear_body(device="cpu"))
    assert default["device"] == explicit["device"] == "cpu"
    assert default["output"] == explicit["output"]


@pytest.mark.parametrize("device", ["cuda:99", *([] if torch.cuda.is_available() else ["cuda", "cuda:0"])])
def test_an_unavailable_device_is_a_clear_422(client, device):
    body = post_layer(client, "linear", linear_body(device=device), 422)
    assert body["field"] == "device" and body["actual"] == device
    assert "cpu" in body["expected"] and "not available" in body["detail"]


def test_a_device_that_is_not_one_is_a_422(client):
    assert post_layer(client, "linear", linear_body(device="tpu"), 422)["field"] == "device"


def test_the_reference_backend_alone_takes_no_gpu(client):
    body = post_layer(client, "linear", linear_body(device="cuda", backend="reference"), 422)
    assert body["field"] == "device" and body["expected"] == "cpu" and "NumPy on the CPU" in body["detail"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_torch_on_the_gpu_matches_torch_on_the_cpu(client, device):
    gpu = post_layer(client, "linear", linear_body(rows=7, device=device, compare=True))
    cpu = post_layer(client, "linear", linear_body(rows=7))
    assert gpu["device"] == device and gpu["comparison"]["allclose"]
    torch.testing.assert_close(torch.tensor(gpu["output"]["data"]), torch.tensor(cpu["output"]["data"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_statistics_come_back_from_the_gpu(client, training):
    body = {"config": {"num_features": 3}, "input": {"random": "normal", "shape": [4, 3, 5, 5], "seed": 2},
            "training": training}
    gpu = post_layer(client, "batchnorm2d", {**body, "device": "cuda"})
    cpu = post_layer(client, "batchnorm2d", body)
    for part in ("output", "statistics", "buffers"):
        assert gpu[part] is not None
    torch.testing.assert_close(torch.tensor(gpu["output"]["data"]), torch.tensor(cpu["output"]["data"]))
    for name in ("mean", "var"):
        torch.testing.assert_close(torch.tensor(gpu["statistics"][name]["data"]),
                                   torch.tensor(cpu["statistics"][name]["data"]))


# -- CORS


def test_cors_is_closed_by_default(client):
    asking = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    preflight = client.options(LINEAR, headers=asking)
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_opens_to_configured_origins(make_client):
    client = make_client(cors_origins=["https://app.example"])
    preflight = client.options(LINEAR, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-request-id"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = client.options(LINEAR, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


# -- settings


def test_list_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAYERLAB_CORS_ORIGINS", " https://a.example, https://b.example ")
    monkeypatch.setenv("LAYERLAB_API_KEY", '["k1", "k2"]')
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert [key.get_secret_value() for key in settings.api_key] == ["k1", "k2"]
    assert "k1" not in repr(settings)
    monkeypatch.setenv("LAYERLAB_CORS_ORIGINS", "")
    assert Settings().cors_origins == []


def test_an_api_key_is_not_silently_ignored():
    """LAYERLAB_API_KEY is enforced (app.api.security; tests/test_security.py has the details)."""
    with TestClient(create_app(Settings(api_key=["secret-key-1"]))) as client:
        assert client.get("/v1/layers").status_code == 401
        assert client.get("/v1/layers", headers={"X-API-Key": "secret-key-1"}).status_code == 200
        assert client.get("/healthz").status_code == 200
