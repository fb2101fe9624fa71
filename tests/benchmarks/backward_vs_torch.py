"""Reference backward vs torch.autograd's backward on the notebook's workloads, timed in one run.

    python tests/benchmarks/backward_vs_torch.py [--rounds 3] [--calls 3] [--torch-threads N] [--check]

For each workload the forward runs once; then torch's backward (`torch.autograd.grad` of the
output with a random upstream gradient, on the retained graph: dX and every parameter's gradient,
what `loss.backward()` computes for this layer) and the reference backward (the NumPy formulas in
app/backends/reference, given the forward's input, parameters, max-pool indices or batch
statistics) take turns in blocks of a few calls, with a pause before each block, as in
reference_vs_torch.py (whose process settings this script shares: it re-executes itself with the
service's environment, one OpenBLAS thread). Prints the median of each, the ratio reference /
torch against the goal (issue 15: conv within 4x, pools and batch-norm within 3x) and the largest
difference between the two gradients relative to the largest gradient. With --check, exits 1 when a
goal is missed. Not collected by pytest (no test_ prefix): speed claims come from here.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from anywhere

from app import process_environment  # no NumPy or torch: safe before they load

process_environment.reexec_with_process_environment()

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.backends.reference.batchnorm import batch_norm, batch_norm_backward  # noqa: E402
from app.backends.reference.conv import conv_backward  # noqa: E402
from app.backends.reference.pool import avg_pool_backward, max_pool, max_pool_backward  # noqa: E402
from app.layers import conv as conv_layer  # noqa: E402
from app.layers import pool as pool_layer  # noqa: E402
from app.layers.registry import LAYERS  # noqa: E402

NOTEBOOK_BATCH = (100, 3, 120, 160)


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    config: dict[str, Any]
    goal: float
    """Reference time / torch time should stay under this."""


WORKLOADS = [
    Workload("Conv2d(3, 16, 3, stride=2)", "conv2d", {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, 4.0),
    Workload("MaxPool2d((3, 2))", "maxpool2d", {"kernel_size": [3, 2]}, 3.0),
    Workload("AvgPool2d((3, 2))", "avgpool2d", {"kernel_size": [3, 2]}, 3.0),
    Workload("BatchNorm2d(3), training", "batchnorm2d", {"num_features": 3}, 3.0),
]

Backward = Callable[[], list[np.ndarray]]


def prepare(workload: Workload) -> tuple[Backward, Backward]:
    """(torch's backward, the reference backward) for the workload, each returning its gradients
    in the same order: input first, then the parameters by state_dict name."""
    spec = LAYERS[workload.kind]
    config = spec.config_model.model_validate(workload.config)
    torch.manual_seed(0)
    module = getattr(torch.nn, spec.torch_name)(**workload.config)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(NOTEBOOK_BATCH, generator=gen, requires_grad=True)  # the notebook's torch.rand batch
    y = module(x)
    upstream = torch.randn(y.shape, generator=gen)
    wrt = [x, *module.parameters()]

    def torch_backward() -> list[np.ndarray]:
        return [g.numpy() for g in torch.autograd.grad(y, wrt, upstream, retain_graph=True)]

    x_np, dy = x.detach().numpy(), upstream.numpy()
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    if workload.kind == "conv2d":
        win = conv_layer.window(config)

        def reference_backward() -> list[np.ndarray]:
            dx, dw, db = conv_backward(x_np, state["weight"], dy, win.stride, win.padding, win.dilation, config.groups,
                                       config.padding_mode, config.bias)
            return [dx, dw, db]
    elif workload.kind == "maxpool2d":
        win = pool_layer.window(config)
        padding = [left for left, _ in win.padding]
        _, indices = max_pool(x_np, win.kernel, win.stride, padding, win.dilation, config.ceil_mode, return_indices=True)

        def reference_backward() -> list[np.ndarray]:
            return [max_pool_backward(dy, indices, x_np.shape, win.kernel, win.stride, win.dilation)]
    elif workload.kind == "avgpool2d":
        win = pool_layer.window(config)
        padding = [left for left, _ in win.padding]

        def reference_backward() -> list[np.ndarray]:
            return [avg_pool_backward(dy, x_np.shape, win.kernel, win.stride, padding,
                                      config.count_include_pad, config.divisor_override)]
    else:
        _, mean, var, _ = batch_norm(x_np, state["weight"], state["bias"], state["running_mean"], state["running_var"],
                                     state["num_batches_tracked"], training=True, momentum=config.momentum, eps=config.eps)

        def reference_backward() -> list[np.ndarray]:
            return list(batch_norm_backward(dy, x_np, state["weight"], mean, var, batch_statistics=True, eps=config.eps))
    return torch_backward, reference_backward


PAUSE_S = 0.5
"""Before each block: long enough for OpenBLAS's idle threads (the longest spinners) to sleep."""


def run(workload: Workload, rounds: int, calls: int) -> tuple[float, float, float]:
    """(torch ms, reference ms, max |difference| / max |gradient|): medians over `rounds` blocks of `calls` calls."""
    sides = dict(zip(("torch", "reference"), prepare(workload), strict=True))
    grads = {name: backward() for name, backward in sides.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, backward in sides.items():
            time.sleep(PAUSE_S)
            for _ in range(calls):
                started = time.perf_counter()
                backward()
                times[name].append(time.perf_counter() - started)
    difference = max(float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(a).max(), 1e-30))
                     for a, b in zip(grads["torch"], grads["reference"], strict=True))
    return statistics.median(times["torch"]) * 1000, statistics.median(times["reference"]) * 1000, difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="blocks per side, taking turns")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per block")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '')!r}, "
          f"backward on {NOTEBOOK_BATCH}, medians of {args.rounds} x {args.calls} calls")
    print(f"{'workload':<28} {'torch ms':>9} {'ref ms':>9} {'ratio':>6} {'goal':>5}  max|diff|/max|grad|")
    missed = []
    for workload in WORKLOADS:
        torch_ms, reference_ms, difference = run(workload, args.rounds, args.calls)
        ratio = reference_ms / torch_ms
        verdict = "ok" if ratio <= workload.goal else "MISSED"
        if verdict != "ok":
            missed.append(workload.name)
        print(f"{workload.name:<28} {torch_ms:9.1f} {reference_ms:9.1f} {ratio:6.2f} {workload.goal:5.1f}  "
              f"{difference:.1e}  {verdict}", flush=True)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
