"""Reference vs torch on BatchNorm2d(3) over (100, 3, 120, 160) in training mode (not a test).

    python tests/benchmarks/bench_batchnorm.py [--repeats 31] [--threads N]

Times the plain computations (nn.BatchNorm2d's forward under no_grad; the NumPy `batch_norm`) and
the two backends as the service calls them (module build and state load, copies, statistics).
Runs are interleaved, so a change in machine load hits both sides alike; medians are reported.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.backends.reference.batchnorm import batch_norm  # noqa: E402
from app.backends.reference_backend import ReferenceBackend  # noqa: E402
from app.backends.torch_backend import TorchBackend  # noqa: E402
from app.layers.batchnorm import BatchNormConfig  # noqa: E402
from app.layers.registry import LAYERS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x = torch.randn(100, 3, 120, 160, generator=torch.Generator().manual_seed(0))
    module = torch.nn.BatchNorm2d(3)
    state = {k: v.numpy().copy() for k, v in module.state_dict().items()}
    x_np = x.numpy()
    spec, config = LAYERS["batchnorm2d"], BatchNormConfig(num_features=3)

    def torch_forward():
        with torch.no_grad():
            module(x)

    def reference_forward():
        batch_norm(x_np, state["weight"], state["bias"], state["running_mean"], state["running_var"],
                   state["num_batches_tracked"], training=True, momentum=0.1, eps=1e-5)

    cases = {
        "torch nn.BatchNorm2d": torch_forward,
        "reference batch_norm": reference_forward,
        "torch backend": lambda: TorchBackend().forward(spec, config, x_np, state, True),
        "reference backend": lambda: ReferenceBackend().forward(spec, config, x_np, state, True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"BatchNorm2d(3), x (100, 3, 120, 160) float32, training; torch threads {torch.get_num_threads()}; "
          f"medians of {args.repeats}")
    for name, ms in medians.items():
        print(f"  {name:22s} {ms:8.2f} ms")
    print(f"  reference / torch: {medians['reference batch_norm'] / medians['torch nn.BatchNorm2d']:.2f}x (computation), "
          f"{medians['reference backend'] / medians['torch backend']:.2f}x (backends)")


if __name__ == "__main__":
    main()
