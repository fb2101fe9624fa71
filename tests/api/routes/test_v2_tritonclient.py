"""/v2 against a real server with Triton's own client (`tritonclient.http`): health, metadata, and
inference for every layer kind in JSON and in binary mode, equal to /v1 and to torch."""

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from app.codec.tensors import probable_shape
from app.layers.registry import LAYERS
from tests.stacking import TORCH_MODULES
from tests.wire import decode

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATATYPE = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64"}


@pytest.fixture(scope="module")
def triton_client(live_server):
    client = triton.InferenceServerClient(live_server.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def infer_input(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), DATATYPE[array.dtype])
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def example(kind: str) -> tuple[dict, np.ndarray]:
    """The kind's first documented config, and a seeded random input of its example's shape (at
    most 2 in its batch dimension: the notebook's (100, 3, 120, 160) as JSON is slow to no purpose)."""
    value = next(iter(LAYERS[kind].examples.values()))["value"]
    shape = probable_shape(value["input"], "input")
    shape = (min(shape[0], 2), *shape[1:])
    return value["config"], np.random.default_rng(len(kind)).standard_normal(shape).astype(np.float32)


def test_health_and_server_metadata(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    metadata = triton_client.get_server_metadata()
    assert metadata["name"] == "layerlab" and "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_readiness_and_index(triton_client):
    index = triton_client.get_model_repository_index()
    assert sorted(entry["name"] for entry in index) == sorted(LAYERS)
    assert {entry["state"] for entry in index} == {"READY"}
    for kind in LAYERS:
        assert triton_client.is_model_ready(kind)
        assert triton_client.is_model_ready(kind, model_version="1")
    metadata = triton_client.get_model_metadata("conv2d")
    assert metadata["name"] == "conv2d" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, -1, -1, -1]},
                                  {"name": "weight", "datatype": "FP32", "shape": [-1, -1, -1, -1]},
                                  {"name": "bias", "datatype": "FP32", "shape": [-1]}]
    assert triton_client.get_model_metadata("batchnorm2d", model_version="1")["inputs"][-1] == \
        {"name": "num_batches_tracked", "datatype": "INT64", "shape": []}
    assert [t["name"] for t in triton_client.get_model_metadata("maxpool2d")["outputs"]] == ["output", "indices"]
    assert not triton_client.is_model_ready("conv4d")
    with pytest.raises(InferenceServerException) as caught:
        triton_client.get_model_metadata("conv4d")
    assert caught.value.status() == "404" and "unknown model 'conv4d'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        triton_client.get_model_metadata("conv2d", model_version="2")
    assert caught.value.status() == "404" and "only version is '1'" in caught.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_kind_equals_v1_and_torch(triton_client, live_server, kind, binary):
    config, x = example(kind)
    v1 = httpx.post(f"{live_server}/v1/layers/{kind}", timeout=120,
                    json={"config": config, "input": {"data": x.ravel().tolist(), "shape": list(x.shape)}, "seed": 3}).json()
    # Without `outputs` tritonclient asks for every output as binary data; JSON mode names them.
    names = ["output", *v1["parameters"], *v1.get("buffers", {})]
    outputs = None if binary else [triton.InferRequestedOutput(name, binary_data=False) for name in names]
    result = triton_client.infer(kind, [infer_input("input", x, binary)], outputs=outputs,
                                 parameters={"config": config, "seed": 3}, request_id=f"{kind}-1")
    response = result.get_response()
    assert response["model_name"] == kind and response["id"] == f"{kind}-1"
    assert all(("data" in o) != binary for o in response["outputs"])
    np.testing.assert_array_equal(result.as_numpy("output"), decode(v1["output"]))
    for name, tensor in v1["parameters"].items():
        np.testing.assert_array_equal(result.as_numpy(name), decode(tensor))
    for name, tensor in v1.get("buffers", {}).items():
        np.testing.assert_array_equal(result.as_numpy(name), decode(tensor))

    torch.manual_seed(3)
    module = TORCH_MODULES[kind](**config)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    if isinstance(expected, tuple):  # max-pool with return_indices
        expected, indices = expected
        if binary:
            np.testing.assert_array_equal(result.as_numpy("indices"), indices.numpy())
    torch.testing.assert_close(torch.from_numpy(result.as_numpy("output")), expected)
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(np.array(result.as_numpy(name))), tensor)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_weights_given_in_float64(triton_client, binary):
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((5, 3, 9)), rng.standard_normal((4, 3, 2)), rng.standard_normal(4)
    outputs = [triton.InferRequestedOutput("output", binary_data=binary)]
    result = triton_client.infer("conv1d", [infer_input("input", x, binary), infer_input("weight", weight, binary),
                                            infer_input("bias", bias, not binary)],
                                 outputs=outputs, parameters={"config": {"in_channels": 3, "out_channels": 4,
                                                                         "kernel_size": 2, "dilation": 2}})
    assert [o["name"] for o in result.get_response()["outputs"]] == ["output"]
    output = result.as_numpy("output")
    assert output.dtype == np.float64
    expected = torch.nn.functional.conv1d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                                          dilation=2)
    torch.testing.assert_close(torch.from_numpy(output), expected)


def test_maxpool_indices(triton_client):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6)).astype(np.float32)
    config = {"kernel_size": 3, "stride": 2, "padding": 1, "return_indices": True, "ceil_mode": True}
    outputs = [triton.InferRequestedOutput("indices"), triton.InferRequestedOutput("output", binary_data=False)]
    result = triton_client.infer("maxpool2d", [infer_input("input", x, True)], outputs=outputs,
                                 parameters={"config": config, "backend": "reference", "compare": True})
    expected, indices = torch.nn.MaxPool2d(**config)(torch.from_numpy(x))
    assert result.as_numpy("indices").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("indices"), indices.numpy())
    np.testing.assert_array_equal(result.as_numpy("output"), expected.numpy())
    parameters = result.get_response()["parameters"]
    assert parameters["backend"] == "reference" and parameters["compare_backend"] == "torch"
    assert parameters["compare_allclose"] is True and parameters["compare_indices_equal"] is True
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("maxpool2d", [infer_input("input", x, True)], outputs=outputs,
                            parameters={"config": {"kernel_size": 3}})
    assert caught.value.status() == "400"
    assert "indices only with config return_indices: true" in caught.value.message()


def test_batchnorm_training_buffers_fed_back(triton_client):
    """Two training steps through tritonclient, the second taking the first's buffers (and its
    INT64 count), equal a torch module that ran both batches."""
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((6, 3, 4, 4)).astype(np.float32) for _ in range(2)]
    config = {"num_features": 3, "momentum": 0.3}
    state: dict[str, np.ndarray] = {}
    for batch in batches:
        inputs = [infer_input("input", batch, True)] + [infer_input(k, v, True) for k, v in state.items()]
        result = triton_client.infer("batchnorm2d", inputs, parameters={"config": config, "training": True})
        state = {name: result.as_numpy(name) for name in ("weight", "bias", "running_mean", "running_var",
                                                          "num_batches_tracked")}
    module = torch.nn.BatchNorm2d(**config).train()
    for batch in batches:
        with torch.no_grad():
            expected = module(torch.from_numpy(batch))
    torch.testing.assert_close(torch.from_numpy(result.as_numpy("output")), expected)
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"].shape == ()
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(np.array(state[name])), tensor)


def test_errors_reach_tritonclient_with_their_message(triton_client):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("linear", [infer_input("input", x, True)], parameters={"config": {"in_features": 5,
                                                                                              "out_features": 1}})
    assert caught.value.status() == "400"
    assert caught.value.message() == "input has 4 features in its last dimension (shape [2, 4]), config.in_features is 5"
    weight = np.ones((2, 4), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("linear", [infer_input("input", x, True), infer_input("weight", weight, True)],
                            parameters={"config": {"in_features": 4, "out_features": 1}})
    assert caught.value.message() == "input 'weight' has shape [2, 4]; Linear with this config needs [1, 4]"
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("linear", [infer_input("input", x, True)],
                            parameters={"config": {"in_features": 4, "out_features": 1}}, priority=2)
    assert "'priority' is not supported" in caught.value.message()
