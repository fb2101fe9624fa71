"""Resident memory of one server process, idle and while serving the notebook's Conv2d: the figures
the Kubernetes requests and limits are sized from (.deploy/kubernetes/base/deployment.yaml).

    python tests/benchmarks/worker_memory.py            # starts `python -m app.serve` (one worker) itself

The notebook's Conv2d: input (100, 3, 120, 160), Conv2d(3, 16, 3, stride=2), output (100, 16, 59, 79).
It is sent three ways, from the lightest to the heaviest for the server: input drawn by the server
with base64 output; base64 input and output; nested-JSON input and output (the curl way). After each,
VmRSS (resident now) and VmHWM (the process's peak so far) are read from /proc. Loopback only.
"""

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.live_server import free_port, wait_healthy  # noqa: E402

SHAPE = [100, 3, 120, 160]
CONFIG = {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}


def memory_mib(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = round(int(rest.split()[0]) / 1024, 1)
    return values


def bodies() -> list[tuple[str, bytes]]:
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    drawn = {"config": CONFIG, "input": {"random": "normal", "shape": SHAPE, "seed": 0}, "encoding": "base64"}
    b64 = {"config": CONFIG, "encoding": "base64",
           "input": {"shape": SHAPE, "dtype": "float32", "base64": base64.b64encode(x.tobytes()).decode()}}
    nested = {"config": CONFIG, "input": x.tolist()}
    return [("drawn input, base64 output", orjson.dumps(drawn)), ("base64 in and out", orjson.dumps(b64)),
            ("nested JSON in and out", orjson.dumps(nested))]


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LAYERLAB_PORT": str(port), "LAYERLAB_HOST": "127.0.0.1", "LAYERLAB_WORKERS": "1",
           "LAYERLAB_ACCESS_LOG": "false"}
    server = subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, 120, server, path="/readyz")
        time.sleep(1)
        print(f"idle (after /readyz): {memory_mib(server.pid)}")
        with httpx.Client(timeout=300) as client:
            for name, body in bodies():
                started = time.perf_counter()
                response = client.post(f"{url}/v1/layers/conv2d", content=body,
                                       headers={"content-type": "application/json"})
                response.raise_for_status()
                seconds = time.perf_counter() - started
                print(f"{name} ({len(body) / 2**20:.1f} MiB body, {len(response.content) / 2**20:.1f} MiB "
                      f"response, {seconds:.2f} s): {memory_mib(server.pid)}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
