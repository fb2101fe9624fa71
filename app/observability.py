"""Watching the service: Prometheus metrics, request ids and one JSON access line per request.

The middleware runs on every request, so it does little: a header scan, a few metric updates
and one orjson line (a few microseconds).

Several worker processes: each process counts on its own, so `python -m app.serve` sets
PROMETHEUS_MULTIPROC_DIR before the workers start; prometheus_client then keeps every value in
a file per process there, and /metrics (answered by any worker) adds them all up. Without it
(one process, tests) the values live in memory.
"""

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import torch
from fastapi import Request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, tracing
from app.logs import ACCESS_LOGGER, AccessLineHandler, timestamp

if TYPE_CHECKING:
    from app.stacks.run import StackOutcome

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT_HEADER = b"traceparent"
# Accepted from clients as is (it lands in logs and a header); anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ACCESS_FIELDS = "layerlab.access"
"""Scope key of the dict a route fills with access-line fields (kind, backend, device)."""

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "layerlab_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "layerlab_http_request_duration_seconds",
    "From the request's arrival to the response's last byte.",
    ["method", "route"],
    buckets=_SECONDS,
)
IN_FLIGHT = Gauge(
    "layerlab_http_requests_in_flight",
    "Requests being handled now (all worker processes).",
    multiprocess_mode="livesum",
)
COMPUTE = Histogram(
    "layerlab_compute_seconds",
    "Time in a backend's forward pass, by layer kind and backend.",
    ["kind", "backend"],
    buckets=(0.0001, 0.00025, *_SECONDS),
)
TENSOR_BYTES = Counter(
    "layerlab_tensor_bytes",
    "Bytes of tensors as arrays, by layer kind; in: input and given parameters, "
    "out: output, parameters, buffers, indices, statistics.",
    ["kind", "direction"],
)
BUILD = Gauge(
    "layerlab_build_info",
    "Always 1; the labels say which versions run.",
    ["version", "torch", "numpy"],
    multiprocess_mode="max",
)
BUILD.labels(__version__, torch.__version__, np.__version__).set(1)

access_logger = logging.getLogger(ACCESS_LOGGER)

# `.labels(...)` costs several microseconds (validation, a lock); the children are kept here instead.
# Their number is bounded: route templates x methods x statuses.
_request_counters: dict[tuple[str, str, int], Any] = {}
_latency_histograms: dict[tuple[str, str], Any] = {}


def _count_request(method: str, route: str, status: int, seconds: float) -> None:
    counter = _request_counters.get((method, route, status))
    if counter is None:
        counter = _request_counters[(method, route, status)] = REQUESTS.labels(method, route, str(status))
    histogram = _latency_histograms.get((method, route))
    if histogram is None:
        histogram = _latency_histograms[(method, route)] = LATENCY.labels(method, route)
    counter.inc()
    histogram.observe(seconds)


def render_metrics(accept: str | None) -> tuple[bytes, str]:
    """The exposition (Prometheus text, or OpenMetrics when asked) and its content type."""
    registry = REGISTRY
    if folder := os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(WorkerProcessCollector(Path(folder)))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class WorkerProcessCollector:
    """CPU time and resident memory of each worker process, labelled by pid (several workers).

    prometheus_client's own process metrics describe the process that answers the scrape only,
    so with several workers it leaves them out. The workers are the processes that write metrics
    files in the shared folder; whichever answers reads every live one's /proc/PID/stat (Linux):
    the figures are current, and a worker that died is simply gone.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def worker_pids(self) -> list[int]:
        pids = {
            int(match.group(1)) for path in self.folder.glob("*.db") if (match := re.search(r"_(\d+)\.db$", path.name))
        }
        return sorted(pid for pid in pids if _parent_pid(pid) == os.getppid())

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "Total user and system CPU time of each worker process, in seconds.", labels=["pid"]
        )
        memory = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of each worker process, in bytes.", labels=["pid"]
        )
        for pid in self.worker_pids():
            stat = _proc_stat(pid)
            if stat is None:
                continue
            cpu_seconds, resident_bytes = stat
            cpu.add_metric([str(pid)], cpu_seconds)
            memory.add_metric([str(pid)], resident_bytes)
        yield cpu
        yield memory


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (which may hold spaces), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _proc_stat(pid: int) -> tuple[float, int] | None:
    """(user + system CPU seconds, resident bytes) from proc(5)'s utime, stime and rss."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, kept (see above); layer kinds and backends are bounded too."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def record_compute(outcome: "StackOutcome") -> None:
    """Compute time per layer and backend; tensor bytes too for a single-layer request."""
    for run in outcome.layers:
        kind = run.layer.entry.spec.kind
        _child(COMPUTE, kind, outcome.plan.request.backend).observe(run.elapsed_ms / 1000)
        if run.comparison is not None:
            _child(COMPUTE, kind, run.comparison["backend"]).observe(run.comparison["elapsed_ms"] / 1000)
    if outcome.plan.request.single:
        run = outcome.layers[0]
        kind = run.layer.entry.spec.kind
        returned = [outcome.output, *run.state.values(), *run.buffers.values(), *run.extras.values()]
        _child(TENSOR_BYTES, kind, "in").inc(outcome.input_nbytes)
        _child(TENSOR_BYTES, kind, "out").inc(sum(array.nbytes for array in returned))


def access_fields(request: Request) -> dict[str, Any]:
    """This request's access-line fields; routes add theirs (kind, backend, device)."""
    return request.scope.setdefault(ACCESS_FIELDS, {})


def _scan_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The client's request id (when well-formed) and its W3C traceparent header."""
    rid = traceparent = None
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            rid = text if _REQUEST_ID.fullmatch(text) else None
        elif name == TRACEPARENT_HEADER:
            traceparent = value.decode("latin-1")
    return rid, traceparent


def route_template(scope: Scope, routes: Iterable[BaseRoute]) -> str:
    """The route template a request was (or would have been) routed to, else "unmatched".

    Routing records FastAPI's routes in the scope; the others (/openapi.json, mounted files) and
    requests answered before routing (a 413 from the body cap) are matched here, afterwards,
    against a copy of the request's scope as it arrived (routing rewrites root_path).
    """
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _template(route)
        if match is Match.PARTIAL and partial is None:  # the path, with another method (a 405)
            partial = route
    return _template(partial) if partial is not None else "unmatched"


def flat_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """Every route with its full path: FastAPI >= 0.16x keeps included routers as one entry each."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI lists the routes themselves
        return list(routes)
    return [context.route for context in iter_route_contexts(list(routes))]


def _template(route: BaseRoute) -> str:
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    return getattr(route, "path", "unmatched")


_LEVEL_NAMES = {level: logging.getLevelName(level).lower() for level in (logging.INFO, logging.WARNING, logging.ERROR)}


def _level(status: int) -> int:
    return logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO


class ObservabilityMiddleware:
    """Outermost ASGI middleware: request id and trace context in and out, metrics, the access line.

    It wraps Starlette's error middleware too (see app.main), so even an unhandled error's 500
    is counted, logged and carries its request id.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: bool = True,
        routes: Iterable[BaseRoute] = (),
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.routes = routes
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid, traceparent = _scan_headers(scope["headers"])
        rid = rid or tracing.random_hex(16)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        path, root_path = scope["path"], scope.get("root_path", "")  # as it arrived: routing rewrites root_path
        trace = tracing.start_request(method, traceparent)
        fields: dict[str, Any] = {"request_id": rid, "trace_id": trace.trace_id, "span_id": trace.span_id}
        scope[ACCESS_FIELDS] = fields
        added_headers = [(REQUEST_ID_HEADER, rid.encode()), (TRACEPARENT_HEADER, trace.traceparent())]
        status, bytes_in, bytes_out = 500, 0, 0  # 500 stays if the app fails before answering

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), *added_headers]
                if self.draining():  # clients holding a connection here reconnect elsewhere (app.lifecycle)
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, counting_receive, send_with_id)
        finally:
            IN_FLIGHT.dec()
            duration = time.perf_counter() - started
            # Route templates, not paths, keep label sets bounded; so do known methods only.
            route = getattr(scope.get("route"), "path", None) or route_template(
                {"type": "http", "path": path, "root_path": root_path, "method": method}, self.routes
            )
            _count_request(method, route, status, duration)
            trace.end(route, status)
            level = _level(status)
            if self.access_log and access_logger.isEnabledFor(level):
                client = scope.get("client")
                line = {
                    "ts": timestamp(time.time()),
                    "level": _LEVEL_NAMES[level],
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "client": client[0] if client else None,
                    **fields,
                }
                text = orjson.dumps(line).decode()
                if (handler := AccessLineHandler.sole_handler(access_logger, level)) is not None:
                    handler.write_line(text)  # app.logs' configuration: straight to its stream
                else:  # another configuration: logger.log without its stack walk for the caller's line
                    access_logger.handle(access_logger.makeRecord(ACCESS_LOGGER, level, __file__, 0, text, (), None))
