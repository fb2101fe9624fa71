"""A real server process against every max-pool request whose window reads only padding.

torch 2.13 accepts such a window (a dilation stepping over the whole input) and its backward then
writes out of bounds, which can abort the process. The service refuses the config from its shape
arithmetic before anything is computed (app/layers/pool.py): every such request, on every backend,
single layer or in a stack, with or without gradients (torch's backward is where it would crash),
is a 422 naming the window, and the server stays up.
"""

import itertools
from collections.abc import Iterator

import httpx
import pytest

from app.shapes import Window
from tests.live_server import ServerProcess

BODY_VARIANTS = [  # what else a request may ask for: the refusal comes first in every case
    {"backend": "torch", "config": {"return_indices": True}},
    {"backend": "reference", "config": {}},
    {"backend": "torch", "compare": True, "config": {}},
    {"backend": "reference", "compare": True, "config": {"return_indices": True}},
    {"backend": "torch", "gradients": True, "config": {}},
    {"backend": "torch", "gradients": True, "compare": True, "config": {"return_indices": True}},
    {"backend": "reference", "loss": {"function": "sum"}, "config": {}},
    {"backend": "torch", "loss": {"function": "sum", "reduction": "sum"}, "compare": True, "config": {}},
]


def padding_only_configs() -> list[dict]:
    """Per dimension (kernel, stride, padding, dilation, size, ceil_mode) from a small search: the
    1-D configs with a window of only padding."""
    found = []
    for k, s, d, size, ceil_mode in itertools.product(range(1, 6), range(1, 4), range(1, 6), range(1, 7), (False, True)):
        for p in range(k // 2 + 1):
            win = Window((k,), (s,), ((p, p),), (d,), ceil_mode)
            if win.output_sizes((size,))[0] >= 1 and win.padding_only_windows((size,)):
                found.append({"kernel": k, "stride": s, "padding": p, "dilation": d, "size": size, "ceil_mode": ceil_mode})
    return found


def requests() -> Iterator[tuple[str, dict]]:
    """(path, body): each bad config in 1-D, 2-D and 3-D (the bad dimension in turn, the others a
    plain kernel 2 over 3 elements), with every body variant in turn, and in a stack after a ReLU."""
    for number, (bad, dims) in enumerate(itertools.product(padding_only_configs(), (1, 2, 3))):
        where = number % dims
        per_dim = [bad if dim == where else {"kernel": 2, "stride": 1, "padding": 1, "dilation": 1, "size": 3}
                   for dim in range(dims)]
        config = {name: [case[name] for case in per_dim] for name in ("kernel", "stride", "padding", "dilation")}
        config = {"kernel_size": config["kernel"], "stride": config["stride"], "padding": config["padding"],
                  "dilation": config["dilation"], "ceil_mode": bad["ceil_mode"]}
        tensor = {"random": "normal", "shape": [1, 2, *[case["size"] for case in per_dim]], "seed": number}
        variant = BODY_VARIANTS[number % len(BODY_VARIANTS)]
        extra = {k: v for k, v in variant.items() if k != "config"}
        yield f"/v1/layers/maxpool{dims}d", {"config": config | variant["config"], "input": tensor, **extra}
        if number % 3 == 0:
            layers = [{"kind": "relu"}, {"kind": f"maxpool{dims}d", "config": config}]
            yield "/v1/sequential", {"layers": layers, "input": tensor, **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("--log-level", "warning") as process:
        yield process


def test_every_padding_only_window_is_a_422_and_the_server_stays_up(server):
    sent = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, body in requests():
            response = client.post(path, json=body)
            sent += 1
            assert response.status_code == 422, (path, body, response.text)
            error = response.json()
            assert error["error"] == "ShapeMismatch" and "reads only padding: positions" in error["detail"], error
            assert server.process.poll() is None, f"the server died after {path} {body}"
        assert sent == 132  # 33 configs in 1-D, 2-D and 3-D, and a third of those 99 in a stack too
        assert client.get("/healthz").status_code == 200
        # and it still computes: one more input element and the window reads it
        fine = client.post("/v1/layers/maxpool1d", json={"config": {"kernel_size": 2, "stride": 1, "padding": 1, "dilation": 3},
                                                          "input": [[[1.0, -2.0, 3.0]]], "compare": True})
        assert fine.status_code == 200, fine.text
        assert fine.json()["output"]["data"] == [[[3.0, 1.0]]], fine.json()["output"]
    assert server.process.poll() is None
