"""/v2 infer on an empty batch (N = 0) for every layer kind, both backends, against torch.nn on the same
empty input: in V2 JSON and in the binary extension by hand (in-process), and with Triton's own
client against a real server."""

import json

import numpy as np
import pytest
import torch
import tritonclient.http as triton

from tests.api.routes.test_layers_empty_batch import CASES, IDS
from tests.stacking import TORCH_MODULES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}


def torch_outputs(kind: str, config: dict, shape, state: dict, training: bool) -> dict[str, torch.Tensor]:
    """What the model's outputs must be: torch.nn's output (and indices), its state after the pass."""
    module = TORCH_MODULES[kind](**config)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=False)
    module.train(training)
    with torch.no_grad():
        out = module(torch.empty(shape))
    outputs = dict(zip(("output", "indices"), out)) if isinstance(out, tuple) else {"output": out}
    return {**outputs, **module.state_dict()}


def binary_outputs(response) -> dict[str, np.ndarray]:
    """The outputs of a binary-extension response: the JSON header's metadata, then each output's bytes."""
    length = int(response.headers["inference-header-content-length"])
    header, offset, arrays = json.loads(response.content[:length]), length, {}
    for entry in header["outputs"]:
        size = entry["parameters"]["binary_data_size"]
        dtype = np.dtype(NUMPY[entry["datatype"]]).newbyteorder("<")
        arrays[entry["name"]] = np.frombuffer(response.content[offset : offset + size], dtype).reshape(entry["shape"])
        offset += size
    assert offset == len(response.content)
    return arrays


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("kind, config, shape", CASES, ids=IDS)
def test_every_kind_on_an_empty_batch_equals_torch(client, kind, config, shape, backend):
    parameters = {"config": config, "backend": backend, "compare": True, "seed": 2}
    as_json = client.post(f"/v2/models/{kind}/infer", json={
        "parameters": parameters, "inputs": [{"name": "input", "shape": list(shape), "datatype": "FP32", "data": []}]})
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert body["parameters"]["compare_allclose"] is True
    got = {o["name"]: np.array(o["data"], dtype=NUMPY[o["datatype"]]).reshape(o["shape"]) for o in body["outputs"]
           if not o["name"].startswith("statistics.")}
    state = {name: value for name, value in got.items() if name not in ("output", "indices")}
    expected = torch_outputs(kind, config, shape, state, training=False)
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].shape == tuple(tensor.shape), name
        np.testing.assert_array_equal(got[name], tensor.numpy(), err_msg=name)
    assert got["output"].size == 0

    header = json.dumps({"parameters": {**parameters, "binary_data_output": True}, "inputs": [
        {"name": "input", "shape": list(shape), "datatype": "FP32", "parameters": {"binary_data_size": 0}}]}).encode()
    as_binary = client.post(f"/v2/models/{kind}/infer", content=header,
                            headers={"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"})
    assert as_binary.status_code == 200, as_binary.text
    arrays = binary_outputs(as_binary)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(arrays[name], tensor.numpy(), err_msg=name)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_counts_an_empty_batch_in_training(client, training):
    state = {"running_mean": [0.5, -1.0], "running_var": [2.0, 0.25], "num_batches_tracked": 4}
    inputs = [{"name": "input", "shape": [0, 2, 3, 3], "datatype": "FP32", "data": []},
              {"name": "running_mean", "shape": [2], "datatype": "FP32", "data": state["running_mean"]},
              {"name": "running_var", "shape": [2], "datatype": "FP32", "data": state["running_var"]},
              {"name": "num_batches_tracked", "shape": [], "datatype": "INT64", "data": [4]}]
    response = client.post("/v2/models/batchnorm2d/infer", json={
        "parameters": {"config": {"num_features": 2}, "training": training, "compare": True}, "inputs": inputs})
    assert response.status_code == 200, response.text
    got = {o["name"]: o["data"] for o in response.json()["outputs"]}
    expected = torch_outputs("batchnorm2d", {"num_features": 2}, (0, 2, 3, 3), state, training)
    assert got["num_batches_tracked"] == [int(expected["num_batches_tracked"])] == [5 if training else 4]
    assert got["running_mean"] == state["running_mean"] and got["running_var"] == state["running_var"]


def test_a_zero_size_torch_refuses_is_the_protocols_400(client):
    """Pooling needs every dimension but N: torch refuses (0, 2, 0); V2 answers its error body."""
    response = client.post("/v2/models/maxpool1d/infer", json={
        "parameters": {"config": {"kernel_size": 1}},
        "inputs": [{"name": "input", "shape": [0, 2, 0], "datatype": "FP32", "data": []}]})
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert "zero length" in response.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_sends_and_reads_an_empty_batch(live_server, binary):
    client = triton.InferenceServerClient(live_server.removeprefix("http://"), network_timeout=120)
    try:
        x = np.empty((0, 2, 5), np.float32)
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("output", "weight")]
        config = {"in_channels": 2, "out_channels": 3, "kernel_size": 3}
        result = client.infer("conv1d", [tensor], outputs=outputs, parameters={"config": config, "seed": 1})
    finally:
        client.close()
    torch.manual_seed(1)
    module = torch.nn.Conv1d(**config)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    assert result.as_numpy("output").shape == tuple(expected.shape) == (0, 3, 3)
    np.testing.assert_array_equal(result.as_numpy("weight"), module.weight.detach().numpy())
