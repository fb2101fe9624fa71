"""Replicas behind nginx on loopback, as docker-compose runs them: `python -m app.serve` processes
and nginx with .deploy/nginx.conf (its upstream pointed at them), for the replica-death test
(tests/test_replicas.py) and its measurement (tests/benchmarks/replica_kill.py).

The load is bounded (a few clients, a fixed number of requests or seconds) and loopback only.
"""

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from app.client import Client
from tests.live_server import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / ".deploy" / "nginx.conf"

# The notebook's first cell: Linear(4, 1) on a 10x4 batch, compared with the reference backend.
LINEAR_BODY = {"config": {"in_features": 4, "out_features": 1},
               "input": np.random.default_rng(0).standard_normal((10, 4)).round(4).tolist(),
               "parameters": {"weight": [[-0.2009, -0.0747, -0.2266, 0.2618]], "bias": [-0.4708]}, "compare": True}


def local_nginx_conf(conf: str, listen: int, upstreams: list[int], folder: Path) -> str:
    """The compose file's nginx.conf with what only Docker provides replaced by loopback:
    `server api:8000 resolve ...` becomes one server line per replica; files go to `folder`."""
    match = re.search(r"^(\s*)server api:\d+ resolve (.*);$", conf, flags=re.M)
    assert match, "nginx.conf has no `server api:PORT resolve ...` upstream line"
    indent, options = match.groups()
    servers = "\n".join(f"{indent}server 127.0.0.1:{port} {options};" for port in upstreams)
    conf = conf[:match.start()] + servers + conf[match.end():]
    conf = re.sub(r"^\s*resolver .*;$", "", conf, flags=re.M)  # Docker's DNS
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    conf = conf.replace("pid /tmp/nginx.pid;", f"pid {folder}/nginx.pid;")
    conf = conf.replace("/tmp/client_body", f"{folder}/client_body").replace("/tmp/proxy", f"{folder}/proxy")
    conf = conf.replace("access_log /dev/stdout json;", f"access_log {folder}/access.log json;")
    conf = conf.replace("error_log /dev/stderr warn;", f"error_log {folder}/error.log warn;")
    if os.geteuid() == 0:  # nginx's workers would otherwise run as nobody, locked out of `folder`
        conf = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" + conf
    return conf


@contextmanager
def replica(folder: Path, name: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """One `python -m app.serve` (one worker, access lines off) on a free loopback port."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
           "LAYERLAB_HOST": "127.0.0.1", "LAYERLAB_PORT": str(port), "LAYERLAB_WORKERS": "1",
           "LAYERLAB_ACCESS_LOG": "false", "LAYERLAB_TORCH_THREADS": "1"}
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 180, process, log, path="/readyz")
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def nginx(folder: Path, upstreams: list[int]) -> Iterator[str]:
    binary = shutil.which("nginx")
    assert binary, "nginx is not installed"
    listen = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(local_nginx_conf(NGINX_CONF.read_text(), listen, upstreams, folder))
    process = subprocess.Popen([binary, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{listen}"
    try:
        wait_healthy(url, 30, process, folder / "error.log", path="/lb-health")
        yield url
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Outcome:
    """Every request of a load run: (start, seconds, status or error), and when the kill happened."""

    results: list[tuple[float, float, str]] = field(default_factory=list)
    killed_at: float | None = None

    def errors(self) -> list[tuple[float, float, str]]:
        return [result for result in self.results if result[2] != "200"]

    def latencies_ms(self, start: float = -np.inf, end: float = np.inf) -> np.ndarray:
        return np.array([seconds * 1000 for began, seconds, status in self.results
                         if status == "200" and start <= began < end])

    def summary(self, window_s: float = 2.0) -> dict[str, object]:
        def stats(values: np.ndarray) -> dict[str, float]:
            if values.size == 0:
                return {"n": 0}
            return {"n": int(values.size), "p50_ms": round(float(np.percentile(values, 50)), 2),
                    "p99_ms": round(float(np.percentile(values, 99)), 2), "max_ms": round(float(values.max()), 2)}

        killed = self.killed_at if self.killed_at is not None else np.inf
        return {"requests": len(self.results), "errors": len(self.errors()),
                "before_kill": stats(self.latencies_ms(end=killed)),
                f"kill_window_{window_s:g}s": stats(self.latencies_ms(killed, killed + window_s)),
                "after_window": stats(self.latencies_ms(killed + window_s)),
                "all": stats(self.latencies_ms())}


def expected_linear_output() -> np.ndarray:
    x = np.array(LINEAR_BODY["input"], dtype=np.float32)
    weight = np.array(LINEAR_BODY["parameters"]["weight"], dtype=np.float32)
    return x @ weight.T + np.array(LINEAR_BODY["parameters"]["bias"], dtype=np.float32)


def nginx_statuses(folder: Path) -> list[int]:
    """The status of every request in nginx's access log (JSON lines, .deploy/nginx.conf's format)."""
    path = folder / "access.log"
    return [json.loads(line)["status"] for line in path.read_text().splitlines()] if path.exists() else []


def load_and_kill(url: str, victim: subprocess.Popen, *, clients: int, duration_s: float,
                  kill_after_s: float, sdk: bool) -> Outcome:
    """`clients` threads, each with its own keep-alive connections, POST the notebook's Linear back
    to back for `duration_s`; `victim` is SIGKILLed `kill_after_s` in. `sdk`: through the
    project's Client (app.client, which retries connection errors), else plain httpx, no retries.
    A response counts as 200 only when its output is right."""
    outcome = Outcome()
    expected = expected_linear_output()
    x = np.array(LINEAR_BODY["input"], dtype=np.float32)
    lock = threading.Lock()
    start = time.monotonic()
    stop = start + duration_s

    def one_raw(session: httpx.Client) -> str:
        response = session.post(f"{url}/v1/layers/linear", json=LINEAR_BODY)
        if response.status_code != 200:
            return str(response.status_code)
        return "200" if np.allclose(response.json()["output"]["data"], expected, atol=1e-5) else "wrong body"

    def one_sdk(session: Client) -> str:
        result = session.linear(x, in_features=4, out_features=1, parameters=LINEAR_BODY["parameters"], compare=True)
        return "200" if np.allclose(result.output, expected, atol=1e-5) else "wrong body"

    def client() -> None:
        session = Client(base_url=url, timeout=30, initial_retry_delay=0.05) if sdk else httpx.Client(timeout=30)
        with session:
            while time.monotonic() < stop:
                began = time.monotonic()
                try:
                    status = one_sdk(session) if sdk else one_raw(session)  # type: ignore[arg-type]
                except Exception as exc:  # any failure is the client's error, counted
                    status = type(exc).__name__
                with lock:
                    outcome.results.append((began - start, time.monotonic() - began, status))

    with ExitStack() as stack:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        stack.callback(lambda: [thread.join() for thread in threads])
        time.sleep(kill_after_s)
        victim.send_signal(signal.SIGKILL)
        outcome.killed_at = time.monotonic() - start
    return outcome
