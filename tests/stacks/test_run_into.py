"""The compute step writing the stack's output into given bytes (app.stacks.run: `run_plan(plan,
into=...)`, `output_destination`; the backends' `out=`), as the /v2 shared-memory route asks for
an output in a client's region: the same values as without a destination and as torch.nn, straight
from the kernel for Linear and ReLU, and no destination where it cannot take the output (wrong
size, misaligned, read-only, empty, overlapping an input or a weight)."""

import numpy as np
import pytest
import torch

from app.backends.torch_backend import TorchBackend
from app.config import Settings
from app.layers.registry import LAYERS
from app.stacks import run
from app.stacks.plan import LayerRequest, StackRequest, plan_stack
from tests.stacking import TORCH_MODULES

SETTINGS = Settings()


def make_plan(kind, config, x, training=True, parameters=None, backend="torch", compare=False):
    data = {"data": x, "shape": list(x.shape), "dtype": str(x.dtype)}
    request = StackRequest([LayerRequest(kind, config, parameters or {})], data, seed=3, backend=backend,
                           compare=compare, training=training, single=True)
    return plan_stack(request, SETTINGS)


def run_into(plan, nbytes=None, offset=0):
    """run_plan with fresh bytes of the output's size (or `nbytes`) at `offset` in a buffer."""
    shape, dtype = plan.layers[-1].output_shape, np.dtype(plan.request.input["dtype"])
    size = int(np.prod(shape)) * dtype.itemsize if nbytes is None else nbytes
    buffer = np.full(offset + size, 0xAB, dtype=np.uint8)
    return run.run_plan(plan, into=memoryview(buffer)[offset:]), buffer[offset:]


CASES = [  # (kind, config, input shape, training)
    ("conv2d", {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, (11, 3, 24, 32), True),
    ("conv1d", {"in_channels": 2, "out_channels": 5, "kernel_size": 3, "dilation": 2, "bias": False}, (13, 2, 40), True),
    ("conv3d", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}, (2, 6, 6, 6), True),  # unbatched
    ("linear", {"in_features": 20, "out_features": 7}, (17, 20), True),
    ("linear", {"in_features": 20, "out_features": 7, "bias": False}, (17, 20), True),
    ("linear", {"in_features": 20, "out_features": 7}, (5, 3, 20), True),
    ("linear", {"in_features": 20, "out_features": 7}, (20,), True),
    ("maxpool1d", {"kernel_size": 2, "return_indices": True}, (11, 4, 30), True),
    ("avgpool2d", {"kernel_size": 2, "count_include_pad": False, "padding": 1}, (10, 3, 9, 9), True),
    ("batchnorm2d", {"num_features": 3}, (9, 3, 8, 8), True),
    ("batchnorm1d", {"num_features": 5}, (13, 5), False),
    ("relu", {}, (15, 33), True),
    ("relu", {}, (101,), True),
    ("flatten", {}, (9, 3, 4, 5), True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("kind", "config", "shape", "training"), CASES)
def test_the_output_written_into_the_destination_equals_torch(kind, config, shape, training, dtype):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    plain = run.run_plan(make_plan(kind, config, x, training))
    outcome, destination = run_into(make_plan(kind, config, x, training))
    assert np.shares_memory(outcome.output, destination)  # the outcome's output is the destination's bytes
    got = destination.view(dtype).reshape(plain.output.shape)
    assert got.tobytes() == plain.output.tobytes()  # the same kernels: bit for bit
    layer, other = outcome.layers[0], plain.layers[0]
    for name in other.buffers:
        np.testing.assert_array_equal(layer.buffers[name], other.buffers[name])
    for name in other.extras:
        np.testing.assert_array_equal(layer.extras[name], other.extras[name])
    module = TORCH_MODULES[kind](**config).to(torch.float64 if dtype == np.float64 else torch.float32)
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in layer.state.items()})
    module.train(training)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    expected = expected[0] if isinstance(expected, tuple) else expected
    assert got.tobytes() == expected.numpy().tobytes()


@pytest.mark.parametrize(("kind", "config", "shape"), [
    ("linear", {"in_features": 6, "out_features": 3}, (9, 6)),
    ("linear", {"in_features": 6, "out_features": 3, "bias": False}, (9, 6)),
    ("relu", {}, (4, 5, 6)),
])
def test_linear_and_relu_write_straight_into_the_destination(kind, config, shape):
    """torch's out= variants of the very kernels (addmm / mm, clamp_min): no tensor of their own."""
    spec, parsed = LAYERS[kind], LAYERS[kind].config_model.model_validate(config)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:4] = [np.nan, -0.0, np.inf, -np.inf]
    state = {name: np.random.default_rng(3).standard_normal(s).astype(np.float32)
             for name, s in spec.parameter_shapes(parsed).items()}
    out = np.full(spec.output_shape(parsed, shape), 7.0, np.float32)
    before = torch.from_numpy(out).data_ptr()
    result = TorchBackend().forward(spec, parsed, x, state, True, out=out)
    assert result.output is out and torch.from_numpy(out).data_ptr() == before
    module = TORCH_MODULES[kind](**config)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        assert out.tobytes() == module(torch.from_numpy(x)).numpy().tobytes()


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_reference_backend_and_compare_write_the_primary_output(backend):
    x = np.random.default_rng(4).standard_normal((7, 3, 10, 10)).astype(np.float32)
    config = {"in_channels": 3, "out_channels": 4, "kernel_size": 3}
    outcome, destination = run_into(make_plan("conv2d", config, x, backend=backend, compare=True))
    plain = run.run_plan(make_plan("conv2d", config, x, backend=backend, compare=True))
    np.testing.assert_array_equal(destination.view(np.float32).reshape(plain.output.shape), plain.output)
    assert outcome.comparison == {**plain.comparison, "elapsed_ms": outcome.comparison["elapsed_ms"]}
    assert outcome.comparison["allclose"] is True and outcome.comparison["backend"] != backend


def test_no_destination_where_it_cannot_take_the_output():
    x = np.random.default_rng(5).standard_normal((6, 2, 9, 9)).astype(np.float32)
    config = {"in_channels": 2, "out_channels": 2, "kernel_size": 3}
    expected = run.run_plan(make_plan("conv2d", config, x)).output
    size = expected.nbytes
    for nbytes, offset in ((size - 4, 0), (size + 4, 0), (size, 2)):  # wrong sizes; misaligned
        outcome, destination = run_into(make_plan("conv2d", config, x), nbytes=nbytes, offset=offset)
        assert not np.shares_memory(outcome.output, destination) and (destination == 0xAB).all()
        np.testing.assert_array_equal(outcome.output, expected)
    outcome, destination = run_into(make_plan("conv2d", config, np.zeros((0, 2, 9, 9), np.float32)))
    assert outcome.output.shape == (0, 2, 7, 7) and destination.size == 0  # an empty batch: nothing to write
    read_only = memoryview(bytes(size))
    outcome = run.run_plan(make_plan("conv2d", config, x), into=read_only)
    assert not np.shares_memory(outcome.output, np.frombuffer(read_only, np.uint8))


@pytest.mark.parametrize("overlapping", ["input", "weight"])
def test_a_destination_overlapping_an_input_is_not_written_by_the_kernel(overlapping):
    """An output asked for over an input's own bytes (a shared-memory client may): a kernel writing
    as it goes would overwrite elements still to be read (torch refuses partial overlaps outright),
    so the output is computed into an array of its own first."""
    rng = np.random.default_rng(6)
    if overlapping == "input":
        buffer = rng.standard_normal(13 * 50).astype(np.float32)
        x = buffer[50:].reshape(12, 50)  # the input from row 1 on; the output over rows 0-11
        expected = np.maximum(x, 0)
        plan = make_plan("relu", {}, x)
    else:
        buffer = np.zeros(4 * 6 + 11 * 4, np.float32)
        weight = buffer[:24].reshape(4, 6)
        weight[...] = rng.standard_normal((4, 6))
        x = rng.standard_normal((11, 6)).astype(np.float32)
        expected = x @ weight.T
        plan = make_plan("linear", {"in_features": 6, "out_features": 4, "bias": False}, x,
                         parameters={"weight": weight})
    outcome = run.run_plan(plan, into=memoryview(buffer).cast("B")[: expected.nbytes])
    assert not np.shares_memory(outcome.output, buffer)
    np.testing.assert_allclose(outcome.output, expected, rtol=1.3e-6, atol=1e-5)
