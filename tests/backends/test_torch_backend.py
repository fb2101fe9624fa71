"""The torch backend's module reuse: what a call leaves behind, and what it must not touch."""

import numpy as np
import pytest
import torch

from app.backends.torch_backend import TorchBackend, reusable_module
from app.layers.registry import LAYERS


def config(kind: str, **values):
    return LAYERS[kind].config_model.model_validate(values)


def test_relu_inplace_leaves_the_callers_array_alone():
    """nn.ReLU(inplace=True) would write into its input: a view of the request body (msgpack), which
    the reference backend reads next with `compare`. The spec builds the module with inplace=False."""
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    result = TorchBackend().forward(LAYERS["relu"], config("relu", inplace=True), x, {}, True)
    np.testing.assert_array_equal(result.output, [[0.0, 2.0, 0.0]])
    np.testing.assert_array_equal(x, [[-1.0, 2.0, -3.0]])


def test_batchnorm_updates_copies_of_the_running_statistics():
    spec, cfg = LAYERS["batchnorm1d"], config("batchnorm1d", num_features=3)
    state = {"weight": np.ones(3, np.float32), "bias": np.zeros(3, np.float32),
             "running_mean": np.zeros(3, np.float32), "running_var": np.ones(3, np.float32),
             "num_batches_tracked": np.array(0, np.int64)}
    for array in state.values():
        array.flags.writeable = False  # as the remembered initial states are
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    result = TorchBackend().forward(spec, cfg, x, state, True)
    expected = torch.nn.BatchNorm1d(3)
    out = expected(torch.from_numpy(x))
    np.testing.assert_allclose(result.output, out.detach().numpy(), rtol=1.3e-6, atol=1e-5)
    np.testing.assert_allclose(result.buffers["running_mean"], expected.running_mean.numpy(), rtol=1.3e-6, atol=1e-5)
    assert result.buffers["num_batches_tracked"] == 1 and state["num_batches_tracked"] == 0
    np.testing.assert_array_equal(state["running_mean"], np.zeros(3))


@pytest.mark.parametrize("training", [True, False])
def test_a_reused_module_keeps_no_tensor_after_the_call(training):
    spec, cfg = LAYERS["batchnorm2d"], config("batchnorm2d", num_features=2)
    state = {"weight": np.ones(2, np.float32), "bias": np.zeros(2, np.float32),
             "running_mean": np.zeros(2, np.float32), "running_var": np.ones(2, np.float32),
             "num_batches_tracked": np.array(0, np.int64)}
    TorchBackend().forward(spec, cfg, np.ones((2, 2, 3, 3), np.float32), state, training)
    module = reusable_module(spec, cfg).module
    assert all(t.device.type == "meta" for t in module.state_dict(keep_vars=True).values())
    assert module.training is training


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("input_shape", [(4,), (10, 4), (2, 3, 4)])
def test_linear_by_its_functional_call_is_bit_identical_to_nn_linear(bias, dtype, input_shape):
    """Linear runs as F.linear on the given tensors (no module loaded): the same bits as nn.Linear."""
    rng = np.random.default_rng(len(input_shape) + 2 * bias)
    x = rng.standard_normal(input_shape).astype(dtype)
    torch.manual_seed(7)
    module = torch.nn.Linear(4, 3, bias=bias, dtype=torch.float64 if dtype is np.float64 else torch.float32)
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    for training in (True, False):
        result = TorchBackend().forward(LAYERS["linear"], config("linear", in_features=4, out_features=3, bias=bias),
                                        x, state, training)
        expected = module.train(training)(torch.from_numpy(x)).detach().numpy()
        assert result.output.dtype == expected.dtype and result.output.shape == expected.shape
        assert result.output.tobytes() == expected.tobytes()
        assert result.buffers == {} and result.extras == {}
