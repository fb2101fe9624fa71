"""Issue 19's ratios from one run, as one table (the README's performance table is its output).

    python tests/benchmarks/benchmark.py                # full run, ~5-8 minutes
    python tests/benchmarks/benchmark.py --quick        # fewer repeats, shorter load phases (~2 minutes)
    python tests/benchmarks/benchmark.py --markdown     # the table in markdown, for the README

Goals (issue 19), each measured by its own module, which any of them can also run alone:

  1, 4  tests/benchmarks/small_requests.py: server CPU per notebook Linear request / a raw ASGI
        app's under wrk; requests/s with 2 workers / with 1
  2, 5  tests/benchmarks/big_tensors.py: the notebook's Conv2d through the SDK over TCP / (loopback
        floor + bare conv); peak memory the server adds serving it / its input + output bytes
  3     tests/benchmarks/bench_shared_memory.py: the Conv2d through shared memory / bare conv

A module that is not in this build is skipped with a message. Each `run(quick)` returns dicts
{"goal", "ratio", "value", "target", "details"}; this script adds the context rows (what the
service costs against doing the same in-process, and against other ways of writing it):

  - JSON lists end to end / in-process orjson + NumPy + compute + orjson (the Conv2d's tensors as
    nested lists: what JSON itself costs, and how little the service adds to it)
  - a naive FastAPI + pydantic server / ours, the same JSON-lists request (`--no-naive` skips it)
  - reference backend / torch, in-process (tests/benchmarks/reference_vs_torch.py's method)

Every measurement alternates what it divides, so both sides see the same machine load; the load
average is printed before and after. On a shared machine every figure is noisy: rerun on a quiet
one for figures to quote.
"""

import argparse
import contextlib
import importlib
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

from app import process_environment  # noqa: E402
from tests.benchmarks import big_tensors  # noqa: E402
from tests.live_server import ServeProcess, live_server  # noqa: E402

GOAL_MODULES = [("small_requests", "goals 1 and 4"), ("big_tensors", "goals 2 and 5"),
                ("bench_shared_memory", "goal 3")]
PAUSE_S = 0.2
NOTEBOOK_LINEAR_INPUT = [
    [0.3102, 0.1271, -0.0823, 1.0858], [-1.1686, 1.6650, 1.3797, -0.9915], [0.3897, 0.3723, 1.0115, 0.1784],
    [1.9373, -1.0086, 0.7447, 0.2432], [0.4305, 0.0627, 0.7668, -1.9446], [1.0522, -0.2573, 0.6940, 0.0913],
    [-0.0278, -0.0746, -0.0560, -1.1732], [-1.1034, 0.8108, -1.1170, -0.2516], [-1.1515, 1.2772, -1.6101, -0.8164],
    [-0.6352, 0.9345, 0.4916, 1.1171],
]
"""The notebook's Linear cell's 10x4 input (small_requests.py sends it)."""


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds per call, the calls taking turns (each after a pause) so that they share the load."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            time.sleep(PAUSE_S)
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


# ---------------------------------------------------------------------------------------------
# The goals: each module's run(quick)


def goal_rows(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, goals in GOAL_MODULES:
        if not (ROOT / "tests" / "benchmarks" / f"{name}.py").exists():
            print(f"\n[{goals}] skipped: tests/benchmarks/{name}.py is not in this build")
            continue
        print(f"\n[{goals}] tests/benchmarks/{name}.py")
        started = time.perf_counter()
        try:
            found = importlib.import_module(f"tests.benchmarks.{name}").run(quick)
        except (Exception, SystemExit):  # one module failing (no wrk, one CPU) leaves the others' rows
            print(f"  failed, skipped:\n{traceback.format_exc()}")
            continue
        for row in found:
            print(f"  goal {row['goal']}: {row['value']:.2f} (target {row['target']})  {row['details']}")
        print(f"  ({time.perf_counter() - started:.0f} s)")
        rows += found
    return rows


# ---------------------------------------------------------------------------------------------
# Context: JSON lists, the naive server, reference against torch


def json_lists_body(x: np.ndarray, parameters: dict[str, np.ndarray]) -> bytes:
    return orjson.dumps({"config": big_tensors.CONFIG, "input": x, "parameters": parameters},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def in_process_json(body: bytes) -> None:
    """What JSON itself costs: orjson decode, NumPy conversion, the compute, orjson encode."""
    import torch

    value = orjson.loads(body)
    x = torch.from_numpy(np.array(value["input"], dtype=np.float32))
    params = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in value["parameters"].items()}
    with torch.no_grad():
        out = torch.nn.functional.conv2d(x, params["weight"], params["bias"], stride=2).numpy()
    orjson.dumps({"output": {"shape": list(out.shape), "dtype": "float32", "data": out},
                  "parameters": {k: v.numpy() for k, v in params.items()}}, option=orjson.OPT_SERIALIZE_NUMPY)


def create_naive_app():  # served by uvicorn --factory; imported in the server process only
    """FastAPI + pydantic models of nested lists, default JSON: how such a service is usually written."""
    import torch
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Conv2dRequest(BaseModel):
        config: dict[str, Any]
        input: list[list[list[list[float]]]]
        parameters: dict[str, list[list[list[list[float]]]] | list[float]]

    class Conv2dResponse(BaseModel):
        output: list[list[list[list[float]]]]
        output_shape: list[int]

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/layers/conv2d", response_model=Conv2dResponse)
    def conv2d(request: Conv2dRequest) -> dict[str, Any]:
        out = torch.nn.functional.conv2d(torch.tensor(request.input), torch.tensor(request.parameters["weight"]),
                                         torch.tensor(request.parameters["bias"]), stride=request.config.get("stride", 1))
        return {"output": out.tolist(), "output_shape": list(out.shape)}

    return app


@contextlib.contextmanager
def naive_server() -> Iterator[str]:
    with live_server("--factory", "--http", "httptools", "--loop", "uvloop", "--log-level", "warning",
                     app="tests.benchmarks.benchmark:create_naive_app",
                     env=process_environment.process_environment(), timeout=120) as url:
        yield url


def json_rows(quick: bool, naive: bool) -> list[dict[str, Any]]:
    x, parameters = big_tensors.notebook_tensors()
    body = json_lists_body(x, parameters)
    rows = []
    with ServeProcess(env={"LAYERLAB_LOG_LEVEL": "warning"}, timeout_s=120) as server, \
            httpx.Client(timeout=600) as client:
        response_bytes: list[int] = []

        def post(url: str) -> Callable[[], None]:
            def call() -> None:
                response = client.post(f"{url}/v1/layers/conv2d", content=body, headers={"content-type": "application/json"})
                response.raise_for_status()
                response_bytes.append(len(response.content))
            return call

        repeats = 3 if quick else 5
        times = interleaved({"e2e": post(server.url), "local": lambda: in_process_json(body)}, repeats)
        e2e, local = median(times["e2e"]), median(times["local"])
        rows.append({"goal": "context", "ratio": "JSON lists end to end / in-process JSON + compute",
                     "value": e2e / local, "target": None,
                     "details": f"Conv2d as nested lists: {e2e:.0f} ms end to end (httpx) / {local:.0f} ms in-process "
                                f"(orjson, NumPy, conv, orjson); {len(body) / 1e6:.0f} MB up, "
                                f"{median(response_bytes) / 1e6:.0f} MB down; medians of {repeats}"})
        if naive:
            with naive_server() as naive_url:
                runs = 1 if quick else 3
                times = interleaved({"naive": post(naive_url), "ours": post(server.url)}, runs, warmup=0)
            slow, ours = median(times["naive"]), median(times["ours"])
            rows.append({"goal": "context", "ratio": "naive FastAPI + pydantic / ours, JSON lists", "value": slow / ours,
                         "target": None, "details": f"the same Conv2d request: {slow:.0f} ms / {ours:.0f} ms ({runs} each)"})
    return rows


def reference_row(quick: bool) -> dict[str, Any]:
    """tests/benchmarks/reference_vs_torch.py's measurement on its notebook workloads and BatchNorm2d."""
    from app.layers.registry import LAYERS
    from tests.benchmarks import reference_vs_torch as rvt

    workloads = [*rvt.WORKLOADS,
                 rvt.Workload("BatchNorm2d(3)", "batchnorm2d", {"num_features": 3}, rvt.NOTEBOOK_BATCH, goal=float("inf"))]
    parts = []
    worst = 0.0
    for workload in workloads:
        if workload.kind not in LAYERS:
            continue
        torch_ms, reference_ms, _ = rvt.run(workload, rounds=2 if quick else 4, calls=2)
        worst = max(worst, reference_ms / torch_ms)
        parts.append(f"{workload.name} {reference_ms / torch_ms:.2f} ({reference_ms:.1f} / {torch_ms:.1f} ms)")
    return {"goal": "context", "ratio": "reference backend / torch, in-process (worst)", "value": worst, "target": None,
            "details": "; ".join(parts)}


def context_rows(quick: bool, naive: bool) -> list[dict[str, Any]]:
    print("\n[context] JSON lists, the naive server, reference against torch")
    started = time.perf_counter()
    rows = [*json_rows(quick, naive), reference_row(quick)]
    for row in rows:
        print(f"  {row['ratio']}: {row['value']:.2f}  {row['details']}")
    print(f"  ({time.perf_counter() - started:.0f} s)")
    return rows


# ---------------------------------------------------------------------------------------------
# The table


def met(value: float, target: str | None) -> str:
    if not target:
        return "-"
    op, bound = target.split()
    ok = value <= float(bound) if op == "<=" else value >= float(bound)
    return "yes" if ok else "NO"


def table(rows: list[dict[str, Any]], markdown: bool) -> str:
    header = ["goal", "ratio", "median", "target", "met?", "details"]
    cells = [[str(r["goal"]), r["ratio"], f"{r['value']:.2f}", r["target"] or "-", met(r["value"], r["target"]),
              r["details"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(5)]
    lines = []
    for row in [header, *cells]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter load phases (~2 minutes)")
    parser.add_argument("--markdown", action="store_true", help="print the final table in markdown")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive FastAPI server (its request takes seconds)")
    parser.add_argument("--no-context", action="store_true", help="the goals only")
    args = parser.parse_args()

    process_environment.reexec_with_process_environment()  # in-process torch with the server's settings
    import torch

    print(f"layerlab benchmark (issue 19): {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
          f"{', quick' if args.quick else ''}")
    before = load_average()
    print(f"load average before: {before}  (on a busy machine every figure is noisy)")
    started = time.perf_counter()
    rows = goal_rows(args.quick)
    if not args.no_context:
        rows += context_rows(args.quick, naive=not args.no_naive)
    rows.sort(key=lambda r: (r["goal"] == "context", str(r["goal"])))
    after = load_average()
    print(f"\nload average before: {before}; after: {after}; {time.perf_counter() - started:.0f} s in all\n")
    print(table(rows, args.markdown))


if __name__ == "__main__":
    main()
