"""Access control: optional API keys (Bearer or X-API-Key, several for rotation), open health and
docs, 401 in the error envelope, keys never logged; CORS closed unless configured."""

import re

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.live_server import ServerProcess

KEYS = ["k-current-7f3a9c", "k-previous-51be02"]
SMALL = {"config": {"in_features": 4, "out_features": 1}, "input": [[0.1, 0.2, 0.3, 0.4]]}
OPEN_PATHS = ["/healthz", "/docs", "/openapi.json", "/redoc", "/playground"]


def v1_operations() -> list[tuple[str, str]]:
    """Every documented /v1 operation (later issues' routes included once merged)."""
    paths = create_app(Settings()).openapi()["paths"]
    return sorted((method, path) for path, operations in paths.items() if path.startswith("/v1")
                  for method in operations if method in ("get", "post"))


def call(client, method: str, path: str, headers: dict | None = None):
    if method == "post":
        return client.post(path, json=SMALL, headers=headers)
    return client.get(path, headers=headers)


def assert_401(response, invalid: bool) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "Unauthorized" and body["status"] == 401 and body["field"] == "authorization"
    assert "Bearer" in body["detail"] or "not valid" in body["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer realm=")
    assert ('error="invalid_token"' in challenge) == invalid
    assert all(key not in response.text for key in KEYS)


@pytest.fixture
def keyed(make_client):
    return make_client(api_key=KEYS)


def test_without_keys_everything_is_open(client):
    for method, path in v1_operations():
        assert call(client, method, path).status_code != 401


@pytest.mark.parametrize("method, path", v1_operations())
def test_every_v1_route_needs_a_key(keyed, method, path):
    assert_401(call(keyed, method, path), invalid=False)
    assert_401(call(keyed, method, path, {"Authorization": "Bearer wrong"}), invalid=True)
    assert_401(call(keyed, method, path, {"X-API-Key": KEYS[0][:-1]}), invalid=True)
    assert_401(call(keyed, method, path, {"Authorization": f"Basic {KEYS[0]}"}), invalid=False)
    assert call(keyed, method, path, {"Authorization": f"Bearer {KEYS[0]}"}).status_code != 401


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {KEYS[0]}"},
    {"Authorization": f"bearer {KEYS[1]}"},  # the scheme is case-insensitive (RFC 7235)
    {"X-API-Key": KEYS[0]},
    {"X-API-Key": KEYS[1]},
])
def test_either_header_and_every_rotation_key_is_accepted(keyed, headers):
    response = keyed.post("/v1/layers/linear", json=SMALL, headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_health_and_docs_stay_open(keyed, path):
    assert keyed.get(path).status_code == 200


def test_the_docs_pages_load_whole_without_a_key(keyed):
    """Swagger UI, ReDoc and the playground with every asset they reference (served by the app itself)."""
    for page in ("/docs", "/redoc", "/playground"):
        html = keyed.get(page).text
        assets = re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", html) + re.findall(r"url: '(/[^']+)'", html)
        assert assets, html[:500]
        for asset in assets:
            assert keyed.get(asset).status_code == 200, asset


def test_exempt_paths_are_configurable(make_client):
    client = make_client(api_key=KEYS, auth_exempt_paths=["/v1/layers", "/v1/layers/conv*"])
    assert client.get("/v1/layers").status_code == 200
    assert client.post("/v1/layers/conv2d", json={}).status_code == 422  # open (a prefix), and empty
    assert_401(client.post("/v1/layers/linear", json=SMALL), invalid=False)
    assert_401(client.get("/healthz"), invalid=False)


def test_the_key_check_comes_before_the_body_is_read(make_client):
    client = make_client(api_key=KEYS, max_body_bytes=10)
    assert_401(client.post("/v1/layers/linear", content=b" " * 1000), invalid=False)


def test_settings_read_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAYERLAB_API_KEY", f" {KEYS[0]} , {KEYS[1]} ")
    monkeypatch.setenv("LAYERLAB_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    monkeypatch.setenv("LAYERLAB_AUTH_EXEMPT_PATHS", "/healthz,/metrics")
    settings = Settings()
    assert [key.get_secret_value() for key in settings.api_key] == KEYS
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.auth_exempt_paths == ["/healthz", "/metrics"]
    assert all(key not in repr(settings) and key not in str(settings.model_dump()) for key in KEYS)


def test_keys_are_never_logged(tmp_path):
    """The real server, with its whole output kept: no key appears in it, right or wrong."""
    log = tmp_path / "server.log"
    wrong = "wrong-key-0c1d2e"
    with ServerProcess(env={"LAYERLAB_API_KEY": ",".join(KEYS)}, log_path=log) as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.post("/v1/layers/linear", json=SMALL, headers={"X-API-Key": KEYS[0]}).status_code == 200
            assert client.get("/v1/layers", headers={"Authorization": f"Bearer {KEYS[1]}"}).status_code == 200
            assert client.get("/v1/layers", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    text = log.read_text()
    assert "Uvicorn running" in text or "Application startup" in text or "200" in text
    for secret in (*KEYS, wrong):
        assert secret not in text


def test_openapi_documents_the_keys_and_the_401(make_client):
    """With keys, a key (either way, not none) on every /v1 route; none on the open ones."""
    schema = make_client(api_key=KEYS).get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"BearerAuth", "ApiKeyAuth"}
    for method, path in v1_operations():
        operation = schema["paths"][path][method]
        assert "401" in operation["responses"]
        assert operation["security"] == [{"BearerAuth": []}, {"ApiKeyAuth": []}]
    for path in ("/healthz", "/readyz"):
        assert "401" not in schema["paths"][path]["get"]["responses"]
        assert schema["paths"][path]["get"]["security"] == []


def test_openapi_without_keys_requires_none(make_client):
    """No padlock in Swagger UI when the server has no keys: every operation says `security: []`."""
    schema = make_client().get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [], f"{method.upper()} {path}"


# --- CORS -----------------------------------------------------------------------------------

ORIGIN = "https://notebook.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, x-api-key"}


def test_cors_is_closed_by_default(client):
    preflight = client.options("/v1/layers/linear", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    response = client.post("/v1/layers/linear", json=SMALL, headers={"Origin": ORIGIN})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_cors_opens_to_configured_origins_only(make_client):
    client = make_client(cors_origins=[ORIGIN], api_key=KEYS)
    preflight = client.options("/v1/layers/linear", headers=PREFLIGHT)  # browsers send no key here
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    other = client.options("/v1/layers/linear", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    refused = client.post("/v1/layers/linear", json=SMALL, headers={"Origin": ORIGIN})
    assert refused.status_code == 401  # a browser can read why: the 401 carries the CORS header
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    allowed = client.post("/v1/layers/linear", json=SMALL, headers={"Origin": ORIGIN, "X-API-Key": KEYS[0]})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
