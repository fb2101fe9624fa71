"""The tensor routes' one dispatch (app.api.raw_route.TensorDispatch): found by path, answered with
the app's own error handlers, everything else left to Starlette's routing."""

import pytest
from fastapi.testclient import TestClient

from app.api.raw_route import TensorDispatch
from app.config import Settings
from app.main import create_app
from app.observability import flat_routes

LINEAR = {"config": {"in_features": 2, "out_features": 1}, "input": [[1.0, 2.0]], "seed": 0}


@pytest.fixture(scope="module")
def dispatch() -> TensorDispatch:
    app = create_app(Settings())
    return TensorDispatch(app, flat_routes(app.router.routes), other=app.router)


def scope(path: str, method: str = "POST", root_path: str = "") -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": []}


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/layers/linear", "/v1/layers/linear"),
        ("/v1/sequential", "/v1/sequential"),
        ("/v1/shapes", "/v1/shapes"),
        ("/v2/models/conv2d/infer", "/v2/models/{model_name}/infer"),
        ("/v2/models/conv2d/versions/1/infer", "/v2/models/{model_name}/versions/{model_version}/infer"),
    ],
)
def test_tensor_routes_are_found_by_path(dispatch, path, template):
    request = scope(path)
    route = dispatch.match(request)
    assert route is not None and route.path == template
    if "{" in template:
        assert request["path_params"]["model_name"] == "conv2d"


@pytest.mark.parametrize(
    "request_scope",
    [
        scope("/v1/layers/nosuchkind"),  # the unknown-kind route, a plain FastAPI route
        scope("/v1/layers"),
        scope("/healthz"),
        scope("/v2/models/conv2d/ready"),
        scope("/v1/layers/linear", root_path="/api"),  # mounted: Starlette strips the prefix
    ],
)
def test_other_requests_take_starlettes_routing(dispatch, request_scope):
    assert dispatch.match(request_scope) is None


def test_another_method_on_a_tensor_path_is_a_405_in_the_envelope(client):
    response = client.get("/v1/layers/linear")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"
    assert response.headers["x-request-id"]


def test_a_dispatched_request_is_counted_under_its_route_template(client):
    assert client.post("/v2/models/linear/infer", json={"inputs": []}).status_code == 400
    metrics = client.get("/metrics").text
    assert 'route="/v2/models/{model_name}/infer",status="400"' in metrics


def test_an_unexpected_error_in_a_tensor_route_is_a_500_envelope_and_is_raised(monkeypatch):
    def broken(request):
        raise RuntimeError("a bug")

    monkeypatch.setattr("app.api.endpoint.access_fields", broken)
    app = create_app(Settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/layers/linear", json=LINEAR)
    assert response.status_code == 500
    assert response.json()["detail"] == "internal error: RuntimeError"
    assert response.headers["x-request-id"]
    with TestClient(app) as client, pytest.raises(RuntimeError, match="a bug"):  # the server logs it
        client.post("/v1/layers/linear", json=LINEAR)


def test_a_user_error_gets_the_apps_handler_on_the_dispatched_path(client):
    response = client.post("/v1/layers/linear", json={**LINEAR, "input": [[1.0, 2.0, 3.0]]})
    assert response.status_code == 422
    assert response.json()["field"] == "input"
    v2 = client.post("/v2/models/nosuchmodel/infer", json={"inputs": []})
    assert v2.status_code == 404 and set(v2.json()) == {"error"}
