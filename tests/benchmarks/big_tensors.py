"""Big tensors (issue 19, goals 2 and 5): the notebook's Conv2d through the SDK over TCP.

    python tests/benchmarks/big_tensors.py            # ~1 minute
    python tests/benchmarks/big_tensors.py --quick    # fewer repeats, ~30 s
    python tests/benchmarks/big_tensors.py --baseline DIR  # goal 2 with another checkout's SDK + server
                                                           # in the same turns (before/after in one run;
                                                           # DIR: e.g. `git archive <rev> | tar -x -C DIR`)

The workload is the notebook's cell: Conv2d(3, 16, 3, stride=2) on a (100, 3, 120, 160) float32
input, 23.0 MB up and 29.8 MB down. The server is the run command, `python -m app.serve` (one
worker, default settings), on 127.0.0.1 and a free port.

Goal 5 (first, on the fresh server): peak resident memory added by the first Conv2d request
  <= 2x its input + output bytes. The server's peak (VmHWM in /proc/PID/status) is reset to its
  resident size (writing 5 to /proc/PID/clear_refs) just before the request; added = VmHWM after
  the request - VmRSS before it. Later requests are printed too (the allocator keeps the buffers).

Goal 2: end to end <= 1.2x (loopback floor + bare conv), three things measured in turns (e2e,
  floor, bare, e2e, floor, bare, ...), each after a short pause, so that all three see the same
  machine load; the ratio is of the medians.
  - end to end: `Client(url).conv2d(x, ...)` with the SDK's default transport (msgpack over its own
    HTTP/1.1 transport): encode, send, compute, receive, decode to an ndarray.
  - loopback floor: the same bytes (23.0 MB up, then 29.8 MB down) between this process and
    another one over a loopback TCP connection with plain blocking sockets (sendall, recv_into a
    preallocated buffer): no HTTP, no encoding, no compute.
  - bare conv: `F.conv2d` on the same shapes in another process started with the server's process
    environment (app.process_environment: one malloc arena, the mmap and trim thresholds, OpenBLAS
    settings), in a worker thread as the server's compute pool runs it, timed inside that process;
    its page faults per call are printed (a process without those settings takes ~14,500 a call).

With --baseline DIR, goal 2 also calls another checkout's SDK and run command (a process of its own
started in DIR) and a bare conv with DIR's process environment, in the same turns; the details give
its end to end and its ratio against the floor and its own bare conv.

Each result is a dict {"goal", "ratio", "value", "target", "details"} (see benchmark.py, which
prints them all as one table).
"""

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app import process_environment  # noqa: E402
from tests.live_server import ServeProcess  # noqa: E402

SHAPE = (100, 3, 120, 160)
CONFIG = {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}
OUT_SHAPE = (100, 16, 59, 79)
PAUSE_S = 0.2
"""Before each timed call: torch's OpenMP threads spin a while after a call, and on a 2-core machine
the next call (the server's or the bare process's) would pay for them."""

_BARE_CONV = """
import resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import torch
import torch.nn.functional as F

torch.manual_seed(0)
x = torch.rand(100, 3, 120, 160)
weight, bias = torch.rand(16, 3, 3, 3), torch.rand(16)

def conv():
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    with torch.no_grad():
        out = F.conv2d(x, weight, bias, stride=2)
    elapsed = (time.perf_counter() - started) * 1000
    del out
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

pool = ThreadPoolExecutor(1)  # the server computes in a worker thread too (app.compute_pool)
print("ready", flush=True)
for line in sys.stdin:
    ms, faults = pool.submit(conv).result()
    print(f"{ms} {faults}", flush=True)
"""

_OTHER_STACK = """
import sys, time
tree = sys.argv[1]
sys.path.insert(0, tree)
import numpy as np
import app
assert app.__file__.startswith(tree), f"{app.__file__} is not the baseline's"
from app.client import Client
from tests.live_server import ServeProcess
rng = np.random.default_rng(0)  # notebook_tensors(), written out: the other tree may not have it
x = rng.random((100, 3, 120, 160), dtype=np.float32)
parameters = {"weight": rng.random((16, 3, 3, 3), dtype=np.float32), "bias": rng.random(16, dtype=np.float32)}
with ServeProcess(env={"LAYERLAB_LOG_LEVEL": "warning"}, timeout_s=120) as server, \\
        Client(base_url=server.url, timeout=120, max_retries=0) as client:
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        result = client.conv2d(x, in_channels=3, out_channels=16, kernel_size=3, stride=2, parameters=parameters)
        ms = (time.perf_counter() - started) * 1000
        assert result.output.shape == (100, 16, 59, 79)
        print(f"{ms} {result.elapsed_ms}", flush=True)
"""

_ENVIRONMENT_OF = """
import json, sys
sys.path.insert(0, sys.argv[1])
from app import process_environment
print(json.dumps(process_environment.process_environment()))
"""

_ECHO_SERVER = """
import socket, sys
up, down = int(sys.argv[1]), int(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
inbox, reply = bytearray(up), bytearray(down)
view = memoryview(inbox)
while True:
    got = 0
    while got < up:
        n = conn.recv_into(view[got:], up - got)
        if n == 0:
            sys.exit(0)
        got += n
    conn.sendall(reply)
"""


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


# ---------------------------------------------------------------------------------------------
# The three things measured


def _start_child(script: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """`python -c script args`, talking over stdin/stdout: it says "ready", then answers each "go"."""
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, **popen)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _go(child: subprocess.Popen[str]) -> list[str]:
    """One measured call in the child: the words of its answer line."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    return child.stdout.readline().split()


class BareConv:
    """F.conv2d in another process with the server's process environment; ms and page faults a call.
    `tree`: another checkout, whose app.process_environment gives the environment instead."""

    def __init__(self, tree: Path | None = None) -> None:
        if tree is None:
            variables = process_environment.process_environment()
        else:
            said = subprocess.run([sys.executable, "-c", _ENVIRONMENT_OF, str(tree)], capture_output=True, text=True,
                                  check=True)
            variables = json.loads(said.stdout)
        self.child = _start_child(_BARE_CONV, env={**os.environ, **variables})
        self.faults: list[int] = []

    def __call__(self) -> float:
        ms, faults = _go(self.child)
        self.faults.append(int(faults))
        return float(ms)

    def close(self) -> None:
        self.child.kill()
        self.child.wait()


class OtherStack:
    """Another checkout's SDK and run command, in a process of its own (started in `tree`): ms a call."""

    def __init__(self, tree: Path) -> None:
        self.child = _start_child(_OTHER_STACK, str(tree), cwd=tree)
        self.server_ms: list[float] = []

    def __call__(self) -> float:
        ms, server_ms = _go(self.child)
        self.server_ms.append(float(server_ms))
        return float(ms)

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()  # the driver leaves its loop and stops its server
        try:
            self.child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


class LoopbackFloor:
    """`up` bytes sent and `down` bytes received over loopback TCP, plain sockets, another process."""

    def __init__(self, up: int, down: int) -> None:
        self.child = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(up), str(down)],
                                      stdout=subprocess.PIPE, text=True)
        assert self.child.stdout is not None
        self.conn = socket.create_connection(("127.0.0.1", int(self.child.stdout.readline())))
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.payload = memoryview(bytearray(up))
        self.inbox = memoryview(bytearray(down))

    def __call__(self) -> float:
        started = time.perf_counter()
        self.conn.sendall(self.payload)
        got, down = 0, len(self.inbox)
        while got < down:
            got += self.conn.recv_into(self.inbox[got:], down - got)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.conn.close()
        self.child.kill()
        self.child.wait()


def notebook_tensors() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.random(SHAPE, dtype=np.float32)
    return x, {"weight": rng.random((16, 3, 3, 3), dtype=np.float32), "bias": rng.random(16, dtype=np.float32)}


@contextlib.contextmanager
def serve() -> Iterator[ServeProcess]:
    """The run command on a free port, one worker, default settings (warnings only in its log)."""
    with ServeProcess(env={"LAYERLAB_LOG_LEVEL": "warning"}, timeout_s=120) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# Goal 5: peak memory


def status_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status) if k in ("VmRSS", "VmHWM")}


def peak_added_kib(pid: int, request: Callable[[], Any]) -> int:
    """VmHWM after `request` minus VmRSS before it, the peak reset to the resident size first."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # Linux: resets VmHWM to the current VmRSS
    before = status_kib(pid)["VmRSS"]
    request()
    return status_kib(pid)["VmHWM"] - before


def goal_5(server: ServeProcess, call: Callable[[], Any], payload_bytes: int, later_calls: int) -> dict[str, Any]:
    first = peak_added_kib(server.pid, call)
    later = [peak_added_kib(server.pid, call) for _ in range(later_calls)]
    mib = 2**20 / 1024
    return {
        "goal": 5, "ratio": "peak RSS added by the Conv2d / (input + output bytes)",
        "value": first * 1024 / payload_bytes, "target": "<= 2",
        "details": f"first request on a fresh server: +{first / mib:.0f} MiB (VmHWM after - VmRSS before); "
                   f"later requests: +{median(later) / mib:.0f} MiB; input + output {payload_bytes / 2**20:.0f} MiB",
    }


# ---------------------------------------------------------------------------------------------
# Goal 2: end to end against floor + conv


def goal_2(
    call: Callable[[], Any], server_ms: list[float], up: int, down: int, repeats: int, baseline: Path | None = None
) -> dict[str, Any]:
    floor, bare = LoopbackFloor(up, down), BareConv()
    other = other_bare = None
    try:
        def e2e() -> float:
            started = time.perf_counter()
            call()
            return (time.perf_counter() - started) * 1000

        calls: dict[str, Callable[[], float]] = {"e2e": e2e, "floor": floor, "bare": bare}
        if baseline is not None:
            other, other_bare = OtherStack(baseline), BareConv(baseline)
            calls.update(baseline=other, baseline_bare=other_bare)
        for fn in calls.values():  # warm up: connections, threads, allocator
            fn()
            fn()
        server_ms.clear()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                time.sleep(PAUSE_S)
                times[name].append(fn())
        faults = median([float(f) for f in bare.faults[2:]])
    finally:
        for closing in (floor, bare, other, other_bare):
            if closing is not None:
                closing.close()
    e2e_ms, floor_ms, bare_ms = (median(times[name]) for name in ("e2e", "floor", "bare"))
    compared = ""
    if other is not None:
        base_ms, base_bare_ms = median(times["baseline"]), median(times["baseline_bare"])
        compared = (f"; baseline {baseline}: end to end {base_ms:.1f} ms ({spread(times['baseline'])}; server compute "
                    f"{median(other.server_ms[2:]):.1f} ms), its bare conv {base_bare_ms:.1f} ms, ratio "
                    f"{base_ms / (floor_ms + base_bare_ms):.2f}")
    return {
        "goal": 2, "ratio": "Conv2d end to end (SDK, TCP) / (loopback floor + bare conv)",
        "value": e2e_ms / (floor_ms + bare_ms), "target": "<= 1.2",
        "details": f"end to end {e2e_ms:.1f} ms ({spread(times['e2e'])}; server compute {median(server_ms):.1f} ms) / "
                   f"(floor {floor_ms:.1f} ms ({spread(times['floor'])}) + bare conv {bare_ms:.1f} ms "
                   f"({spread(times['bare'])}, {faults:.0f} page faults a call)); {up / 1e6:.1f} MB up, "
                   f"{down / 1e6:.1f} MB down; medians of {repeats}, in turns, each after a {PAUSE_S:g} s pause"
                   f"{compared}",
    }


def run(quick: bool, baseline: Path | None = None) -> list[dict[str, Any]]:
    """Goals 5 and 2, each as {"goal", "ratio", "value", "target", "details"}; `baseline`: see --baseline."""
    from app.client import Client

    x, parameters = notebook_tensors()
    down = int(np.prod(OUT_SHAPE)) * 4
    server_ms: list[float] = []
    with serve() as server, Client(base_url=server.url, timeout=120, max_retries=0) as client:
        def call() -> None:
            result = client.conv2d(x, **CONFIG, parameters=parameters)
            assert result.output is not None and result.output.shape == OUT_SHAPE
            server_ms.append(result.elapsed_ms)

        memory = goal_5(server, call, x.nbytes + down, later_calls=2 if quick else 4)
        transfer = goal_2(call, server_ms, x.nbytes, down, repeats=7 if quick else 15, baseline=baseline)
    return [transfer, memory]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--baseline", type=Path, help="goal 2: also another checkout's SDK and server, in the same turns")
    args = parser.parse_args()
    for result in run(args.quick, args.baseline.resolve() if args.baseline else None):
        print(f"goal {result['goal']}: {result['ratio']} = {result['value']:.2f} (target {result['target']})\n"
              f"    {result['details']}")


if __name__ == "__main__":
    main()
