"""The system shared-memory extension on /v2 against a real server, with Triton's own client
(`tritonclient.http` and `tritonclient.utils.shared_memory`): register, infer with inputs and
outputs in regions (equal to torch, both backends), status, unregister, every refusal as a 4xx in
the protocol's form, and no mapping left behind (the server's /proc/<pid>/maps)."""

import os
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.live_server import ServeProcess, ServerProcess

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2}


@pytest.fixture(scope="module")
def server():
    with ServerProcess("--log-level", "warning") as process:
        yield process


@pytest.fixture()
def client(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.unregister_system_shared_memory()
    client.close()


@pytest.fixture()
def region():
    """A fresh shared-memory object (tritonclient's own helper), destroyed afterwards: (handle, key)."""
    made = []

    def make(byte_size: int):
        key = f"/layerlab-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key.strip("/"), key, byte_size)
        made.append(handle)
        return handle, key

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def mapped_keys(pid: int) -> list[str]:
    return [line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/dev/shm/layerlab-test" in line]


def error_of(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_infer_through_regions_equals_torch_and_unregister_unmaps(client, server, region, backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 9)).astype(np.float32)
    torch.manual_seed(5)
    module = torch.nn.Conv2d(**CONFIG)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    (inputs, input_key), (outputs, output_key) = region(x.nbytes), region(expected.nbytes + 64)
    shm.set_shared_memory_region(inputs, [x])
    client.register_system_shared_memory("in", input_key, x.nbytes)
    client.register_system_shared_memory("out", output_key, expected.nbytes + 64)
    status = client.get_system_shared_memory_status()
    assert sorted(status, key=lambda r: r["name"]) == [
        {"name": "in", "key": input_key, "offset": 0, "byte_size": x.nbytes},
        {"name": "out", "key": output_key, "offset": 0, "byte_size": expected.nbytes + 64}]
    assert client.get_system_shared_memory_status("in") == [status[0] if status[0]["name"] == "in" else status[1]]
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]

    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_shared_memory("in", x.nbytes)
    output = triton.InferRequestedOutput("output")
    output.set_shared_memory("out", expected.nbytes, offset=64)
    result = client.infer("conv2d", [tensor], outputs=[output, triton.InferRequestedOutput("weight")],
                          parameters={"config": CONFIG, "seed": 5, "backend": backend})
    entry = result.get_output("output")
    assert entry["shape"] == list(expected.shape) and entry["datatype"] == "FP32" and "data" not in entry
    got = shm.get_contents_as_numpy(outputs, np.float32, expected.shape, offset=64)
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("weight"), module.weight.detach().numpy())
    del got

    assert sorted(mapped_keys(server.pid)) == sorted([f"/dev/shm{input_key}", f"/dev/shm{output_key}"])
    client.unregister_system_shared_memory("in")
    assert [r["name"] for r in client.get_system_shared_memory_status()] == ["out"]
    assert mapped_keys(server.pid) == [f"/dev/shm{output_key}"]
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == [] and mapped_keys(server.pid) == []


def test_region_at_an_offset_and_an_input_at_an_offset_in_it(client, region):
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    handle, key = region(4096)
    shm.set_shared_memory_region(handle, [x], offset=1024 + 8)
    client.register_system_shared_memory("both", key, 2048, offset=1024)
    tensor = triton.InferInput("input", list(x.shape), "FP64")
    tensor.set_shared_memory("both", x.nbytes, offset=8)
    output = triton.InferRequestedOutput("output")
    output.set_shared_memory("both", 2 * 3 * 2 * 8, offset=1024)
    config = {"kernel_size": 2}
    client.infer("maxpool1d", [tensor], outputs=[output], parameters={"config": config})
    got = shm.get_contents_as_numpy(handle, np.float64, (2, 3, 2), offset=2048)
    np.testing.assert_array_equal(got, torch.nn.functional.max_pool1d(torch.from_numpy(x), 2).numpy())


def _infer_one_output_in_regions(client, region, kind, x, expected, parameters):
    """`kind` on `x` from one region, its output asked in another (names from `kind`); what it wrote."""
    (inputs, input_key), (outputs, output_key) = region(x.nbytes), region(expected.nbytes)
    shm.set_shared_memory_region(inputs, [x])
    client.register_system_shared_memory(f"{kind}_in", input_key, x.nbytes)
    client.register_system_shared_memory(f"{kind}_out", output_key, expected.nbytes)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_shared_memory(f"{kind}_in", x.nbytes)
    output = triton.InferRequestedOutput("output")
    output.set_shared_memory(f"{kind}_out", expected.nbytes)
    result = client.infer(kind, [tensor], outputs=[output], parameters=parameters)
    assert "data" not in result.get_output("output")
    return shm.get_contents_as_numpy(outputs, np.float32, expected.shape)


def test_big_outputs_in_regions_equal_torch(client, region):
    """Outputs written into their region by the compute step (app.stacks.run.output_destination):
    a conv's copied there from torch's output (11 MB), a Linear's straight from its kernel; max-pool's
    output and indices side by side in one region."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10, 3, 120, 160)).astype(np.float32)
    config = {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1}
    torch.manual_seed(0)
    module = torch.nn.Conv2d(**config)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = _infer_one_output_in_regions(client, region, "conv2d", x, expected, {"config": config, "seed": 0})
    np.testing.assert_array_equal(got, expected)
    del got

    x = rng.standard_normal((4096, 300)).astype(np.float32)
    torch.manual_seed(0)
    linear = torch.nn.Linear(300, 200)
    with torch.no_grad():
        expected = linear(torch.from_numpy(x)).numpy()
    config = {"in_features": 300, "out_features": 200}
    got = _infer_one_output_in_regions(client, region, "linear", x, expected, {"config": config})
    np.testing.assert_array_equal(got, expected)
    del got

    x = rng.standard_normal((5, 16, 256, 256)).astype(np.float32)
    pooled, indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    (inputs, input_key), (outputs, output_key) = region(x.nbytes), region(pooled.numpy().nbytes * 3)
    shm.set_shared_memory_region(inputs, [x])
    client.register_system_shared_memory("pool_in", input_key, x.nbytes)
    client.register_system_shared_memory("pool_out", output_key, pooled.numpy().nbytes * 3)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_shared_memory("pool_in", x.nbytes)
    wanted = [triton.InferRequestedOutput("output"), triton.InferRequestedOutput("indices")]
    wanted[0].set_shared_memory("pool_out", pooled.numpy().nbytes)
    wanted[1].set_shared_memory("pool_out", indices.numpy().nbytes, offset=pooled.numpy().nbytes)
    client.infer("maxpool2d", [tensor], outputs=wanted, parameters={"config": {"kernel_size": 2, "return_indices": True}})
    got = shm.get_contents_as_numpy(outputs, np.float32, tuple(pooled.shape))
    got_indices = shm.get_contents_as_numpy(outputs, np.int64, tuple(indices.shape), offset=pooled.numpy().nbytes)
    np.testing.assert_array_equal(got, pooled.numpy())
    np.testing.assert_array_equal(got_indices, indices.numpy())
    del got, got_indices


def test_an_output_over_its_own_input_is_right(client, region):
    """In place: the output requested over the input's own bytes (ReLU, which writes straight into a
    destination it may). A kernel writing as it goes would overwrite elements not yet read (and torch
    refuses partial overlaps): the server computes such an output into an array of its own first."""
    x = np.random.default_rng(8).standard_normal((37, 61_000)).astype(np.float32)
    handle, key = region(x.nbytes + 64)
    shm.set_shared_memory_region(handle, [x], offset=64)
    client.register_system_shared_memory("both", key, x.nbytes + 64)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_shared_memory("both", x.nbytes, offset=64)
    output = triton.InferRequestedOutput("output")
    output.set_shared_memory("both", x.nbytes, offset=64)
    client.infer("relu", [tensor], outputs=[output], parameters={"config": {}})
    got = shm.get_contents_as_numpy(handle, np.float32, x.shape, offset=64)
    np.testing.assert_array_equal(got, np.maximum(x, 0))
    # Shifted by one row: each output row lies over the next input row.
    shm.set_shared_memory_region(handle, [x], offset=64)
    output = triton.InferRequestedOutput("output")
    output.set_shared_memory("both", x.nbytes - 61_000 * 4, offset=64 + 61_000 * 4)
    tensor = triton.InferInput("input", [36, 61_000], "FP32")
    tensor.set_shared_memory("both", x.nbytes - 61_000 * 4, offset=64)
    client.infer("relu", [tensor], outputs=[output], parameters={"config": {}})
    got = shm.get_contents_as_numpy(handle, np.float32, (36, 61_000), offset=64 + 61_000 * 4)
    np.testing.assert_array_equal(got, np.maximum(x[:36], 0))
    del got


def test_refusals_are_4xx_naming_the_field(client, server, region):
    handle, key = region(1024)
    # Register: a key that is no object, one outside /dev/shm, bounds past the object's end.
    status, message = error_of(lambda: client.register_system_shared_memory("r", "/layerlab-test-none", 16))
    assert status == "400" and "'key'" in message and "No such file" in message
    for bad in ("/../etc/passwd", "/dev/shm/x", "..", "/"):
        status, message = error_of(lambda: client.register_system_shared_memory("r", bad, 16))
        assert status == "400" and "key" in message, bad
    status, message = error_of(lambda: client.register_system_shared_memory("r", key, 1000, offset=100))
    assert status == "400" and "1100 bytes runs past the end" in message and "1024 bytes" in message
    # A name is registered once.
    client.register_system_shared_memory("r", key, 1024)
    status, message = error_of(lambda: client.register_system_shared_memory("r", key, 16))
    assert status == "409" and "'r' is registered already" in message
    assert httpx.post(f"{server.url}/v2/systemsharedmemory/region/q/register", json={"key": key}).json() == \
        {"error": "byte_size: Field required"}

    x = np.ones((2, 3, 4), dtype=np.float32)  # 96 bytes

    def infer(input_parameters: dict | None = None, output_parameters: dict | None = None):
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        if input_parameters is None:
            tensor.set_data_from_numpy(x)
        else:
            tensor.set_shared_memory(**input_parameters)
        outputs = [triton.InferRequestedOutput("output")]
        if output_parameters is not None:
            outputs[0].set_shared_memory(**output_parameters)
        return lambda: client.infer("maxpool1d", [tensor], outputs=outputs, parameters={"config": {"kernel_size": 2}})

    cases = [  # (input's parameters, output's parameters, what the message says)
        ({"region_name": "nope", "byte_size": 96}, None, "no system shared memory region 'nope'"),
        ({"region_name": "r", "byte_size": 95}, None, "shared_memory_byte_size 95; its tensor is 96 bytes"),
        ({"region_name": "r", "byte_size": 96, "offset": 1000}, None, "1096 bytes runs past the end of region 'r'"),
        (None, {"region_name": "r", "byte_size": 40}, "48 bytes; its shared_memory_byte_size is 40"),
        (None, {"region_name": "r", "byte_size": 48, "offset": 1000}, "runs past the end of region 'r'"),
        (None, {"region_name": "nope", "byte_size": 48}, "no system shared memory region 'nope'"),
    ]
    for input_parameters, output_parameters, says in cases:
        status, message = error_of(infer(input_parameters, output_parameters))
        assert status == "400" and says in message, (says, message)
    # Both data and a region for one input; a region without its byte size.
    body = {"parameters": {"config": {"kernel_size": 2}}, "inputs": [
        {"name": "input", "shape": [2, 3, 4], "datatype": "FP32", "data": [1.0] * 24,
         "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 96}}]}
    response = httpx.post(f"{server.url}/v2/models/maxpool1d/infer", json={**body, "parameters": {"config": {"kernel_size": 2}}})
    assert response.status_code == 400 and "send one" in response.json()["error"]
    del body["inputs"][0]["data"], body["inputs"][0]["parameters"]["shared_memory_byte_size"]
    response = httpx.post(f"{server.url}/v2/models/maxpool1d/infer", json=body)
    assert response.status_code == 400 and "no shared_memory_byte_size" in response.json()["error"]
    # Unknown regions in status; unregistering an unknown one is not an error (as Triton).
    status, message = error_of(lambda: client.get_system_shared_memory_status("nope"))
    assert status == "400" and "'nope'" in message
    client.unregister_system_shared_memory("nope")
    assert httpx.get(f"{server.url}/v2/systemsharedmemory/region/nope/status").json() == \
        {"error": "no system shared memory region 'nope' is registered (POST /v2/systemsharedmemory/region/{name}/register first)"}


def test_a_symlink_in_dev_shm_is_not_followed(client, tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 4096)
    link = Path("/dev/shm") / f"layerlab-test-{uuid.uuid4().hex[:12]}"
    link.symlink_to(target)
    try:
        status, message = error_of(lambda: client.register_system_shared_memory("s", f"/{link.name}", 16))
        assert status == "400" and "'key'" in message
    finally:
        link.unlink()


def test_server_stop_unmaps_every_region(region):
    """The app's lifespan shutdown unmaps what is still registered (the app in this process: the
    client's own mapping of the object is here too, one line of the maps)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    handle, key = region(4096)
    app = create_app()
    with TestClient(app) as http:
        assert http.post("/v2/systemsharedmemory/region/kept/register", json={"key": key, "byte_size": 4096}).status_code == 200
        assert mapped_keys(os.getpid()) == [f"/dev/shm{key}"] * 2
    assert mapped_keys(os.getpid()) == [f"/dev/shm{key}"] and list(app.state.shared_memory) == []


def test_two_workers_share_registrations(region):
    """Registered through one worker, usable through every one: the table is shared, each worker maps lazily."""
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    handle, key = region(4096)
    shm.set_shared_memory_region(handle, [x])
    with ServeProcess(env={"LAYERLAB_WORKERS": "2", "LAYERLAB_LOG_LEVEL": "warning"}) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        client.register_system_shared_memory("r", key, 4096)
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            fresh = triton.InferenceServerClient(server.url.removeprefix("http://"))
            tensor = triton.InferInput("input", [4, 6], "FP32")
            tensor.set_shared_memory("r", x.nbytes)
            output = triton.InferRequestedOutput("output")
            output.set_shared_memory("r", 4 * 2 * 4, offset=2048)
            fresh.infer("linear", [tensor], outputs=[output], parameters={"config": {"in_features": 6, "out_features": 2}})
            fresh.close()
        got = shm.get_contents_as_numpy(handle, np.float32, (4, 2), offset=2048)
        torch.manual_seed(0)
        torch.testing.assert_close(torch.from_numpy(got), torch.nn.Linear(6, 2)(torch.from_numpy(x)).detach())
        status, _ = error_of(lambda: client.register_system_shared_memory("r", key, 16))
        assert status == "409"
        client.unregister_system_shared_memory("r")
        tensor = triton.InferInput("input", [4, 6], "FP32")
        tensor.set_shared_memory("r", x.nbytes)
        for _ in range(6):  # whichever worker answers knows it is gone
            fresh = triton.InferenceServerClient(server.url.removeprefix("http://"))
            status, message = error_of(lambda: fresh.infer("linear", [tensor], parameters={"config": {"in_features": 6, "out_features": 2}}))
            assert status == "400" and "no system shared memory region 'r'" in message
            fresh.close()
        client.close()


@pytest.mark.parametrize("table", ["memory", "folder"])
def test_registry_names_and_keys_at_their_limits(tmp_path, region, table):
    """The registry itself, both tables: long or odd names are 4xx, never an OSError."""
    from app.errors import LayerlabError
    from app.shared_memory import SharedMemoryRegistry

    registry = SharedMemoryRegistry(tmp_path if table == "folder" else None)
    handle, key = region(4096)
    for name in ("é" * 51, "", "x" * 101):
        with pytest.raises(LayerlabError) as caught:
            registry.register(name, {"key": key, "byte_size": 16})
        assert caught.value.status_code == 400 and caught.value.field == "region_name"
    for name in ("é" * 300, "nope"):
        with pytest.raises(LayerlabError) as caught:
            registry.tensor_view({"shared_memory_region": name, "shared_memory_byte_size": 4}, "input 'input'")
        assert caught.value.status_code == 400 and "no system shared memory region" in caught.value.detail
        registry.unregister(name)
    registry.register("é" * 50, {"key": key, "byte_size": 4096})
    assert registry.status() == [{"name": "é" * 50, "key": key, "offset": 0, "byte_size": 4096}]
    view = registry.tensor_view({"shared_memory_region": "é" * 50, "shared_memory_byte_size": 8, "shared_memory_offset": 8}, "x")
    assert view.nbytes == 8
    del view
    registry.unregister()
    assert registry.status() == [] and list(registry) == []
