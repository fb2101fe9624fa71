"""Metrics that tell the truth (route templates for every route, per-worker process figures),
access lines (level, bytes actually read) and the W3C trace context (app.observability, app.tracing)."""

import logging
import re

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.tracing import parse_traceparent
from tests.live_server import ServerThread, raw_request, read_response

LINEAR = "/v1/layers/linear"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def requests_total(client) -> dict[tuple[str, str, str], float]:
    """layerlab_http_requests_total by (method, route, status), read with prometheus_client's parser."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
            for family in families if family.name == "layerlab_http_requests" for s in family.samples
            if s.name == "layerlab_http_requests_total"}


def access_lines(caplog) -> list[dict]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "layerlab.access"]


def test_routes_outside_fastapi_and_early_refusals_get_their_route_template(make_client):
    client = make_client(max_body_bytes=1000)
    before = requests_total(client)
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/static/docs/swagger-ui.css").status_code == 200
    assert client.get("/static/docs/no-such-file.js").status_code == 404
    too_big = client.post(LINEAR, content=b"[" * 2000, headers={"content-type": "application/json"})
    assert too_big.status_code == 413  # refused by the body cap, before routing
    assert client.get(LINEAR).status_code == 405
    assert client.get("/no/such/path").status_code == 404
    after = requests_total(client)

    def counted(method: str, route: str, status: str) -> float:
        return after.get((method, route, status), 0) - before.get((method, route, status), 0)

    assert counted("GET", "/openapi.json", "200") == 1
    assert counted("GET", "/static/docs/{path}", "200") == 1
    assert counted("GET", "/static/docs/{path}", "404") == 1
    assert counted("POST", LINEAR, "413") == 1
    assert counted("GET", LINEAR, "405") == 1
    assert counted("GET", "unmatched", "404") == 1  # only a path no route knows
    assert not any("swagger-ui.css" in route or "no/such" in route for _, route, _ in after)


def test_access_line_level_follows_the_status(client, caplog):
    caplog.set_level(logging.INFO, logger="layerlab.access")
    client.get("/healthz", headers={"X-Request-ID": "level-200"})
    client.get("/no/such/path", headers={"X-Request-ID": "level-404"})
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    assert lines["level-200"]["level"] == "info" and lines["level-404"]["level"] == "warning"
    levels = {r.getMessage(): r.levelname for r in caplog.records if r.name == "layerlab.access"}
    assert sorted(levels.values()) == ["INFO", "WARNING"]  # the record's own level, for log filters


def test_bytes_in_is_what_was_read_not_what_was_declared(caplog):
    """A 10^12-byte declaration is refused (413) before a byte is read: the line says 0 bytes in;
    a whole body counts its bytes."""
    caplog.set_level(logging.INFO, logger="layerlab.access")
    with ServerThread() as server:
        head = (f"POST {LINEAR} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "X-Request-ID: huge-1\r\nContent-Length: 1000000000000").encode()
        with raw_request(server.port, head) as sock:
            status, _, _ = read_response(sock)
        assert status == 413
        body = orjson.dumps({"config": {"in_features": 4, "out_features": 2},
                             "input": {"random": "normal", "shape": [3, 4], "seed": 1}})
        head = (f"POST {LINEAR} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-Request-ID: whole-1\r\nConnection: close\r\nContent-Length: {len(body)}").encode()
        with raw_request(server.port, head, body) as sock:
            status, _, _ = read_response(sock)
        assert status == 200
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    assert lines["huge-1"]["bytes_in"] == 0 and lines["huge-1"]["status"] == 413
    assert lines["huge-1"]["route"] == LINEAR
    assert lines["whole-1"]["bytes_in"] == len(body)


def test_a_traceparent_is_honoured_logged_and_echoed(client, caplog):
    caplog.set_level(logging.INFO, logger="layerlab.access")
    response = client.get("/healthz", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                               "X-Request-ID": "traced-1"})
    version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert re.fullmatch(r"[0-9a-f]{16}", span_id) and span_id != PARENT_ID  # this request's own span
    (line,) = [line for line in access_lines(caplog) if line["request_id"] == "traced-1"]
    assert line["trace_id"] == TRACE_ID and line["span_id"] == span_id


@pytest.mark.parametrize("header", [
    "garbage", f"00-{'0' * 32}-{PARENT_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01",
    f"00-{TRACE_ID}-{PARENT_ID}-01-extra", f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
])
def test_an_invalid_traceparent_starts_a_new_trace(client, header):
    echoed = client.get("/healthz", headers={"traceparent": header}).headers["traceparent"]
    trace = parse_traceparent(echoed)
    assert trace is not None and trace[0] != TRACE_ID


def test_traceparent_parsing_follows_the_w3c_rules():
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-01") == (TRACE_ID, PARENT_ID, 1)
    assert parse_traceparent(f"00-{TRACE_ID.upper()}-{PARENT_ID}-00") == (TRACE_ID, PARENT_ID, 0)
    # A later version may append fields; version 00 may not.
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-01-more") == (TRACE_ID, PARENT_ID, 1)
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-01-more") is None
    assert parse_traceparent(None) is None and parse_traceparent("") is None


def test_browsers_may_send_and_read_the_traceparent(make_client):
    client = make_client(cors_origins=["https://app.example"])
    preflight = client.options("/healthz", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET",
                                                   "Access-Control-Request-Headers": "traceparent"})
    assert preflight.status_code == 200 and "traceparent" in preflight.headers["access-control-allow-headers"].lower()
    simple = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "traceparent" in simple.headers["access-control-expose-headers"].lower()
