"""Operations: liveness, readiness, service information and Prometheus metrics.

None of these waits for the compute pool: /healthz and /metrics answer on the event loop, and
/readyz computes its tiny layers in a thread of its own.
"""

import platform
import time
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import __version__
from app.api.deps import SettingsDep
from app.api.negotiation import json_response
from app.backends.registry import available_devices
from app.backends.torch_backend import device_details
from app.config import Settings
from app.layers.registry import LAYERS
from app.observability import render_metrics
from app.schemas.ops import Info, Readiness
from app.schemas.requests import LayerRequestOptions
from app.schemas.responses import Health
from app.stacks.plan import plan_stack, stack_of_one
from app.stacks.run import TOLERANCES, run_plan

router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 10.0
# A tiny Linear (2 rows, 3 features), computed on every backend and torch device.
_PROBE = {"config": {"in_features": 3, "out_features": 2}, "input": {"random": "normal", "shape": [2, 3], "seed": 0}}


@router.get(
    "/healthz",
    name="health",
    summary="Liveness",
    response_model=Health,
    description='Answers `{"status": "ok"}` at once while the process is alive, even when every '
    "compute worker is busy: for container health checks and load balancers.",
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readiness_checks(settings: Settings) -> dict[str, str]:
    """`ok` per backend and torch device when its output matches the reference backend's."""
    targets = [("reference", "cpu")] + [("torch", d) for d in available_devices() if d != "cuda"]
    outputs: dict[str, np.ndarray] = {}
    checks: dict[str, str] = {}
    for backend, device in targets:
        name = backend if backend == "reference" else f"torch:{device}"
        try:
            request = LayerRequestOptions.model_validate({**_PROBE, "backend": backend, "device": device})
            outputs[name] = run_plan(plan_stack(stack_of_one("linear", request), settings)).output
            checks[name] = "ok"
        except Exception as exc:  # a readiness probe reports failures rather than raising them
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    rtol, atol = TOLERANCES["float32"]
    for name, output in outputs.items():
        expected = outputs.get("reference")
        if expected is not None and not np.allclose(output, expected, rtol=rtol, atol=atol):
            checks[name] = f"error: output differs from the reference backend by {np.abs(output - expected).max():.3g}"
    return checks


@router.get(
    "/readyz",
    name="ready",
    summary="Readiness: a tiny layer computes on every backend",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
    description="Computes a tiny Linear on the reference backend and on each torch device and checks they "
    "agree: 200 when every check is `ok`, else 503 with the failing checks; 503 at once, status `draining`, from "
    "the server's SIGTERM on (see LAYERLAB_DRAIN_S). For orchestrators' readiness probes.",
)
async def readyz(request: Request, settings: SettingsDep) -> Response:
    started = time.perf_counter()
    if request.app.state.drain.draining:  # stopping (SIGTERM, app.lifecycle): take this replica out first
        body = {"status": "draining", "checks": {"drain": "error: the server is shutting down"}, "elapsed_ms": 0.0}
        return json_response(body, status_code=503)
    checks = await check_readiness(settings)
    ready = all(value == "ok" for value in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    return json_response(body, status_code=200 if ready else 503)


async def check_readiness(settings: Settings) -> dict[str, str]:
    """`readiness_checks` in a thread of its own, given up after READY_TIMEOUT_S (/readyz, /v2/health/ready)."""
    checks = {"timeout": f"error: the checks took over {READY_TIMEOUT_S} s"}
    with anyio.move_on_after(READY_TIMEOUT_S):
        checks = await anyio.to_thread.run_sync(readiness_checks, settings, abandon_on_cancel=True)
    return checks


@router.get(
    "/v1/info",
    name="info",
    summary="Versions, devices and the limits in force",
    response_model=Info,
    description="The app, Python, torch and NumPy versions, the devices the torch backend can use, the layer "
    "kinds, and every limit in force (the LAYERLAB_MAX_* settings).",
    response_model_exclude_none=True,
)
def info(settings: SettingsDep) -> dict[str, Any]:
    return {
        "name": "layerlab",
        "version": __version__,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "devices": device_details(),
        "backends": ["torch", "reference"],
        "layers": sorted(LAYERS),
        "limits": settings.limits(),
        "workers": settings.workers,
        "compute_workers": settings.compute_workers,
    }


@router.get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics (text exposition format)",
    description="Requests by route and status, latency histograms, compute time by kind and backend, tensor "
    "bytes in and out, requests in flight; summed over every worker process.",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
            "description": "Prometheus text, or OpenMetrics when the Accept header asks for it.",
        }
    },
)
async def metrics(request: Request) -> Response:
    body, content_type = render_metrics(request.headers.get("accept"))
    return Response(body, media_type=content_type)
