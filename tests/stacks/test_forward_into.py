"""The compute step writing a layer's output into a given destination (app.stacks.run: `run_plan(plan,
into=...)`, `forward_into`, `output_destination`), against direct torch.nn calls: in pieces along the
batch where the samples are independent (odd batches against the piece size, max-pool's indices
joined, BatchNorm in evaluation), whole where they are not (BatchNorm in training or without running
statistics, Flatten merging the batch, unbatched inputs), and not at all where the destination
cannot take the output (wrong size, overlapping an input or a weight, misaligned, an empty batch)."""

import numpy as np
import pytest
import torch
from torch import nn

from app.backends.torch_backend import TorchBackend
from app.config import Settings
from app.layers.registry import LAYERS
from app.stacks import run
from app.stacks.plan import LayerRequest, StackRequest, plan_stack
from tests.stacking import TORCH_MODULES

SETTINGS = Settings()
TOLERANCES = {np.float32: {"rtol": 1.3e-6, "atol": 1e-5}, np.float64: {"rtol": 1e-7, "atol": 1e-7}}
"""torch.testing.assert_close's defaults, as app.stacks.run.TOLERANCES."""


class Recording:
    """The real backend, with the batch size of each forward call it was asked for."""

    def __init__(self, backend):
        self.backend, self.name, self.calls = backend, backend.name, []

    def forward(self, spec, config, x, state, training, out=None):
        self.calls.append(x.shape[0] if x.ndim else None)
        return self.backend.forward(spec, config, x, state, training, out=out)


def make_plan(kind, config, x, training=True, parameters=None, backend="torch", compare=False):
    data = {"data": x, "shape": list(x.shape), "dtype": str(x.dtype)}
    request = StackRequest([LayerRequest(kind, config, parameters or {})], data, seed=3, backend=backend,
                           compare=compare, training=training, single=True)
    return plan_stack(request, SETTINGS)


def torch_output(kind, config, x, training, plan_outcome):
    """The module torch.nn builds for this config, loaded with the state the service used."""
    module = TORCH_MODULES[kind](**config).to(torch.float64 if x.dtype == np.float64 else torch.float32)
    state = {k: torch.from_numpy(np.array(v)) for k, v in plan_outcome.layers[0].state.items()}
    module.load_state_dict(state)
    module.train(training)
    with torch.no_grad():
        out = module(torch.from_numpy(x.copy()))
    return (out[0] if isinstance(out, tuple) else out).numpy(), out[1].numpy() if isinstance(out, tuple) else None


def run_into(plan, nbytes=None, offset=0):
    """run_plan with a fresh destination of the output's size (or `nbytes`) at `offset` in a buffer."""
    shape, dtype = plan.layers[-1].output_shape, np.dtype(plan.request.input["dtype"])
    size = int(np.prod(shape)) * dtype.itemsize if nbytes is None else nbytes
    buffer = np.full(offset + size, 0xAB, dtype=np.uint8)
    return run.run_plan(plan, into=memoryview(buffer)[offset:]), buffer[offset:]


CASES = [  # (kind, config, input shape, training): independent samples
    ("conv2d", {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, (11, 3, 24, 32), True),
    ("conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": 1}, (9, 4, 8, 8), True),
    ("conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": "same", "groups": 2,
                "padding_mode": "reflect"}, (7, 4, 9, 10), False),
    ("conv1d", {"in_channels": 2, "out_channels": 5, "kernel_size": 3, "dilation": 2, "bias": False}, (13, 2, 40), True),
    ("conv3d", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}, (5, 2, 6, 6, 6), True),
    ("linear", {"in_features": 20, "out_features": 7}, (17, 20), True),
    ("linear", {"in_features": 20, "out_features": 7, "bias": False}, (5, 3, 20), True),
    ("maxpool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (9, 3, 15, 14), True),
    ("maxpool1d", {"kernel_size": 2, "return_indices": True}, (11, 4, 30), True),
    ("maxpool3d", {"kernel_size": 2, "return_indices": True}, (7, 2, 4, 6, 6), True),
    ("avgpool2d", {"kernel_size": 2, "count_include_pad": False, "padding": 1}, (10, 3, 9, 9), True),
    ("avgpool1d", {"kernel_size": 3}, (6, 2, 50), True),
    ("batchnorm2d", {"num_features": 3}, (9, 3, 8, 8), False),
    ("batchnorm1d", {"num_features": 5}, (13, 5), False),
    ("relu", {}, (15, 33), True),
    ("relu", {}, (101,), True),
    ("flatten", {}, (9, 3, 4, 5), True),
    ("flatten", {"start_dim": 2}, (7, 3, 4, 5), True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("kind", "config", "shape", "training"), CASES)
def test_pieces_written_into_the_destination_equal_torch(monkeypatch, kind, config, shape, training, dtype):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    plan = make_plan(kind, config, x, training)
    out_shape = plan.layers[0].output_shape
    sample_bytes = int(np.prod(out_shape[1:])) * np.dtype(dtype).itemsize
    monkeypatch.setattr(run, "PIECE_BYTES", 3 * sample_bytes + 1)  # 3 samples a piece: a shorter last piece
    recording = Recording(TorchBackend())
    monkeypatch.setattr(run, "get_backend", lambda name, device: recording)

    outcome, destination = run_into(plan)
    assert np.shares_memory(outcome.output, destination)  # the output is the destination's bytes
    expected, indices = torch_output(kind, config, x, training, outcome)
    got = destination.view(dtype).reshape(out_shape)
    pieces = recording.calls
    assert len(pieces) == -(-shape[0] // 3) and sum(pieces) == shape[0] and max(pieces) - min(pieces) <= 1
    # torch's output for those samples; for some configs its kernel for a smaller batch rounds
    # differently in the last bit (conv1d dilated, conv3d float64 here), hence torch.testing's tolerances.
    np.testing.assert_allclose(got, expected, **TOLERANCES[dtype])
    if indices is not None:
        np.testing.assert_array_equal(outcome.layers[0].extras["indices"], indices)


@pytest.mark.parametrize(("kind", "config", "shape", "training"), [
    ("batchnorm2d", {"num_features": 3}, (9, 3, 5, 5), True),  # training: the batch's statistics
    ("batchnorm1d", {"num_features": 4, "track_running_stats": False}, (9, 4, 6), False),  # no running ones
    ("flatten", {"start_dim": 0}, (9, 3, 4), True),  # merges the batch dimension
    ("conv2d", {"in_channels": 3, "out_channels": 2, "kernel_size": 3}, (3, 12, 12), True),  # unbatched
    ("maxpool1d", {"kernel_size": 2}, (4, 40), True),  # unbatched
    ("linear", {"in_features": 9, "out_features": 2}, (9,), True),  # unbatched
])
def test_dependent_samples_are_computed_whole_into_the_destination(monkeypatch, kind, config, shape, training):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    plan = make_plan(kind, config, x, training)
    monkeypatch.setattr(run, "PIECE_BYTES", 64)
    recording = Recording(TorchBackend())
    monkeypatch.setattr(run, "get_backend", lambda name, device: recording)

    outcome, destination = run_into(plan)
    assert recording.calls == [shape[0]]
    expected, _ = torch_output(kind, config, x, training, make_outcome_state(kind, config, x, training))
    np.testing.assert_array_equal(destination.view(np.float32).reshape(expected.shape), expected)
    if kind == "batchnorm2d":  # the running statistics moved once, by the whole batch's
        torch.manual_seed(3)
        module = nn.BatchNorm2d(3)
        module(torch.from_numpy(x))
        buffers = outcome.layers[0].buffers
        assert sorted(buffers) == ["num_batches_tracked", "running_mean", "running_var"]
        assert int(buffers["num_batches_tracked"]) == 1
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(buffers[name], getattr(module, name).numpy(), rtol=1.3e-6, atol=1e-5)


def make_outcome_state(kind, config, x, training):
    """The state the service draws for this config (seed 3), without a destination."""
    return run.run_plan(make_plan(kind, config, x, training))


def test_batchnorm_in_evaluation_uses_given_running_statistics_in_every_piece(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 4, 6, 6)).astype(np.float32)
    parameters = {"running_mean": rng.standard_normal(4).astype(np.float32),
                  "running_var": rng.uniform(0.5, 2, 4).astype(np.float32),
                  "weight": rng.standard_normal(4).astype(np.float32), "bias": rng.standard_normal(4).astype(np.float32),
                  "num_batches_tracked": np.array(7, dtype=np.int64)}
    plan = make_plan("batchnorm2d", {"num_features": 4}, x, training=False, parameters=parameters)
    monkeypatch.setattr(run, "PIECE_BYTES", 4 * 6 * 6 * 4 * 4)  # 4 samples a piece: 4, 4, 2
    outcome, destination = run_into(plan)
    module = nn.BatchNorm2d(4).eval()
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in parameters.items()})
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(destination.view(np.float32).reshape(x.shape), expected)
    buffers, statistics = outcome.layers[0].buffers, outcome.layers[0].extras
    assert int(buffers["num_batches_tracked"]) == 7  # evaluation moves nothing
    np.testing.assert_array_equal(statistics["mean"], parameters["running_mean"])
    np.testing.assert_array_equal(statistics["var"], parameters["running_var"])


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_reference_backend_and_compare_write_the_primary_output(monkeypatch, backend):
    x = np.random.default_rng(4).standard_normal((7, 3, 10, 10)).astype(np.float32)
    config = {"in_channels": 3, "out_channels": 4, "kernel_size": 3}
    monkeypatch.setattr(run, "PIECE_BYTES", 1000)
    plan = make_plan("conv2d", config, x, backend=backend, compare=True)
    outcome, destination = run_into(plan)
    plain = run.run_plan(make_plan("conv2d", config, x, backend=backend, compare=True))
    np.testing.assert_allclose(destination.view(np.float32).reshape(plain.output.shape), plain.output,
                               **TOLERANCES[np.float32])
    assert outcome.comparison["allclose"] is True and outcome.comparison["backend"] != backend
    expected, _ = torch_output("conv2d", config, x, True, outcome)
    np.testing.assert_allclose(outcome.output, expected, **TOLERANCES[np.float32])


def test_destination_not_used_when_it_cannot_take_the_output(monkeypatch):
    x = np.random.default_rng(5).standard_normal((6, 2, 9, 9)).astype(np.float32)
    config = {"in_channels": 2, "out_channels": 2, "kernel_size": 3}
    plan = make_plan("conv2d", config, x)
    expected = run.run_plan(plan).output
    size = expected.nbytes
    for nbytes, offset in ((size - 4, 0), (size + 4, 0), (size, 2)):  # wrong size; misaligned
        outcome, destination = run_into(make_plan("conv2d", config, x), nbytes=nbytes, offset=offset)
        assert not np.shares_memory(outcome.output, destination) and (destination == 0xAB).all()
        np.testing.assert_array_equal(outcome.output, expected)
    empty = np.zeros((0, 2, 9, 9), np.float32)
    outcome, destination = run_into(make_plan("conv2d", config, empty))
    assert outcome.output.shape == (0, 2, 7, 7) and destination.size == 0
    read_only = memoryview(bytes(size))
    assert not np.shares_memory(run.run_plan(make_plan("conv2d", config, x), into=read_only).output,
                                np.frombuffer(read_only, np.uint8))


@pytest.mark.parametrize("overlapping", ["input", "weight"])
def test_a_destination_overlapping_an_input_is_not_written_in_pieces(monkeypatch, overlapping):
    """An in-place request (output over its own input, as a shared-memory client may ask): pieces
    written early would overwrite samples still to be read, so the output is computed whole first."""
    monkeypatch.setattr(run, "PIECE_BYTES", 64)
    rng = np.random.default_rng(6)
    if overlapping == "input":
        buffer = rng.standard_normal(12 * 50).astype(np.float32)
        x = buffer.reshape(12, 50)  # the destination's own bytes
        plan = make_plan("relu", {}, x)
        expected = np.maximum(buffer.copy().reshape(12, 50), 0)
    else:
        buffer = np.zeros(4 * 6 + 11 * 4, np.float32)
        weight = buffer[:24].reshape(4, 6)
        weight[...] = rng.standard_normal((4, 6))
        x = rng.standard_normal((11, 6)).astype(np.float32)
        plan = make_plan("linear", {"in_features": 6, "out_features": 4, "bias": False}, x,
                         parameters={"weight": weight})
        expected = x @ weight.copy().T
    outcome = run.run_plan(plan, into=memoryview(buffer).cast("B")[: expected.nbytes])  # over the input or the weight
    assert not np.shares_memory(outcome.output, buffer)
    np.testing.assert_allclose(outcome.output, expected, rtol=1.3e-6, atol=1e-5)


def test_every_kind_says_whether_its_samples_are_independent():
    """The registry's answers for a batched input, in training and evaluation."""
    batched = {"linear": (4, 3), "relu": (4, 3), "flatten": (4, 3, 2)}
    answers = {}
    for kind, spec in LAYERS.items():
        dims = int(kind[-2]) if kind[-2].isdigit() else None
        shape = batched.get(kind) or (4, 3, *[5] * (dims or 1))
        config = spec.config_model.model_validate(
            {"in_features": 3, "out_features": 2} if kind == "linear" else
            {"in_channels": 3, "out_channels": 2, "kernel_size": 1} if kind.startswith("conv") else
            {"kernel_size": 1} if "pool" in kind else {"num_features": 3} if "batchnorm" in kind else {})
        answers[kind] = (spec.independent_samples(config, shape, True), spec.independent_samples(config, shape, False))
    assert answers == {kind: ((False, True) if kind.startswith("batchnorm") else (True, True)) for kind in LAYERS}
