"""Bounded load test: many concurrent clients on loopback, small Linear requests mixed with
notebook-sized Conv2d requests, for a fixed time; then a report.

    python tests/benchmarks/load.py                   # starts `python -m app.serve` itself, 32 clients, 30 s
    python tests/benchmarks/load.py --duration 10 --clients 32 --big-clients 4
    python tests/benchmarks/load.py --baseline 10     # first 10 s of small requests alone, to compare
    python tests/benchmarks/load.py --url http://127.0.0.1:8000   # a server already running

It only talks to 127.0.0.1 / localhost and stops by itself. It reports the counts by status,
the latency of the small requests while the big ones run (p50, p99), and exits non-zero if any
request failed other than with a deliberate 503 (the overload answer).
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

SMALL = {  # the notebook's first Linear cell: (10, 4) -> (10, 1)
    "config": {"in_features": 4, "out_features": 1},
    "input": [[0.3102, 0.1271, -0.0823, 1.0858], [-1.1686, 1.6650, 1.3797, -0.9915], [0.3897, 0.3723, 1.0115, 0.1784],
              [1.9373, -1.0086, 0.7447, 0.2432], [0.4305, 0.0627, 0.7668, -1.9446], [1.0522, -0.2573, 0.6940, 0.0913],
              [-0.0278, -0.0746, -0.0560, -1.1732], [-1.1034, 0.8108, -1.1170, -0.2516],
              [-1.1515, 1.2772, -1.6101, -0.8164], [-0.6352, 0.9345, 0.4916, 1.1171]],
}


def big_request(seed: int) -> dict:
    """The notebook's Conv2d(3, 16, 3, stride=2) on a random (100, 3, 120, 160) batch, summary only."""
    return {"config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2},
            "input": {"random": "normal", "shape": [100, 3, 120, 160], "seed": seed}, "encoding": "none"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The shipped run command (`python -m app.serve`: uvicorn with the LAYERLAB_* settings) on
    127.0.0.1 and a free port, for the length of the run; its output (access lines) is discarded."""

    def __init__(self, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LAYERLAB_HOST": "127.0.0.1", "LAYERLAB_PORT": str(self.port),
               "LAYERLAB_WORKERS": str(workers)}
        self.process = subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the server did not start")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)

    def peak_rss_mib(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Run:
    def __init__(self) -> None:
        self.records: list[tuple[str, int | str, float, int]] = []
        """(kind, status or exception name, seconds, big requests in flight when it started)."""
        self.big_in_flight = 0
        self.failures: list[str] = []


async def client_loop(client: httpx.AsyncClient, run: Run, kind: str, stop_at: float, number: int) -> None:
    sent = 0
    while time.monotonic() < stop_at:
        body = SMALL if kind == "small" else big_request(seed=number * 100_000 + sent)
        sent += 1
        concurrent_big = run.big_in_flight
        if kind == "big":
            run.big_in_flight += 1
        started = time.perf_counter()
        try:
            response = await client.post("/v1/layers/linear" if kind == "small" else "/v1/layers/conv2d", json=body)
            outcome: int | str = response.status_code
            if response.status_code == 503:  # deliberate: back off as told
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            elif response.status_code != 200:
                run.failures.append(f"{kind}: {response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
            run.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
        finally:
            if kind == "big":
                run.big_in_flight -= 1
        run.records.append((kind, outcome, time.perf_counter() - started, concurrent_big))


async def drive(url: str, clients: int, big_clients: int, duration: float, headers: dict[str, str]) -> Run:
    run = Run()
    stop_at = time.monotonic() + duration
    # keepalive_expiry under uvicorn's 5 s keep-alive timeout: never reuse a connection the server
    # may be closing at that very moment (a client-side race, not a server failure).
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120, headers=headers) as client:
        tasks = [asyncio.create_task(client_loop(client, run, "big" if i < big_clients else "small", stop_at, i))
                 for i in range(clients)]
        # Requests in flight at the end finish (bounded by the client timeout); nothing new starts.
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 150)
    return run


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.array(seconds) * 1000
    return {"count": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def report(run: Run, duration: float, big_enabled: bool) -> dict:
    counts = Counter(f"{kind} {outcome}" for kind, outcome, _, _ in run.records)
    errors = sum(n for key, n in counts.items() if not key.endswith((" 200", " 503")))
    ok = lambda kind: [s for k, o, s, _ in run.records if k == kind and o == 200]  # noqa: E731
    small_during_big = [s for k, o, s, big in run.records if k == "small" and o == 200 and big > 0]
    return {
        "duration_s": duration,
        "counts": dict(sorted(counts.items())),
        "errors": errors,
        "throughput_rps": {kind: round(len(ok(kind)) / duration, 1) for kind in ("small", "big")},
        "small": percentiles(ok("small")),
        "small_while_big_in_flight": percentiles(small_during_big) if big_enabled else {},
        "big": percentiles(ok("big")),
        "first_failures": run.failures[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (loopback only); default: start one")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--big-clients", type=int, default=4, help="of which send Conv2d requests (default 4)")
    parser.add_argument("--baseline", type=float, default=0.0,
                        help="first run small requests alone for this many seconds, to compare (default 0: skip)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("LAYERLAB_WORKERS", "1")),
                        help="server processes when starting the server (default: LAYERLAB_WORKERS or 1)")
    parser.add_argument("--api-key", default=os.environ.get("LAYERLAB_LOAD_API_KEY"), help="sent as X-API-Key")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if not 0 < args.duration <= 600 or not 0 <= args.baseline <= 600 or not 0 < args.clients <= 256 \
            or not 0 <= args.big_clients <= args.clients:
        parser.error("duration and baseline must be at most 600 s, clients in 1..256, big clients in 0..clients")

    server = None
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            parser.error("this load script only talks to loopback (127.0.0.1, localhost)")
        url = args.url.rstrip("/")
    else:
        server = Server(args.workers)
        url = server.url
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    try:
        kinds = {layer["kind"] for layer in httpx.get(f"{url}/v1/layers", headers=headers, timeout=10).json()}
        big_clients = args.big_clients
        if "conv2d" not in kinds:
            print("conv2d is not served here (not merged yet?): running small Linear requests only", file=sys.stderr)
            big_clients = 0
        print(f"load: {args.clients} clients ({big_clients} sending Conv2d on (100, 3, 120, 160)) for "
              f"{args.duration:g} s against {url}", file=sys.stderr)
        baseline = None
        if args.baseline:
            started = time.monotonic()
            alone = asyncio.run(drive(url, args.clients, 0, args.baseline, headers))
            baseline = report(alone, time.monotonic() - started, False)
        started = time.monotonic()
        run = asyncio.run(drive(url, args.clients, big_clients, args.duration, headers))
        result = report(run, time.monotonic() - started, big_clients > 0)
        result["clients"], result["big_clients"] = args.clients, big_clients
        if baseline is not None:
            result["small_alone"] = {**baseline["small"], "throughput_rps": baseline["throughput_rps"]["small"]}
            result["errors"] += baseline["errors"]
            result["first_failures"] = (baseline["first_failures"] + result["first_failures"])[:5]
        if server is not None:
            result["server_peak_rss_mib"] = server.peak_rss_mib() if args.workers == 1 else None
            result["server_workers"] = args.workers
    finally:
        if server is not None:
            server.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if result["errors"]:
        print(f"{result['errors']} requests failed (other than deliberate 503s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
