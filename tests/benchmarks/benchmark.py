"""End-to-end cost of a layer request against the cost of the layer itself (issue 9).

    python tests/benchmarks/benchmark.py            # full run, several minutes
    python tests/benchmarks/benchmark.py --quick    # fewer repeats, shorter load phases (~1-2 min)

Starts the real server (uvicorn on 127.0.0.1, a free port, with the service's tuned process
environment) and prints, from one run, these ratios with their medians:

  1. notebook Conv2d end to end through the SDK's default transport (msgpack) / bare torch conv2d here
  2. the same request as JSON lists / orjson decode + numpy + compute + orjson encode in-process
  3. that JSON-lists request on a naive FastAPI + pydantic server / on ours
  4. small Linear 10x4 requests/s / GET /healthz requests/s under the same concurrent load
  5. peak resident memory the server adds serving the Conv2d / (input bytes + output bytes)
  6. reference backend / torch on the notebook's Conv2d, MaxPool2d and BatchNorm2d (in-process,
     with tests/benchmarks/reference_vs_torch.py's method and workloads)

plus the in-process cost of each transport's codec on the Conv2d payloads (why msgpack). A
workload whose layer kind the service does not have yet is skipped with a message; until
conv2d exists, ratios 1-3 and 5 use a Linear stand-in with the same bytes in and out.

Timings are medians of interleaved runs (numerator and denominator alternate, so both see the
same machine load). On a shared or busy machine they are noisy: the script prints the load
average before and after; rerun on a quiet machine for figures to quote.
"""

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pybase64  # noqa: E402

from app import process_environment  # noqa: E402
from app.codec import msgpack as wire  # noqa: E402
from tests.live_server import live_server  # noqa: E402

GOALS = {1: ("<=", 4.0), 2: ("<=", 1.3), 3: (">=", 5.0), 4: (">=", 0.85), 5: ("<=", 3.0)}
NOTEBOOK_LINEAR_INPUT = [
    [0.3102, 0.1271, -0.0823, 1.0858], [-1.1686, 1.6650, 1.3797, -0.9915], [0.3897, 0.3723, 1.0115, 0.1784],
    [1.9373, -1.0086, 0.7447, 0.2432], [0.4305, 0.0627, 0.7668, -1.9446], [1.0522, -0.2573, 0.6940, 0.0913],
    [-0.0278, -0.0746, -0.0560, -1.1732], [-1.1034, 0.8108, -1.1170, -0.2516], [-1.1515, 1.2772, -1.6101, -0.8164],
    [-0.6352, 0.9345, 0.4916, 1.1171],
]


# ---------------------------------------------------------------------------------------------
# Workloads


@dataclass
class Workload:
    """One big layer request: what the service computes, and the same thing in bare torch."""

    name: str
    kind: str
    config: dict[str, Any]
    x: np.ndarray
    parameters: dict[str, np.ndarray]
    torch_call: Callable[..., Any]
    """(x, **parameters) -> output tensor, the bare torch computation."""

    def request(self, tensor: Callable[[np.ndarray], Any]) -> dict[str, Any]:
        return {"config": self.config, "input": tensor(self.x),
                "parameters": {k: tensor(v) for k, v in self.parameters.items()}}

    @property
    def path(self) -> str:
        return f"/v1/layers/{self.kind}"


def available_kinds() -> set[str]:
    from app.layers.registry import LAYERS

    return set(LAYERS)


def notebook_conv2d() -> Workload:
    """Conv2d(3, 16, 3, stride=2) on torch.rand(100, 3, 120, 160): the notebook's cell."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Conv2d(3, 16, 3, stride=2)
    x = torch.rand(100, 3, 120, 160)
    return Workload(
        "Conv2d(3,16,3,stride=2) on (100,3,120,160)", "conv2d",
        {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, x.numpy(),
        {"weight": module.weight.detach().numpy(), "bias": module.bias.detach().numpy()},
        lambda x, weight, bias: torch.nn.functional.conv2d(x, weight, bias, stride=2))


def linear_stand_in() -> Workload:
    """Linear(160, 207) on (36000, 160): 23.0 MB in, 29.8 MB out, like the notebook's Conv2d."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Linear(160, 207)
    x = torch.rand(36000, 160)
    return Workload(
        "Linear(160,207) on (36000,160) [stand-in until conv2d exists]", "linear",
        {"in_features": 160, "out_features": 207}, x.numpy(),
        {"weight": module.weight.detach().numpy(), "bias": module.bias.detach().numpy()},
        lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias))


def big_workload() -> Workload:
    if "conv2d" in available_kinds():
        return notebook_conv2d()
    print("  note: the conv2d kind is not in this build; ratios 1-3 and 5 use a Linear stand-in of the same bytes")
    return linear_stand_in()


def as_list_tensor(array: np.ndarray) -> np.ndarray:
    return array  # orjson writes the array as nested lists (OPT_SERIALIZE_NUMPY)


def json_lists_body(workload: Workload) -> bytes:
    return orjson.dumps(workload.request(as_list_tensor), option=orjson.OPT_SERIALIZE_NUMPY)


# ---------------------------------------------------------------------------------------------
# Measuring


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


PAUSE_S = 0.2
"""Before each timed call: torch's OpenMP threads spin a while after a call, and on a 2-core machine
the next call (here, or the server's) would pay for them."""


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                pause: float = PAUSE_S) -> dict[str, list[float]]:
    """Milliseconds per call, the calls alternating so that they share the machine's load."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            time.sleep(pause)
            times[name].append(timed(fn))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


@dataclass
class Results:
    ratios: dict[int, tuple[str, float, str]] = field(default_factory=dict)
    """number -> (what, value, details)"""
    notes: list[str] = field(default_factory=list)

    def add(self, number: int, what: str, value: float, details: str) -> None:
        self.ratios[number] = (what, value, details)
        goal = GOALS.get(number)
        verdict = ""
        if goal:
            op, target = goal
            ok = value <= target if op == "<=" else value >= target
            verdict = f"  goal {op} {target:g}: {'met' if ok else 'NOT met'}"
        print(f"  ratio {number}: {value:.2f}{verdict}\n           {details}")


# ---------------------------------------------------------------------------------------------
# Server processes: who listens on a port, and their memory


def listening_pids(port: int) -> list[int]:
    """The processes holding the listening socket of `port` (uvicorn's supervisor and workers)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(parts[9])
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        pids.append(int(entry))
                        break
    return sorted(pids)


def memory_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status) if k in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak resident set) to the current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")


def peak_added_mb(pids: list[int], request: Callable[[], Any]) -> float:
    """Peak RSS minus RSS before, summed over the server's processes, while `request` runs."""
    before = {}
    for pid in pids:
        reset_peak(pid)
        before[pid] = memory_kb(pid)["VmRSS"]
    request()
    return sum(memory_kb(pid)["VmHWM"] - before[pid] for pid in pids) / 1024


# ---------------------------------------------------------------------------------------------
# A lean HTTP/1.1 load generator: keep-alive connections, prepared request bytes


async def _hammer(port: int, request: bytes, connections: int, seconds: float) -> tuple[int, int]:
    deadline = time.perf_counter() + seconds
    done, failed = 0, 0
    length = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")

    async def connection() -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(length.search(head).group(1)))
                if head[9:12] == b"200":
                    done += 1
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return done, failed


def requests_per_second(port: int, request: bytes, connections: int, seconds: float) -> float:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    done, failed = runner(_hammer(port, request, connections, seconds))
    if failed:
        raise RuntimeError(f"{failed} requests failed under load")
    return done / seconds


def http_request(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


# ---------------------------------------------------------------------------------------------
# The naive implementation of ratio 3: FastAPI + pydantic models of nested lists, default JSON


def create_naive_app():  # served by uvicorn --factory; imported in the server process only
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

    class LinearRequest(BaseModel):
        config: dict[str, Any]
        input: list[list[float]]
        parameters: dict[str, list[list[float]] | list[float]]

    class LinearResponse(BaseModel):
        output: list[list[float]]
        output_shape: list[int]

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/layers/conv2d", response_model=Conv2dResponse)
    def conv2d(request: Conv2dRequest) -> dict[str, Any]:
        c = request.config
        out = torch.nn.functional.conv2d(torch.tensor(request.input), torch.tensor(request.parameters["weight"]),
                                         torch.tensor(request.parameters["bias"]), stride=c.get("stride", 1))
        return {"output": out.tolist(), "output_shape": list(out.shape)}

    @app.post("/v1/layers/linear", response_model=LinearResponse)
    def linear(request: LinearRequest) -> dict[str, Any]:
        out = torch.nn.functional.linear(torch.tensor(request.input), torch.tensor(request.parameters["weight"]),
                                         torch.tensor(request.parameters["bias"]))
        return {"output": out.tolist(), "output_shape": list(out.shape)}

    return app


@contextlib.contextmanager
def naive_server(uvicorn_args: list[str]) -> Iterator[str]:
    with live_server("--factory", *uvicorn_args, app="tests.benchmarks.benchmark:create_naive_app",
                     env=process_environment.process_environment(), timeout=120) as url:
        yield url


# ---------------------------------------------------------------------------------------------
# The ratios


def sdk_call(client: Any, workload: Workload) -> Callable[[], Any]:
    """The workload through the SDK with its default transport: arrays in, arrays out."""
    method = getattr(client, workload.kind)
    return lambda: method(workload.x, **workload.config, parameters=workload.parameters)


_ECHO_SERVER = """
import socket, sys
up, down = int(sys.argv[1]), int(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
inbox, reply = bytearray(up), bytes(down)
while True:
    view, got = memoryview(inbox), 0
    while got < up:
        n = conn.recv_into(view[got:], min(up - got, 4 << 20))
        if n == 0:
            sys.exit(0)
        got += n
    conn.sendall(reply)
"""


def loopback_floor(up: int, down: int, repeats: int) -> float:
    """Milliseconds to send `up` bytes and receive `down` bytes over a loopback TCP connection to
    another process with plain blocking sockets: no HTTP, no encoding, no compute. What moving a
    request's bytes costs on this machine at the least."""
    import socket
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(up), str(down)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            payload, inbox = bytes(up), bytearray(down)

            def round_trip() -> None:
                conn.sendall(payload)
                view, got = memoryview(inbox), 0
                while got < down:
                    got += conn.recv_into(view[got:], min(down - got, 4 << 20))

            return median(interleaved({"floor": round_trip}, repeats)["floor"])
    finally:
        child.kill()
        child.wait()


def ratio_1_binary_vs_bare(url: str, workload: Workload, repeats: int, results: Results) -> None:
    import torch

    from app.client import Client

    x = torch.from_numpy(workload.x)
    params = {k: torch.from_numpy(v) for k, v in workload.parameters.items()}
    server_ms: list[float] = []
    with Client(base_url=url, timeout=120, max_retries=0) as client:
        call = sdk_call(client, workload)

        def end_to_end() -> None:
            # What an SDK user sees: encode, send, compute, receive, decode to an ndarray.
            result = call()
            assert result.output is not None and result.output.shape == result.output_shape
            server_ms.append(result.elapsed_ms)

        def bare() -> None:
            with torch.no_grad():
                workload.torch_call(x, **params)

        # The ratio: each call after a pause, alternating (a request reaching an idle server; the
        # issue's own figure for the conv, 12.5 ms, is such a call). Back to back, torch's threads
        # and caches stay warm and the bare conv takes about half as long: printed beside it.
        idle = interleaved({"bare": bare, "e2e": end_to_end}, repeats)
        warm = interleaved({"bare": bare}, repeats, pause=0) | interleaved({"e2e": end_to_end}, repeats, pause=0)
        transport = client.codec.content_type
    e2e, torch_ms = median(idle["e2e"]), median(idle["bare"])
    warm_e2e, warm_torch = median(warm["e2e"]), median(warm["bare"])
    down = output_nbytes(workload)
    floor = loopback_floor(workload.x.nbytes, down, max(3, repeats // 2))
    results.add(1, "SDK default transport e2e / bare torch", e2e / torch_ms,
                f"{workload.name}: SDK ({transport}) end to end {e2e:.1f} ms (server compute {median(server_ms):.1f} ms)"
                f" / bare torch {torch_ms:.1f} ms, each after a pause. Back to back: {warm_e2e:.1f} / {warm_torch:.1f} ms"
                f" = {warm_e2e / warm_torch:.2f}. The bytes alone, {workload.x.nbytes / 1e6:.0f} MB up and "
                f"{down / 1e6:.0f} MB down over loopback sockets (no HTTP): {floor:.1f} ms")


def in_process_json(workload: Workload, body: bytes) -> None:
    """What JSON itself costs: orjson decode, numpy conversion, the compute, orjson encode."""
    import torch

    value = orjson.loads(body)
    x = torch.from_numpy(np.array(value["input"], dtype=np.float32))
    params = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in value["parameters"].items()}
    with torch.no_grad():
        out = workload.torch_call(x, **params).numpy()
    orjson.dumps({"output": {"shape": list(out.shape), "dtype": "float32", "data": out},
                  "parameters": {k: v.numpy() for k, v in params.items()}}, option=orjson.OPT_SERIALIZE_NUMPY)


def ratio_2_and_3_json(url: str, workload: Workload, repeats: int, naive_url: str | None, results: Results,
                       naive_repeats: int = 3) -> None:
    body = json_lists_body(workload)
    client = httpx.Client(base_url=url, timeout=600)
    response_bytes: list[int] = []

    def post(base: str) -> Callable[[], None]:
        def call() -> None:
            response = client.post(f"{base}{workload.path}", content=body, headers={"content-type": "application/json"})
            response.raise_for_status()
            response_bytes.append(len(response.content))
        return call

    times = interleaved({"e2e": post(url), "in_process": lambda: in_process_json(workload, body)}, repeats)
    e2e, local = median(times["e2e"]), median(times["in_process"])
    results.add(2, "JSON lists e2e / in-process JSON + compute", e2e / local,
                f"JSON lists end to end {e2e:.0f} ms / in-process orjson+numpy+compute+orjson {local:.0f} ms; "
                f"{len(body) / 1e6:.0f} MB up, {median(response_bytes) / 1e6:.0f} MB down")
    if naive_url is None:
        return
    times = interleaved({"naive": post(naive_url), "ours": post(url)}, naive_repeats, warmup=0)
    naive, ours = median(times["naive"]), median(times["ours"])
    results.add(3, "naive FastAPI+pydantic / ours (JSON lists)", naive / ours,
                f"naive {naive:.0f} ms / ours {ours:.0f} ms ({naive_repeats} runs each)")
    client.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (/proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def ratio_4_small_requests(url: str, connections: int, seconds: float, rounds: int, results: Results) -> None:
    port = int(url.rsplit(":", 1)[1])
    pids = listening_pids(port)
    linear = http_request("POST", "/v1/layers/linear", orjson.dumps({
        "config": {"in_features": 4, "out_features": 1}, "input": NOTEBOOK_LINEAR_INPUT,
        "parameters": {"weight": [[-0.2009, -0.0747, -0.2266, 0.2618]], "bias": [-0.4708]}}))
    health = http_request("GET", "/healthz")
    requests_per_second(port, linear, connections, min(1.0, seconds))  # warm up both paths
    requests_per_second(port, health, connections, min(1.0, seconds))
    rates: dict[str, list[float]] = {"linear": [], "healthz": []}
    cpu_us: dict[str, list[float]] = {"linear": [], "healthz": []}
    for _ in range(rounds):
        for name, request in (("healthz", health), ("linear", linear)):
            cpu_before = cpu_seconds(pids) if pids else 0.0
            rate = requests_per_second(port, request, connections, seconds)
            rates[name].append(rate)
            if pids:  # the server's CPU time per request: where the difference comes from
                cpu_us[name].append((cpu_seconds(pids) - cpu_before) / (rate * seconds) * 1e6)
    lin, hz = median(rates["linear"]), median(rates["healthz"])
    cpu = (f"; server CPU per request: Linear {median(cpu_us['linear']):.0f} us, healthz {median(cpu_us['healthz']):.0f} us"
           if pids else "")
    results.add(4, "Linear 10x4 req/s / healthz req/s", lin / hz,
                f"{connections} keep-alive connections, {rounds} x {seconds:g} s each: Linear {lin:.0f}/s, "
                f"healthz {hz:.0f}/s{cpu}")


def ratio_5_memory(url: str, workload: Workload, repeats: int, results: Results) -> None:
    from app.client import Client

    port = int(url.rsplit(":", 1)[1])
    pids = listening_pids(port)
    if not pids:
        print("  ratio 5 skipped: cannot find the server's processes in /proc")
        return
    with Client(base_url=url, timeout=120, max_retries=0) as client:
        call = sdk_call(client, workload)
        payload_mb = (workload.x.nbytes + output_nbytes(workload)) / 2**20
        first = peak_added_mb(pids, call)
        later = [peak_added_mb(pids, call) for _ in range(max(2, repeats // 2))]
    results.add(5, "peak RSS added / (input + output bytes)", first / payload_mb,
                f"first request on a fresh server {first:.0f} MiB, later ones median {median(later):.0f} MiB; "
                f"input + output {payload_mb:.0f} MiB")


def output_nbytes(workload: Workload) -> int:
    import torch

    with torch.no_grad():
        return workload.torch_call(torch.from_numpy(workload.x[:1]),
                                   **{k: torch.from_numpy(v) for k, v in workload.parameters.items()}
                                   ).numpy().nbytes * workload.x.shape[0]


def ratio_6_reference(repeats: int, results: Results) -> None:
    """tests/benchmarks/reference_vs_torch.py's measurement (both backends' forward in this process,
    taking turns with pauses so neither pays for the other's spinning threads), on its notebook
    workloads plus the notebook's BatchNorm2d."""
    from tests.benchmarks import reference_vs_torch as rvt

    kinds = available_kinds()
    workloads = [*rvt.WORKLOADS,
                 rvt.Workload("BatchNorm2d(3)", "batchnorm2d", {"num_features": 3}, (2, 3, 2, 2), goal=float("inf")),
                 rvt.Workload("BatchNorm2d(3)", "batchnorm2d", {"num_features": 3}, rvt.NOTEBOOK_BATCH, goal=float("inf"))]
    rows = []
    for workload in workloads:
        label = f"{workload.name} on {workload.input_shape}"
        if workload.kind not in kinds:
            print(f"  ratio 6: {label} skipped: the {workload.kind} kind is not in this build")
            continue
        torch_ms, reference_ms, _ = rvt.run(workload, rounds=max(2, repeats // 4), calls=2)
        rows.append((label, reference_ms / torch_ms))
        print(f"  ratio 6: {label}: reference {reference_ms:.2f} ms / torch {torch_ms:.2f} ms = {reference_ms / torch_ms:.2f}")
    results.ratios[6] = ("reference / torch (in-process)", max((r[1] for r in rows), default=float("nan")),
                         "; ".join(f"{label}: {ratio:.2f}" for label, ratio in rows))


# ---------------------------------------------------------------------------------------------
# Transport codecs in-process (why msgpack): decode the request, encode the response


def codec_costs(workload: Workload, repeats: int) -> None:
    import torch

    with torch.no_grad():
        out = workload.torch_call(torch.from_numpy(workload.x),
                                  **{k: torch.from_numpy(v) for k, v in workload.parameters.items()}).numpy()
    x = workload.x
    header = orjson.dumps({"input": {"shape": list(x.shape), "dtype": "float32", "binary_data_size": x.nbytes}})
    oip_body = header + x.tobytes()
    rows = {
        "JSON lists (orjson + numpy)": (
            orjson.dumps({"input": x}, option=orjson.OPT_SERIALIZE_NUMPY),
            lambda b: np.array(orjson.loads(b)["input"], dtype=np.float32),
            lambda: orjson.dumps({"output": out}, option=orjson.OPT_SERIALIZE_NUMPY)),
        "JSON base64 (pybase64)": (
            orjson.dumps({"input": {"base64": pybase64.b64encode(x).decode()}}),
            lambda b: np.frombuffer(pybase64.b64decode(orjson.loads(b)["input"]["base64"], validate=True), np.float32),
            lambda: orjson.dumps({"output": {"base64": pybase64.b64encode(out).decode()}})),
        "msgpack, library packb/unpackb": (
            msgpack.packb({"input": {"bytes": x.tobytes()}}),
            lambda b: np.frombuffer(msgpack.unpackb(b)["input"]["bytes"], np.float32),
            lambda: msgpack.packb({"output": {"bytes": memoryview(out).cast("B")}})),
        "msgpack, app.codec.msgpack (bin written in place)": (
            wire.packb({"input": wire.tensor(x)}),
            lambda b: wire.array(wire.unpackb(b)["input"]),
            lambda: wire.pack({"output": wire.tensor(out)})),
        "OIP binary extension (JSON header + raw)": (
            oip_body,
            lambda b: np.frombuffer(memoryview(b)[len(header):], np.float32),
            lambda: [orjson.dumps({"output": {"binary_data_size": out.nbytes}}), memoryview(out).cast("B")]),
    }
    print(f"  {'transport':42s} {'decode request':>15s} {'encode response':>16s}   (ms, median of {repeats})")
    for name, (body, decode, encode) in rows.items():
        times = interleaved({"decode": lambda: decode(body), "encode": encode}, repeats, pause=0)
        print(f"  {name:42s} {median(times['decode']):15.1f} {median(times['encode']):16.1f}")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter load phases")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default 15, quick 5)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections for ratio 4")
    parser.add_argument("--seconds", type=float, help="length of each load phase of ratio 4 (default 3, quick 1)")
    parser.add_argument("--no-naive", action="store_true", help="skip ratio 3 (the naive server is slow)")
    parser.add_argument("--uvicorn-args", default="--http httptools --loop uvloop",
                        help="extra uvicorn options for both servers")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    rounds = 3 if args.quick else 5

    process_environment.reexec_with_process_environment()  # bare torch here runs with the server's allocator settings
    import torch

    print(f"layerlab benchmark: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"process environment (server and this process): {process_environment.process_environment()}")
    print(f"load average before: {load_average()}  (on a busy machine every figure is noisy)")
    results = Results()
    uvicorn_args = [*args.uvicorn_args.split(), "--app-dir", str(ROOT), "--log-level", "warning"]
    workload = big_workload()

    print("\n[codecs] in-process cost of each transport on the big workload's tensors")
    codec_costs(workload, max(3, repeats // 2))

    print("\n[server] " + " ".join(["uvicorn app.main:app", *uvicorn_args]))
    with live_server(*uvicorn_args, env=process_environment.process_environment()) as url:
        ratio_5_memory(url, workload, repeats, results)  # first: it wants a fresh server
        ratio_1_binary_vs_bare(url, workload, repeats, results)
        if args.no_naive:
            ratio_2_and_3_json(url, workload, max(3, repeats // 3), None, results)
        else:
            with naive_server(uvicorn_args) as naive_url:
                ratio_2_and_3_json(url, workload, max(3, repeats // 3), naive_url, results,
                                   naive_repeats=1 if args.quick else 3)
        ratio_4_small_requests(url, args.connections, seconds, rounds, results)
    print("\n[reference vs torch] in-process, tests/benchmarks/reference_vs_torch.py's method")
    ratio_6_reference(repeats, results)

    print(f"\nload average after: {load_average()}")
    print("\n| # | ratio | median | goal | details |\n| --- | --- | --- | --- | --- |")
    for number in sorted(results.ratios):
        what, value, details = results.ratios[number]
        goal = GOALS.get(number)
        print(f"| {number} | {what} | {value:.2f} | {goal[0] + ' ' + format(goal[1], 'g') if goal else '-'} | {details} |")


if __name__ == "__main__":
    main()
