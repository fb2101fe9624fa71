"""The Open Inference Protocol's cost: the notebook's Conv2d through `tritonclient.http` with binary
data against the SDK's msgpack transport, end to end, same server, same run (issue 16).

    python tests/benchmarks/bench_v2.py             # 15 interleaved rounds
    python tests/benchmarks/bench_v2.py --repeats 5

Starts the real server (uvicorn on 127.0.0.1, a free port, the service's tuned process
environment). Each round calls both clients once, alternating, with the same input, weight and
bias: Conv2d(3, 16, 3, stride=2) on (100, 3, 120, 160) float32, 23 MB up and 30 MB down. Both
return NumPy arrays of the output (tritonclient: `as_numpy`; the SDK: `result.output`). The goal
is tritonclient / SDK <= 1.3. On a shared or busy machine every figure is noisy: the load average
is printed before and after.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app import process_environment  # noqa: E402
from tests.live_server import live_server  # noqa: E402

GOAL = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--uvicorn-args", default="--http httptools --loop uvloop")
    args = parser.parse_args()
    process_environment.reexec_with_process_environment()

    import torch
    import tritonclient.http as triton

    from app.client import Client

    torch.manual_seed(0)
    module = torch.nn.Conv2d(3, 16, 3, stride=2)
    x = torch.rand(100, 3, 120, 160).numpy()
    weight, bias = module.weight.detach().numpy(), module.bias.detach().numpy()
    config = {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}
    print(f"load average before: {os.getloadavg()}  ({os.cpu_count()} CPUs; on a busy machine figures are noisy)")
    uvicorn_args = [*args.uvicorn_args.split(), "--log-level", "warning"]
    with live_server(*uvicorn_args, env=process_environment.process_environment()) as url, \
            Client(base_url=url, timeout=120, max_retries=0) as sdk, \
            triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120) as tc:

        def via_triton() -> np.ndarray:
            inputs = []
            for name, array in (("input", x), ("weight", weight), ("bias", bias)):
                tensor = triton.InferInput(name, list(array.shape), "FP32")
                tensor.set_data_from_numpy(array, binary_data=True)
                inputs.append(tensor)
            result = tc.infer("conv2d", inputs, outputs=[triton.InferRequestedOutput("output", binary_data=True)],
                              parameters={"config": config})
            return result.as_numpy("output")

        def via_sdk() -> np.ndarray:
            return sdk.conv2d(x, **config, parameters={"weight": weight, "bias": bias}).output

        first, second = via_triton(), via_sdk()
        np.testing.assert_array_equal(first, second)  # the same computation either way
        times: dict[str, list[float]] = {"tritonclient (binary)": [], "SDK (msgpack)": []}
        for round_number in range(args.repeats):
            calls = [("tritonclient (binary)", via_triton), ("SDK (msgpack)", via_sdk)]
            for name, call in calls if round_number % 2 == 0 else calls[::-1]:
                started = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - started) * 1000)
        client_side = tritonclient_client_cost(triton, x, weight, bias, config, first, args.repeats)
    print(f"load average after: {os.getloadavg()}")
    medians = {name: float(np.median(values)) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name:24s} median {medians[name]:7.1f} ms  (min {min(values):.1f}, max {max(values):.1f}, "
              f"{len(values)} calls)")
    ratio = medians["tritonclient (binary)"] / medians["SDK (msgpack)"]
    print(f"  tritonclient's own work, in this process with no network: build the request {client_side[0]:.1f} ms, "
          f"read a response body {client_side[1]:.1f} ms (it copies each tensor; its HTTP client reads 4 KB at a time)")
    print(f"ratio tritonclient / SDK: {ratio:.2f} (goal <= {GOAL}): {'met' if ratio <= GOAL else 'NOT met'}")


def tritonclient_client_cost(triton, x, weight, bias, config, output, repeats: int) -> tuple[float, float]:
    """Median ms of tritonclient's request building (set_data_from_numpy, the JSON header, joining
    the body) and of its response reading (`InferResult` over a body in memory, then `as_numpy`)."""
    from tritonclient.http._utils import _get_inference_request

    def build() -> None:
        inputs = []
        for name, array in (("input", x), ("weight", weight), ("bias", bias)):
            tensor = triton.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        _get_inference_request(inputs, "", [triton.InferRequestedOutput("output")], 0, False, False, 0, None,
                               {"config": config})

    header = (b'{"model_name":"conv2d","model_version":"1","outputs":[{"name":"output","datatype":"FP32","shape":'
              + str(list(output.shape)).replace(" ", "").encode() + b',"parameters":{"binary_data_size":'
              + str(output.nbytes).encode() + b"}}]}")
    body = header + output.tobytes()

    def read() -> None:
        triton.InferResult.from_response_body(body, header_length=len(header)).as_numpy("output")

    def median_ms(call) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return float(np.median(times))

    return median_ms(build), median_ms(read)


if __name__ == "__main__":
    main()
