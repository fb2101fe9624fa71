"""`Client(shared_memory=True)` against a real server on this host: the same results as the socket
path and as torch, big tensors never through the socket, regions reused only once their results
are gone, and nothing left in /dev/shm or registered once the client closes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from app.client import BadRequestError, Client, ValidationError
from app.client.shared_memory import MAX_OUTPUT_REGIONS, MIN_BYTES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONV = {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2}


def own_objects(client: Client) -> set[str]:
    prefix = f"layerlab-{__import__('os').getpid()}-"
    return {path.name for path in Path("/dev/shm").iterdir() if path.name.startswith(prefix)}


def registered(client: Client) -> set[str]:
    return {region["name"] for region in client.request("GET", "/v2/systemsharedmemory/status")}


@pytest.fixture()
def clients(live_server):
    with Client(live_server, shared_memory=True, timeout=120) as shared, Client(live_server, timeout=120) as plain:
        yield shared, plain


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_same_result_as_the_socket_path_and_torch(clients, backend):
    shared, plain = clients
    x = np.random.default_rng(0).standard_normal((8, 3, 40, 30)).astype(np.float32)  # 115 KB: shared memory
    assert x.nbytes >= MIN_BYTES
    a = shared.conv2d(x, **CONV, seed=4, backend=backend, compare=True)
    b = plain.conv2d(x, **CONV, seed=4, backend=backend, compare=True)
    assert registered(shared)  # it went through regions
    np.testing.assert_array_equal(a.output, b.output)
    assert (a.kind, a.backend, a.config, a.input_shape, a.output_shape, a.formula, a.parameter_count) == \
        (b.kind, b.backend, b.config, b.input_shape, b.output_shape, b.formula, b.parameter_count)
    assert a.parameters.keys() == b.parameters.keys()
    for name in a.parameters:
        np.testing.assert_array_equal(a.parameters[name], b.parameters[name])
    assert a.comparison.allclose and b.comparison.allclose and a.comparison.backend == b.comparison.backend
    assert repr(a) == repr(b)
    torch.manual_seed(4)
    expected = torch.nn.Conv2d(**CONV)(torch.from_numpy(x)).detach()
    torch.testing.assert_close(torch.from_numpy(a.output), expected, rtol=1e-4, atol=1e-5)


def test_given_parameters_buffers_indices_and_float64(clients):
    shared, plain = clients
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 8, 40))  # float64, 164 KB
    stats = {"running_mean": rng.standard_normal(8), "running_var": rng.random(8) + 0.5}
    a = shared.batchnorm1d(x, num_features=8, parameters=stats, training=True)
    b = plain.batchnorm1d(x, num_features=8, parameters=stats, training=True)
    assert a.output.dtype == np.float64
    np.testing.assert_array_equal(a.output, b.output)
    for name in b.buffers:
        np.testing.assert_array_equal(a.buffers[name], b.buffers[name])
    module = torch.nn.BatchNorm1d(8, dtype=torch.float64)
    module.running_mean.copy_(torch.from_numpy(stats["running_mean"]))
    module.running_var.copy_(torch.from_numpy(stats["running_var"]))
    torch.testing.assert_close(torch.from_numpy(a.output), module(torch.from_numpy(x)).detach())
    torch.testing.assert_close(torch.from_numpy(a.buffers["running_mean"]), module.running_mean)
    assert a.buffers["num_batches_tracked"] == 1

    y = rng.standard_normal((16, 4, 33, 31)).astype(np.float32)
    pooled = shared.maxpool2d(y, kernel_size=3, stride=2, return_indices=True)
    expected, indices = torch.nn.functional.max_pool2d(torch.from_numpy(y), 3, 2, return_indices=True)
    np.testing.assert_array_equal(pooled.output, expected.numpy())
    np.testing.assert_array_equal(pooled.indices, indices.numpy())


def test_results_held_keep_their_region_and_regions_are_reused(clients):
    shared, _ = clients
    x = np.random.default_rng(2).standard_normal((8, 3, 40, 30)).astype(np.float32)
    first = shared.conv2d(x, **CONV, seed=0)
    kept = first.output.copy()
    second = shared.conv2d(x * 2, **CONV, seed=0)  # `first` is held: another region
    np.testing.assert_array_equal(first.output, kept)
    np.testing.assert_allclose(second.output - second.parameters["bias"][:, None, None],
                               2 * (kept - first.parameters["bias"][:, None, None]), rtol=1e-4, atol=1e-4)
    del first
    regions = set(registered(shared))
    for _ in range(3):  # nothing held now: the same regions serve
        shared.conv2d(x, **CONV, seed=0)
    assert registered(shared) == regions
    held = [shared.conv2d(x + i, **CONV, seed=0) for i in range(MAX_OUTPUT_REGIONS + 2)]
    assert len(registered(shared)) <= MAX_OUTPUT_REGIONS + 1  # the input region, at most MAX_OUTPUT_REGIONS outputs
    for i, result in enumerate(held):  # each still its own: regions let go keep their mapping for their result
        torch.manual_seed(0)
        expected = torch.nn.Conv2d(**CONV)(torch.from_numpy(x + i)).detach()
        torch.testing.assert_close(torch.from_numpy(result.output), expected, rtol=1e-4, atol=1e-5)


def test_close_unregisters_and_removes_every_object(live_server):
    x = np.random.default_rng(3).standard_normal((8, 3, 40, 30)).astype(np.float32)
    client = Client(live_server, shared_memory=True, timeout=120)
    result = client.conv2d(x, **CONV)
    assert own_objects(client) and registered(client)
    client.close()
    with Client(live_server) as other:
        assert not registered(other)
    assert not own_objects(client)
    assert result.output.shape == (8, 4, 19, 14) and np.isfinite(result.output).all()  # still readable


def test_small_inputs_and_options_v2_lacks_take_the_socket(clients):
    shared, plain = clients
    small = np.ones((2, 4), dtype=np.float32)
    assert shared.linear(small, in_features=4, out_features=1).output.shape == (2, 1)
    assert not registered(shared)
    x = np.random.default_rng(4).standard_normal((8, 3, 40, 30)).astype(np.float32)
    a = shared.conv2d(x, **CONV, gradients=True)
    assert a.gradients["input"].shape == x.shape and not registered(shared)


def test_errors_are_typed_as_on_the_socket_path(clients):
    shared, plain = clients
    x = np.random.default_rng(5).standard_normal((8, 5, 40, 30)).astype(np.float32)  # 5 channels, not 3
    with pytest.raises(ValidationError) as caught:
        shared.conv2d(x, **CONV)
    with pytest.raises(ValidationError) as expected:
        plain.conv2d(x, **CONV)
    assert "input has 5 channels" in str(caught.value) and "input has 5 channels" in str(expected.value)
    y = np.random.default_rng(5).standard_normal((8, 3, 40, 30)).astype(np.float32)
    with pytest.raises(BadRequestError) as caught:  # /v2's own refusal, its `{"error": ...}` as the message
        shared.conv2d(y, **CONV, parameters={"weight": np.ones((4, 3, 2, 2), dtype=np.float32)})
    assert "weight" in str(caught.value) and "[4, 3, 3, 3]" in str(caught.value).replace("(", "[").replace(")", "]")


def test_shared_arrays_are_named_in_place_not_copied(clients):
    """An input (or parameter) made by `shared_array` is read by the server where it lies: no input
    region is made; a contiguous slice of one too; anything else is copied as usual."""
    shared, plain = clients
    x = shared.shared_array((16, 3, 40, 30))
    assert x.dtype == np.float32 and x.shape == (16, 3, 40, 30) and not x.any()
    x[...] = np.random.default_rng(6).standard_normal(x.shape)
    own = registered(shared)
    assert len(own) == 1  # the array's region, registered at once
    a = shared.conv2d(x, **CONV, seed=1)
    assert len(registered(shared) - own) == 1  # an output region; no input region: nothing was copied
    np.testing.assert_array_equal(a.output, plain.conv2d(x.copy(), **CONV, seed=1).output)

    part = shared.conv2d(x[2:9], **CONV, seed=1)  # a contiguous slice: in place as well
    assert len(registered(shared) - own) == 2  # a second output region (`a` is held); still no input region
    np.testing.assert_array_equal(part.output, a.output[2:9])

    weight = shared.shared_array((4, 3, 3, 3), dtype="float64")  # cast to the input's dtype: copied
    weight[...] = np.random.default_rng(7).standard_normal(weight.shape)
    strided = shared.conv2d(x[:, :, ::2], **CONV, parameters={"weight": weight})  # not contiguous: copied
    expected = torch.nn.functional.conv2d(torch.from_numpy(x[:, :, ::2].copy()), torch.from_numpy(weight).float(),
                                          torch.from_numpy(strided.parameters["bias"]), stride=2)
    torch.testing.assert_close(torch.from_numpy(strided.output), expected)
    assert len(registered(shared) - own) == 5  # the weight's region, a third output region, the input region

    wide = shared.shared_array((16, 3, 40, 30), dtype=np.float64)
    wide[...] = x
    b = shared.conv2d(wide, **CONV, seed=1)
    assert b.output.dtype == np.float64
    torch.manual_seed(1)
    module = torch.nn.Conv2d(**CONV).double()
    torch.testing.assert_close(torch.from_numpy(b.output), module(torch.from_numpy(wide.copy())).detach())


def test_a_shared_arrays_region_goes_with_it(live_server):
    with Client(live_server, shared_memory=True, timeout=120) as client:
        x = client.shared_array([16, 3, 40, 30])
        x += 1
        (name,) = registered(client)
        assert name in own_objects(client)
        view = x[:8]  # the mapping lives on in a view after the array goes, but the region is let go
        del x
        result = client.conv2d(view, **CONV)  # copied now, as any array
        assert name not in registered(client) and name not in own_objects(client)
        np.testing.assert_array_equal(view, 1)
        torch.manual_seed(0)
        torch.testing.assert_close(torch.from_numpy(result.output),
                                   torch.nn.Conv2d(**CONV)(torch.from_numpy(view.copy())).detach())
        kept = client.shared_array((8, 3, 40, 30))
        with pytest.raises(TypeError, match="float32, float64 or int64"):
            client.shared_array((4,), dtype=np.int8)
    assert not own_objects(client)  # closing removes the regions of arrays still held too
    assert kept.shape == (8, 3, 40, 30)
    with Client(live_server) as plain, pytest.raises(ValueError, match="shared_memory=True"):
        plain.shared_array((4,))
