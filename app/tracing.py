"""Trace context: the W3C `traceparent` header, and OpenTelemetry spans when tracing is on.

Always: a request's `traceparent` (https://www.w3.org/TR/trace-context/) is honoured: its trace id
is this request's (in the access line), and the response's `traceparent` carries that trace id
with this request's own span id. Without one, the request starts a new trace.

Optional (`pip install 'layerlab[otel]'`, then LAYERLAB_TRACING=true): OpenTelemetry spans, one
per request (made in app.observability's middleware, a child of the client's span) and one per
step of a layer request: decode, compute, encode (`step`). They are exported where the standard
OTEL_* variables say: OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (default
http://localhost:4318), or OTEL_TRACES_EXPORTER=console. A process that installed its own tracer
provider first (a test's in-memory exporter) keeps it.

Off (the default), `step` returns one shared no-op context manager.
"""

import contextlib
import inspect
import os
import random
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from app import __version__

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_NO_STEP: AbstractContextManager[None] = contextlib.nullcontext()

_tracer: Any = None
"""The OpenTelemetry tracer while tracing is on, else None."""


def random_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, for ids that must be unique, not secret (trace, span, request
    ids): Python's generator (reseeded in forked children) takes ~0.5 us, os.urandom's system call ~1 us."""
    return random.randbytes(nbytes).hex()


def parse_traceparent(header: str | None) -> tuple[str, str, int] | None:
    """(trace id, parent span id, flags) of a valid header, else None (the header is then ignored)."""
    match = _TRACEPARENT.fullmatch(header.strip().lower()) if header else None
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id, parent_id, int(flags, 16)


def configure(enabled: bool) -> None:
    """Turn spans on or off for this process (called by app.main.create_app)."""
    global _tracer
    if not enabled:
        _tracer = None
        return
    try:
        from opentelemetry import trace
    except ImportError:
        raise RuntimeError(
            "LAYERLAB_TRACING is on but OpenTelemetry is not installed: pip install 'layerlab[otel]'"
        ) from None
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # nobody set one up yet
        trace.set_tracer_provider(_sdk_provider())
    _tracer = trace.get_tracer("layerlab", __version__)


def fastapi_options() -> dict[str, Any]:
    """`FastAPI(...)` options that turn off FastAPI's own OpenTelemetry (FastAPI >= 0.165 makes
    spans, metrics and logs whenever a provider exists): the spans here are the only ones, on
    whatever FastAPI version, and only when LAYERLAB_TRACING says so."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def _sdk_provider() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "layerlab")})
    )
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@dataclass(slots=True)
class RequestTrace:
    """One request's place in its trace; with tracing on, its span is current until `end`."""

    trace_id: str
    span_id: str
    flags: int
    span: Any = None
    token: Any = None

    def traceparent(self) -> bytes:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}".encode()

    def end(self, route: str, status: int) -> None:
        if self.span is None:
            return
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        self.span.update_name(f"{self.span.name} {route}")
        self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
        context.detach(self.token)


def start_request(method: str, traceparent: str | None) -> RequestTrace:
    """The request's trace ids; with tracing on, its server span, started and made current."""
    parent = parse_traceparent(traceparent)
    if _tracer is None:
        ids = random_hex(24)  # both ids at once: a new trace id, then the span id
        trace_id, _, flags = parent or (ids[:32], "", 0)
        return RequestTrace(trace_id, ids[32:], flags)
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent_context = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if parent else None
    span = _tracer.start_span(
        method, context=parent_context, kind=trace.SpanKind.SERVER, attributes={"http.request.method": method}
    )
    token = context.attach(trace.set_span_in_context(span))
    ids = span.get_span_context()
    return RequestTrace(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", int(ids.trace_flags), span, token)


def step(name: str) -> AbstractContextManager[Any]:
    """A child span of the current request's span for one step (decode, compute, encode)."""
    if _tracer is None:
        return _NO_STEP
    return _tracer.start_as_current_span(name)
