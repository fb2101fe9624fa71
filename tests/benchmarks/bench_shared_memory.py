"""Issue 19 goal 3: the notebook's Conv2d end to end through the SDK's shared-memory path
(`Client(shared_memory=True)`) against the bare torch conv in this process.

    python tests/benchmarks/bench_shared_memory.py            # 15 alternating pairs
    python tests/benchmarks/bench_shared_memory.py --quick    # 5

Starts the real server (uvicorn on 127.0.0.1 with the service's process environment, as
tests/benchmarks/benchmark.py does), and times, alternating with a pause before each call (as
benchmark.py's ratio 1): the SDK call (input copied into the client's region, a /v2 infer
request naming it, the server reading it in place and writing the output into the client's
output region, the result an array over that region) and `F.conv2d` on the same tensors here,
in a process with the server's allocator settings (app.process_environment). `run(quick)` returns
the ratio as a row for the issue's table; as a script it prints it. The details also give the same
call with its input made by `client.shared_array` (filled once; no copy on the client either),
timed in the same rounds.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app import process_environment  # noqa: E402
from tests.live_server import live_server  # noqa: E402

CONFIG = {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}
INPUT_SHAPE = (100, 3, 120, 160)
PAUSE_S = 0.2
"""Before each timed call: torch's threads spin a while after a call (benchmark.py's reason)."""
UVICORN_ARGS = ["--http", "httptools", "--loop", "uvloop", "--log-level", "warning"]


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _alternating(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    for fn in calls.values():  # warm up: regions created and registered, shapes cached, pages mapped
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            time.sleep(PAUSE_S)
            times[name].append(_timed(fn))
    return times


def run(quick: bool) -> list[dict[str, Any]]:
    import torch

    from app.client import Client

    repeats = 5 if quick else 15
    torch.manual_seed(0)
    module = torch.nn.Conv2d(**CONFIG)
    x = torch.rand(*INPUT_SHAPE)
    weight, bias = module.weight.detach(), module.bias.detach()
    parameters = {"weight": weight.numpy(), "bias": bias.numpy()}
    x_numpy = x.numpy()
    server_ms: list[float] = []
    server = live_server(*UVICORN_ARGS, env=process_environment.process_environment())
    with server as url, Client(url, shared_memory=True, timeout=120, max_retries=0) as client:

        def shared_memory() -> None:
            result = client.conv2d(x_numpy, **CONFIG, parameters=parameters)
            assert result.output is not None and result.output.shape == (100, 16, 59, 79)
            server_ms.append(result.elapsed_ms)

        prepared = client.shared_array(INPUT_SHAPE)
        prepared[...] = x_numpy
        prepared_ms: list[float] = []

        def shared_input() -> None:
            result = client.conv2d(prepared, **CONFIG, parameters=parameters)
            assert result.output is not None and result.output.shape == (100, 16, 59, 79)
            prepared_ms.append(result.elapsed_ms)

        def bare() -> None:
            with torch.no_grad():
                torch.nn.functional.conv2d(x, weight, bias, stride=2)

        expected = torch.nn.functional.conv2d(x, weight, bias, stride=2).numpy()
        got = client.conv2d(x_numpy, **CONFIG, parameters=parameters).output
        assert got is not None and np.array_equal(got, expected), "shared memory result differs from torch"
        del got
        times = _alternating({"bare": bare, "shm": shared_memory, "shared_input": shared_input}, repeats)
    e2e, conv = statistics.median(times["shm"]), statistics.median(times["bare"])
    prepared_e2e = statistics.median(times["shared_input"])
    details = (
        f"Conv2d(3,16,3,stride=2) on {INPUT_SHAPE} float32 (23 MB in, 30 MB out): SDK shared memory end to end "
        f"{e2e:.1f} ms (server compute {statistics.median(server_ms):.1f} ms) / bare F.conv2d {conv:.1f} ms "
        f"in this process (server's allocator settings), medians of {repeats} alternating pairs, each after "
        f"a {PAUSE_S} s pause; e2e min {min(times['shm']):.1f} ms, bare min {min(times['bare']):.1f} ms; "
        f"input made by client.shared_array (not copied): {prepared_e2e:.1f} ms, {prepared_e2e / conv:.2f}x"
    )
    return [
        {
            "goal": 3,
            "ratio": "SDK shared memory end to end / bare conv",
            "value": e2e / conv,
            "target": "<= 1.5",
            "details": details,
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 alternating pairs instead of 15")
    args = parser.parse_args()
    process_environment.reexec_with_process_environment()  # the bare conv with the server's allocator settings
    for row in run(args.quick):
        print(f"goal {row['goal']}: {row['ratio']} = {row['value']:.2f} (target {row['target']})\n  {row['details']}")


if __name__ == "__main__":
    main()
