"""OpenTelemetry spans (app.tracing), with the `otel` extra and an in-memory exporter: one layer
request is one server span with a child per step (decode, compute, encode)."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app import tracing
from app.config import Settings
from app.main import create_app

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install 'layerlab[otel]'")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
# The notebook's Conv2d: Conv2d(3, 16, 3, stride=2) on (100, 3, 120, 160).
CONV2D = {"config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2},
          "input": {"random": "normal", "shape": [100, 3, 120, 160], "seed": 0}, "encoding": "base64"}

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The process's tracer provider (OpenTelemetry allows one), exporting to memory."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # set by an earlier module of this session
        return current
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    return provider


@pytest.fixture
def traced_client(provider) -> Iterator[TestClient]:
    _exporter.clear()
    with TestClient(create_app(Settings(tracing=True))) as client:
        yield client
    tracing.configure(False)  # other tests' apps run without spans


def test_a_conv2d_request_is_a_span_with_decode_compute_and_encode_children(traced_client):
    response = traced_client.post("/v1/layers/conv2d", json=CONV2D,
                                  headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert response.status_code == 200, response.text
    assert response.json()["output_shape"] == [100, 16, 59, 79]
    spans = _exporter.get_finished_spans()
    (request,) = [span for span in spans if span.kind == trace.SpanKind.SERVER]
    assert request.name == "POST /v1/layers/conv2d"
    assert request.attributes["http.route"] == "/v1/layers/conv2d"
    assert request.attributes["http.response.status_code"] == 200
    # A child of the client's span, in the client's trace; the response names the server span.
    assert f"{request.context.trace_id:032x}" == TRACE_ID and f"{request.parent.span_id:016x}" == PARENT_ID
    assert response.headers["traceparent"] == f"00-{TRACE_ID}-{request.context.span_id:016x}-01"
    children = {span.name: span for span in spans if span.parent is not None
                and span.parent.span_id == request.context.span_id}
    assert sorted(children) == ["compute", "decode", "encode"]
    # In order, inside the request's span.
    decode, compute, encode = children["decode"], children["compute"], children["encode"]
    assert request.start_time <= decode.start_time <= decode.end_time <= compute.start_time
    assert compute.end_time <= encode.start_time <= encode.end_time <= request.end_time
    assert compute.end_time - compute.start_time > 0


def test_big_bodies_decode_in_the_compute_worker_and_stay_in_the_trace(traced_client):
    """A body over the light-parsing size is decoded in a compute thread: its span still has the
    request's span as its parent."""
    x = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    body = {**CONV2D, "input": x.tolist(), "encoding": "list"}
    response = traced_client.post("/v1/layers/conv2d", json=body)
    assert response.status_code == 200
    spans = _exporter.get_finished_spans()
    (request,) = [span for span in spans if span.kind == trace.SpanKind.SERVER]
    names = sorted(span.name for span in spans if span.parent and span.parent.span_id == request.context.span_id)
    assert names == ["compute", "decode", "encode"]
    parameters = response.json()["parameters"]
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.tensor(parameters["weight"]["data"]),
                                          torch.tensor(parameters["bias"]["data"]), stride=2)
    torch.testing.assert_close(torch.tensor(response.json()["output"]["data"]), expected)


def test_an_error_is_a_span_too(traced_client):
    response = traced_client.post("/v1/layers/conv2d", json={**CONV2D, "config": {"in_channels": 3}})
    assert response.status_code == 422
    (request,) = [span for span in _exporter.get_finished_spans() if span.kind == trace.SpanKind.SERVER]
    assert request.attributes["http.response.status_code"] == 422


def test_tracing_is_off_by_default(provider):
    _exporter.clear()
    with TestClient(create_app(Settings())) as client:
        assert client.post("/v1/layers/conv2d", json={**CONV2D, "encoding": "none"}).status_code == 200
    assert _exporter.get_finished_spans() == ()
