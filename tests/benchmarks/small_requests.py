"""Small requests under load (issue 19, goals 1 and 4), measured with `wrk`, a C load generator.

    python tests/benchmarks/small_requests.py            # full run, ~3 minutes
    python tests/benchmarks/small_requests.py --quick    # shorter blocks, ~1 minute

The request is the notebook's Linear cell: POST /v1/layers/linear, a JSON body with the config
(in_features 4, out_features 1), the 10x4 input and the layer's weight and bias, sent by wrk over
16 keep-alive connections (a Lua script sets the method, body and Content-Type).

Goal 1: server CPU per Linear request <= 3x a raw ASGI app's on the same body.
  Two servers run side by side, both pinned to CPU 0 with taskset, each one process:
  `python -m app.serve` (default settings: access lines, metrics, request ids, tracing headers),
  and `raw_app` below, served by the same uvicorn with the same options (`app.serve.uvicorn_options`:
  the same HTTP protocol class, loop, logging config) in a process prepared the same way
  (`app.serve.prepare_environment`). The raw app reads the whole body and answers a fixed JSON
  object: the floor any ASGI app on this server pays. wrk, pinned to CPU 1, loads one server at a
  time, in alternating blocks (app, raw, app, raw, ...), so both see the same machine load. Server
  CPU per request = the server process's utime + stime delta over a block (/proc/PID/stat) divided
  by the requests wrk completed in it; the ratio is of the two medians. Requests/s are printed too.
  A third server in the same blocks, `torch_floor_app`, is the floor under the features: the raw
  app plus orjson, three arrays and `F.linear` (no validation, limits, metrics, ids, access line).

Goal 4: two workers on two cores >= 1.8x the small-request throughput of one worker.
  Two servers again, `python -m app.serve` with LAYERLAB_WORKERS=1 and with LAYERLAB_WORKERS=2, no
  pinning: every process (workers and wrk, now with 2 threads) may run on both cores, as a
  deployment on a 2-core machine would. Alternating blocks, median requests/s of each; the ratio is
  2 workers / 1 worker. Note that wrk shares the two cores with the workers here: with 1 worker
  the server has a whole core and wrk takes part of the other; with 2 workers, wrk's CPU comes out
  of the workers' cores, so a perfect 2x is out of reach by wrk's share (printed: its CPU per
  request, as a fraction of the server's). Server CPU per request (all workers) is printed for
  both, to tell contention (it rises with 2 workers) from a lack of CPU, and the bound wrk's share
  leaves, 2 s / (s + w) for server CPU s and wrk CPU w per request: the cheaper a request is to
  serve, the lower that bound (goal 1 and goal 4 pull apart on a machine that also runs wrk).

On a shared machine the figures are noisy; the load average is printed before and after.
wrk must be installed (`apt-get install -y wrk`); the script tries that itself when run as root,
else says so and exits non-zero.
"""

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402

from tests.benchmarks.benchmark import NOTEBOOK_LINEAR_INPUT  # noqa: E402
from tests.live_server import free_port, wait_healthy  # noqa: E402

PATH = "/v1/layers/linear"
CONNECTIONS = 16
LINEAR_BODY = orjson.dumps(
    {
        "config": {"in_features": 4, "out_features": 1},
        "input": NOTEBOOK_LINEAR_INPUT,
        "parameters": {"weight": [[-0.2009, -0.0747, -0.2266, 0.2618]], "bias": [-0.4708]},
    }
)
RAW_ANSWER = b'{"ok":true}'


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: reads the whole body, answers a fixed JSON object. No routing, no middleware."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    body = []
    while more:
        message = await receive()
        body.append(message.get("body", b""))
        more = message.get("more_body", False)
    b"".join(body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(RAW_ANSWER)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": RAW_ANSWER})


async def torch_floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least any app computing this request with torch does: the raw app, plus orjson's parse,
    three float32 arrays, `F.linear` and orjson's dump of the output. No validation, limits, metrics,
    request ids, access line, parameters in the answer: the floor under every feature layerlab keeps."""
    if scope["type"] == "lifespan" or scope["method"] != "POST":  # startup, and the health check's GET
        await raw_app(scope, receive, send)
        return
    import numpy as np
    import torch
    import torch.nn.functional as F

    more, body = True, []
    while more:
        message = await receive()
        body.append(message.get("body", b""))
        more = message.get("more_body", False)
    request = orjson.loads(b"".join(body))
    tensors = [request["input"], request["parameters"]["weight"], request["parameters"]["bias"]]
    x, weight, bias = (torch.from_numpy(np.array(t, dtype=np.float32)) for t in tensors)
    output = F.linear(x, weight, bias).numpy()
    answer = orjson.dumps({"output": output.tolist(), "output_shape": list(output.shape)})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def serve_raw(app: str = "raw_app") -> None:
    """`raw_app` (or `torch_floor_app`) under uvicorn with app.serve's options, in a process prepared
    as app.serve prepares its own (torch imported before the first request in both)."""
    import torch  # noqa: F401
    import uvicorn

    from app.config import Settings
    from app.serve import prepare_environment, uvicorn_options

    settings = Settings()
    prepare_environment(settings)
    uvicorn.run(f"tests.benchmarks.small_requests:{app}", **uvicorn_options(settings))


# ---------------------------------------------------------------------------------------------
# wrk


def ensure_wrk() -> str:
    """The wrk executable; installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("  wrk is not installed: apt-get install -y wrk")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "wrk (a C HTTP load generator) is not installed and could not be installed: apt-get install -y wrk"
    )


def lua_script(folder: Path) -> Path:
    """wrk's request: POST of the Linear body as JSON (wrk sends it on every request)."""
    body = LINEAR_BODY.decode()
    script = folder / "linear.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def run_wrk(
    wrk: str, url: str, script: Path, seconds: float, threads: int = 1, cpu: int | None = None
) -> dict[str, float]:
    """Requests completed, requests/s and wrk's own CPU seconds for one block."""
    command = [wrk, f"-t{threads}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "-s", str(script), url]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    before = os.times()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = os.times()
    out = done.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if done.returncode != 0 or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    requests = int(total.group(1))
    wrk_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"requests": requests, "rate": rate, "wrk_cpu": wrk_cpu}


# ---------------------------------------------------------------------------------------------
# Servers and their CPU time

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat(int(entry))[1]) == pid:
                    found.append(int(entry))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes so far."""
    total = 0.0
    for pid in pids:
        fields = _stat(pid)
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


class Server:
    """A server process on 127.0.0.1 (a free port); `pids` are the processes that serve (the
    workers, with several; the process itself with one)."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], cpu: int | None, workers: int = 1, cwd: Path = ROOT
    ) -> None:
        self.name, self.workers, self.cwd = name, workers, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.command = command
        self.env = {
            **os.environ,
            **env,
            "LAYERLAB_HOST": "127.0.0.1",
            "LAYERLAB_PORT": str(self.port),
            "LAYERLAB_WORKERS": str(workers),
        }
        handle, log = tempfile.mkstemp(prefix=f"small-requests-{name}-", suffix=".log")
        os.close(handle)
        self.log = Path(log)
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def __enter__(self) -> "Server":
        # Access lines go to stdout: to /dev/null here (a container's log pipe costs about the same
        # write syscall per line); errors and startup lines to the log file.
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        wait_healthy(self.url, 90, self.process, self.log, path="/" if self.name in ("raw", "floor") else "/healthz")
        deadline = time.monotonic() + 30
        while True:
            kids = children(self.process.pid)
            self.pids = kids if self.workers > 1 else [self.process.pid]
            if self.workers == 1 or len(kids) >= self.workers or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)

    def check(self) -> None:
        """The server answers the Linear request (a raw app answers anything)."""
        response = httpx.post(f"{self.url}{PATH}", content=LINEAR_BODY, headers={"content-type": "application/json"})
        response.raise_for_status()


def app_server(name: str, cpu: int | None, workers: int = 1, tree: Path = ROOT) -> Server:
    """`python -m app.serve` of the app in `tree` (this checkout, or another one to compare with)."""
    return Server(name, [sys.executable, "-m", "app.serve"], {"PYTHONDONTWRITEBYTECODE": "1"}, cpu, workers, tree)


def raw_server(cpu: int | None, app: str = "raw_app") -> Server:
    command = [sys.executable, "-c", f"from tests.benchmarks.small_requests import serve_raw; serve_raw({app!r})"]
    return Server("raw" if app == "raw_app" else "floor", command, {}, cpu)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def alternate(
    servers: list[Server], wrk: str, script: Path, rounds: int, seconds: float, threads: int, cpu: int | None
) -> dict[str, dict[str, list[float]]]:
    """Blocks of load on each server in turn: requests/s, server CPU us/request, wrk CPU us/request."""
    for server in servers:  # warm up: first requests import and compile lazily
        server.check()
        run_wrk(wrk, f"{server.url}{PATH}", script, 1, threads, cpu)
    measured: dict[str, dict[str, list[float]]] = {s.name: {"rate": [], "cpu_us": [], "wrk_us": []} for s in servers}
    for _ in range(rounds):
        for server in servers:
            before = cpu_seconds(server.pids)
            block = run_wrk(wrk, f"{server.url}{PATH}", script, seconds, threads, cpu)
            used = cpu_seconds(server.pids) - before
            measured[server.name]["rate"].append(block["rate"])
            measured[server.name]["cpu_us"].append(used / block["requests"] * 1e6)
            measured[server.name]["wrk_us"].append(block["wrk_cpu"] / block["requests"] * 1e6)
    return measured


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def goal_1(wrk: str, script: Path, quick: bool, baseline: Path | None = None) -> dict[str, Any]:
    """`baseline`: another checkout's app, measured in the same alternating blocks (before and after)."""
    rounds, seconds = (3, 3.0) if quick else (7, 5.0)
    with contextlib.ExitStack() as stack:
        # The two apps start first, one after the other: a server started after the others measured
        # 8-15% slower than the same tree started first (tests/benchmarks/NOTES.md).
        first = stack.enter_context(app_server("baseline", cpu=0, tree=baseline)) if baseline is not None else None
        servers = [
            stack.enter_context(app_server("app", cpu=0)),
            stack.enter_context(raw_server(cpu=0)),
            stack.enter_context(raw_server(cpu=0, app="torch_floor_app")),
        ]
        if first is not None:
            servers.append(first)
        m = alternate(servers, wrk, script, rounds, seconds, threads=1, cpu=1)
    app_us, raw_us, floor_us = (_median(m[name]["cpu_us"]) for name in ("app", "raw", "floor"))
    details = (
        f"server CPU per request: layerlab {app_us:.0f} us ({_spread(m['app']['cpu_us'])}), raw ASGI "
        f"{raw_us:.0f} us ({_spread(m['raw']['cpu_us'])}), torch floor {floor_us:.0f} us "
        f"({_spread(m['floor']['cpu_us'])}; {floor_us / raw_us:.2f}x raw, layerlab {app_us / floor_us:.2f}x it); "
        f"req/s: layerlab {_median(m['app']['rate']):.0f}, raw {_median(m['raw']['rate']):.0f}, torch floor "
        f"{_median(m['floor']['rate']):.0f}; {rounds} alternating blocks x {seconds:g} s, {CONNECTIONS} connections, "
        f"server on CPU 0, wrk on CPU 1"
    )
    if baseline is not None:
        base_us = _median(m["baseline"]["cpu_us"])
        details += (
            f"; baseline {baseline}: {base_us:.0f} us ({_spread(m['baseline']['cpu_us'])}), "
            f"{_median(m['baseline']['rate']):.0f} req/s, ratio {base_us / raw_us:.2f}"
        )
    return {
        "goal": 1,
        "ratio": "server CPU per Linear request / raw ASGI app's",
        "value": app_us / raw_us,
        "target": "<= 3",
        "details": details,
    }


def goal_4(wrk: str, script: Path, quick: bool) -> dict[str, Any]:
    rounds, seconds = (3, 3.0) if quick else (7, 5.0)
    with app_server("one", cpu=None, workers=1) as one, app_server("two", cpu=None, workers=2) as two:
        m = alternate([one, two], wrk, script, rounds, seconds, threads=2, cpu=None)
    r1, r2 = _median(m["one"]["rate"]), _median(m["two"]["rate"])
    one_us, two_us, wrk_us = _median(m["one"]["cpu_us"]), _median(m["two"]["cpu_us"]), _median(m["two"]["wrk_us"])
    # 1 worker has one core; 2 workers and wrk share both: at best 2 / (server + wrk CPU) requests per
    # second against 1 / server CPU, so wrk's share alone caps the ratio at 2 s / (s + w).
    bound = 2 * one_us / (one_us + wrk_us)
    details = (
        f"req/s: 1 worker {r1:.0f} ({_spread(m['one']['rate'])}), 2 workers {r2:.0f} ({_spread(m['two']['rate'])}); "
        f"server CPU per request: 1 worker {one_us:.0f} us, 2 workers {two_us:.0f} us; wrk CPU per request "
        f"{wrk_us:.0f} us, so at most {bound:.2f}x on these 2 cores (measured {r2 / r1 / bound:.0%} of that); "
        f"capacity of 2 cores given to the workers alone, 2 x {one_us:.0f} / {two_us:.0f} us: "
        f"{2 * one_us / two_us:.2f}x; "
        f"{rounds} alternating blocks x {seconds:g} s, {CONNECTIONS} connections, nothing pinned"
    )
    return {
        "goal": 4,
        "ratio": "req/s with 2 workers / with 1 worker",
        "value": r2 / r1,
        "target": ">= 1.8",
        "details": details,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """Goals 1 and 4, each as {"goal", "ratio", "value", "target", "details"}."""
    wrk = ensure_wrk()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("this benchmark needs 2 CPUs (server on one, wrk on the other)")
    with tempfile.TemporaryDirectory(prefix="small-requests-") as folder:
        script = lua_script(Path(folder))
        return [goal_1(wrk, script, quick), goal_4(wrk, script, quick)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter and fewer blocks")
    parser.add_argument("--goal", type=int, choices=(1, 4), help="run one goal only")
    parser.add_argument("--baseline", type=Path, help="goal 1: also measure the app of this checkout (before/after)")
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    if args.goal:
        wrk = ensure_wrk()
        with tempfile.TemporaryDirectory(prefix="small-requests-") as folder:
            script = lua_script(Path(folder))
            results = [
                goal_1(wrk, script, args.quick, args.baseline) if args.goal == 1 else goal_4(wrk, script, args.quick)
            ]
    else:
        results = run(args.quick)
    for result in results:
        op, target = result["target"].split()
        ok = result["value"] <= float(target) if op == "<=" else result["value"] >= float(target)
        print(
            f"goal {result['goal']}: {result['ratio']} = {result['value']:.2f} (target {result['target']}: "
            f"{'met' if ok else 'NOT met'})\n  {result['details']}"
        )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
