"""The SDK against the real app: results equal torch, tensors round-trip bit-exact, each error
class comes from a real response, retries happen only where they should."""

import inspect
import pydoc
import socket

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.client import (
    LAYER_KINDS,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    BadRequestError,
    Client,
    LayerlabError,
    LayerResult,
    PayloadTooLargeError,
    ServerError,
    ValidationError,
    layer,
    random_tensor,
)
from app.client._base import retry_delay
from app.client._layers import _config
from app.client.codec import JsonCodec, decode, encode
from app.config import Settings
from app.layers.linear import NOTEBOOK_INPUT
from app.main import create_app
from tests.client.helpers import AsyncCountingTransport, CountingTransport, FlakyFront

NOTEBOOK_WEIGHT = [[-0.2009, -0.0747, -0.2266, 0.2618]]
NOTEBOOK_BIAS = [-0.4708]
rng = np.random.default_rng(6)


# -- results -------------------------------------------------------------------------------------


def test_notebook_linear_cell_equals_torch_mm(sdk):
    """In [7]-[12]: `fc(inputs)` equals `torch.mm(inputs, fc.weight.T).add(fc.bias)`."""
    inputs = torch.tensor(NOTEBOOK_INPUT)
    weight, bias = torch.tensor(NOTEBOOK_WEIGHT), torch.tensor(NOTEBOOK_BIAS)
    result = sdk.linear(inputs, in_features=4, out_features=1,
                        parameters={"weight": weight, "bias": bias}, compare=True)

    assert isinstance(result, LayerResult)
    assert result.output_shape == (10, 1) and result.output.shape == (10, 1)
    torch.testing.assert_close(torch.from_numpy(result.output), torch.mm(inputs, weight.T).add(bias))
    assert result.comparison.backend == "reference" and result.comparison.allclose
    assert result.config == {"in_features": 4, "out_features": 1, "bias": True}
    assert result.parameter_count == 5


def test_notebook_no_bias_cell(sdk):
    """In [17]: `nn.Linear(4, 1, bias=False)(inputs)` equals `torch.mm(inputs, fc1.weight.T)`."""
    inputs = np.array(NOTEBOOK_INPUT, dtype=np.float32)
    result = sdk.linear(inputs, in_features=4, out_features=1, bias=False, backend="reference", seed=3)
    assert set(result.parameters) == {"weight"}
    expected = torch.mm(torch.from_numpy(inputs), torch.from_numpy(result.parameters["weight"]).T)
    torch.testing.assert_close(torch.from_numpy(result.output), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_base64_round_trip_is_bit_exact(sdk, dtype):
    """The weight sent comes back in `parameters` bit for bit: extremes, -0.0, subnormals, inf, NaN."""
    info = np.finfo(dtype)
    special = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, -0.0, np.inf, -np.inf, np.nan],
                       dtype=dtype)
    weight = np.concatenate([rng.standard_normal(16).astype(dtype), special]).reshape(6, 4)
    x = rng.standard_normal((3, 4)).astype(dtype)

    result = sdk.linear(x, in_features=4, out_features=6, bias=False, parameters={"weight": weight})

    echoed = result.parameters["weight"]
    assert echoed.dtype == dtype and result.output.dtype == dtype
    assert echoed.tobytes() == weight.tobytes()  # every bit, NaN payload and the sign of zero included
    with np.errstate(all="ignore"):
        torch.testing.assert_close(torch.from_numpy(result.output),
                                   torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight)),
                                   equal_nan=True)


@pytest.mark.parametrize("codec", [JsonCodec(tensors="list"), JsonCodec()], ids=["json-lists", "json-base64"])
def test_every_transport_gives_the_same_bits(in_process, app, codec):
    """JSON lists (shortest repr; inf and NaN as strings) and base64 carry float32 exactly, as the
    default msgpack transport does: all three give the same arrays."""
    x = rng.standard_normal((5, 4)).astype(np.float32)
    weight = rng.standard_normal((3, 4)).astype(np.float32)
    weight[0, 0], weight[1, 1], weight[2, 2] = np.inf, -np.inf, np.nan
    as_json = in_process(app, codec=codec).linear(x, in_features=4, out_features=3, parameters={"weight": weight})
    as_msgpack = in_process(app).linear(x, in_features=4, out_features=3, parameters={"weight": weight})
    assert ("data" if codec.encoding == "list" else "base64") in as_json.raw["output"]
    assert "bytes" in as_msgpack.raw["output"]
    assert as_json.output.dtype == np.float32
    np.testing.assert_array_equal(as_json.parameters["weight"], weight)
    np.testing.assert_array_equal(as_json.output, as_msgpack.output)
    assert as_msgpack.output.flags.writeable


def test_msgpack_is_the_default_transport(in_process, app):
    client = in_process(app)
    assert client.codec.content_type == "application/msgpack"
    result = client.linear(np.ones((2, 4), np.float32), in_features=4, out_features=1, encoding="none")
    assert result.output is None and result.output_shape == (2, 1)


def test_encoding_none_gives_a_summary(sdk):
    result = sdk.linear(random_tensor((64, 4), seed=1), in_features=4, out_features=3, encoding="none")
    assert result.output is None and result.output_shape == (64, 3)
    assert result.parameters == {"weight": None, "bias": None}
    assert result.parameter_shapes == {"weight": (3, 4), "bias": (3,)}
    assert set(result.summary) == {"min", "max", "mean", "std"}
    assert result.summary["min"] <= result.summary["mean"] <= result.summary["max"]


def test_server_drawn_input_is_torchs_draw(sdk):
    """random_tensor(shape, seed) is `torch.manual_seed(seed); torch.randn(*shape)` on the server."""
    result = sdk.linear(random_tensor((10, 4), seed=7), in_features=4, out_features=1)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        x = torch.randn(10, 4)
    weight, bias = (torch.from_numpy(result.parameters[k]) for k in ("weight", "bias"))
    torch.testing.assert_close(torch.from_numpy(result.output), x @ weight.T + bias)


def test_inputs_of_every_kind_are_accepted(sdk):
    """torch tensors (with grad, float64), integer arrays (sent as float32, like a JSON list) and lists."""
    t = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
    assert sdk.linear(t, in_features=4, out_features=1).output.dtype == np.float64
    assert sdk.linear(np.arange(8).reshape(2, 4), in_features=4, out_features=1).output.dtype == np.float32
    assert sdk.linear([[1, 2, 3, 4]], in_features=4, out_features=1).output.shape == (1, 1)
    with pytest.raises(TypeError, match="real numbers"):
        sdk.linear(np.ones((2, 4), dtype=bool), in_features=4, out_features=1)


def test_output_is_writable(sdk):
    result = sdk.linear(np.ones((2, 4), np.float32), in_features=4, out_features=1)
    result.output[0, 0] = 1.0  # not a read-only view of the response bytes


def test_layers_and_health(sdk):
    assert sdk.health() == {"status": "ok"}
    kinds = {item.kind: item for item in sdk.layers()}
    assert kinds["linear"].torch == "torch.nn.Linear"
    assert kinds["linear"].defaults == {"bias": True}
    assert set(kinds) <= set(LAYER_KINDS), "a kind the server computes has no SDK method"


# -- errors: each class from a real response -----------------------------------------------------


def test_validation_error_names_the_field(sdk):
    with pytest.raises(ValidationError) as caught:
        sdk.linear(np.ones((10, 5), np.float32), in_features=4, out_features=1)
    err = caught.value
    assert isinstance(err, APIStatusError) and isinstance(err, LayerlabError)
    assert (err.status, err.field, err.error) == (422, "input", "ShapeMismatch")
    assert "config.in_features is 4" in err.message and err.response.status_code == 422
    assert err.actual == [10, 5]

    with pytest.raises(ValidationError) as caught:
        sdk.linear(np.ones((2, 4), np.float32), in_features=4, out_features=0)
    assert caught.value.field == "config.out_features"
    assert caught.value.errors[0]["field"] == "config.out_features"


def test_payload_too_large_names_the_limit(sdk):
    """10^4 x 10^4 weights are over the parameter limit: refused before anything is allocated."""
    with pytest.raises(PayloadTooLargeError) as caught:
        sdk.linear(np.ones((1, 10_000), np.float32), in_features=10_000, out_features=10_000)
    err = caught.value
    assert err.status == 413 and err.limit == "max_parameter_elements" and err.value == 10**8 + 10**4


def test_bad_request_errors(sdk):
    with pytest.raises(BadRequestError) as caught:  # 404
        sdk.request("POST", "/v1/layers/no_such_kind", json={"config": {}, "input": [[1.0]]})
    assert (caught.value.status, caught.value.field) == (404, "kind")
    with pytest.raises(BadRequestError) as caught:  # 400
        sdk.request("POST", "/v1/layers/linear", content=b"{not json", headers={"Content-Type": "application/json"})
    assert caught.value.status == 400 and "not valid JSON" in caught.value.message
    with pytest.raises(BadRequestError) as caught:  # 415
        sdk.request("POST", "/v1/layers/linear", content=b"x", headers={"Content-Type": "text/plain"})
    assert caught.value.status == 415 and caught.value.field == "content-type"


def test_unknown_keyword_fails_before_sending(sdk):
    with pytest.raises(TypeError, match="in_feature"):
        sdk.linear(np.ones((2, 4)), in_features=4, out_features=1, in_feature=4)
    # the pooling methods share one typed signature; each kind takes only its own constructor's keywords
    with pytest.raises(TypeError, match="count_include_pad"):
        sdk.maxpool2d(np.ones((1, 1, 4, 4)), kernel_size=2, count_include_pad=False)
    with pytest.raises(TypeError, match="divisor_override"):
        sdk.avgpool1d(np.ones((1, 1, 4)), kernel_size=2, divisor_override=2)
    with pytest.raises(TypeError, match="kernel_size"):  # a required keyword left out, as Python says it
        sdk.conv2d(np.ones((1, 1, 4, 4)), in_channels=1, out_channels=1)
    with pytest.raises(TypeError, match="retrun_intermediates"):
        sdk.sequential([layer("relu")], np.ones((2, 2)), retrun_intermediates=True)


def test_help_shows_the_kinds_own_signature_and_docstring():
    """What an IDE or help() shows: the torch.nn constructor's keywords, typed, sized for the kind."""
    text = pydoc.render_doc(Client.conv2d, renderer=pydoc.plaintext)
    assert "kernel_size: Union[int, tuple[int, int]]" in text and "padding_mode: Literal[" in text
    assert "torch.nn.Conv2d:" in text and "L_out = floor(" in text
    assert "torch.nn.AvgPool1d" in (Client.avgpool1d.__doc__ or "")
    assert "divisor_override" not in inspect.signature(Client.avgpool1d).parameters


def test_server_error_after_retries(in_process, app):
    front = FlakyFront(app, [500, 502, 503])
    client = in_process(front, max_retries=2, initial_retry_delay=0.001)
    with pytest.raises(ServerError) as caught:
        client.health()
    assert caught.value.status == 503 and front.calls == 3
    assert caught.value.body["detail"] == "front answered 503"


# -- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("statuses", [[503], [500, 502], [429]])
def test_retries_until_the_server_answers(in_process, app, statuses):
    front = FlakyFront(app, statuses, retry_after="0")
    client = in_process(front, max_retries=2, initial_retry_delay=0.001)
    result = client.linear(np.ones((2, 4), np.float32), in_features=4, out_features=1)
    assert result.output_shape == (2, 1) and front.calls == len(statuses) + 1


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_client_errors_are_not_retried(in_process, app, status):
    front = FlakyFront(app, [status])
    client = in_process(front, max_retries=3, initial_retry_delay=0.001)
    with pytest.raises(APIStatusError) as caught:
        client.health()
    assert caught.value.status == status and front.calls == 1


def test_max_retries_zero_sends_once(in_process, app):
    front = FlakyFront(app, [503])
    with pytest.raises(ServerError):
        in_process(front, max_retries=0).health()
    assert front.calls == 1


@pytest.fixture
def refused_port():
    """A port bound but not listening: connecting is refused, for real."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never answers: a real read timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_connection_errors_are_retried_then_raised(refused_port):
    transport = CountingTransport()
    with Client(base_url=f"http://127.0.0.1:{refused_port}", transport=transport, max_retries=2,
                initial_retry_delay=0.001) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.health()
    assert transport.calls == 3
    assert caught.value.status is None and caught.value.response is None
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.anyio
async def test_async_connection_errors_are_retried_then_raised(refused_port):
    transport = AsyncCountingTransport()
    async with AsyncClient(base_url=f"http://127.0.0.1:{refused_port}", transport=transport, max_retries=1,
                           initial_retry_delay=0.001) as client:
        with pytest.raises(APIConnectionError):
            await client.linear(np.ones((1, 4)), in_features=4, out_features=1)
    assert transport.calls == 2


def test_timeouts_are_retried_then_raised(silent_port):
    transport = CountingTransport()
    with Client(base_url=f"http://127.0.0.1:{silent_port}", transport=transport, timeout=0.2, max_retries=1,
                initial_retry_delay=0.001) as client:
        with pytest.raises(APITimeoutError):
            client.health()
    assert transport.calls == 2


def test_retry_delay_is_exponential_capped_and_jittered():
    for attempt, nominal in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        delays = [retry_delay(attempt, initial=0.5, maximum=8.0) for _ in range(50)]
        assert all(0.75 * nominal <= d <= nominal for d in delays), (attempt, min(delays), max(delays))
    assert retry_delay(0, initial=0.5, maximum=8.0, retry_after="3") == 3.0
    assert retry_delay(0, initial=0.5, maximum=8.0, retry_after="120") == 8.0
    assert retry_delay(0, initial=0.5, maximum=8.0, retry_after="Wed, 21 Oct 2015 07:28:00 GMT") <= 0.5


# -- construction --------------------------------------------------------------------------------


def test_base_url_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("LAYERLAB_URL", raising=False)
    assert Client().base_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("LAYERLAB_URL", "http://layers.internal:9000/")
    assert Client().base_url == "http://layers.internal:9000"
    assert AsyncClient().base_url == "http://layers.internal:9000"
    assert Client(base_url="http://other:1").base_url == "http://other:1"


def test_base_url_may_be_positional(live_server):
    with Client(live_server) as client:
        assert client.base_url == live_server
        assert client.health() == {"status": "ok"}
    assert AsyncClient(live_server).base_url == live_server
    assert Client(base_url=live_server).base_url == live_server


def test_options_after_the_url_are_keyword_only():
    with pytest.raises(TypeError):
        Client("http://127.0.0.1:8000", "key")  # type: ignore[misc]
    with pytest.raises(TypeError):
        AsyncClient("http://127.0.0.1:8000", "key")  # type: ignore[misc]
    with pytest.raises(ValueError, match="not both"):
        Client(http_client=httpx.Client(), transport=httpx.HTTPTransport())
    with pytest.raises(ValueError, match="max_retries"):
        Client(max_retries=-1)


@pytest.mark.anyio
async def test_async_client_runs_requests_concurrently(app):
    """Native async use: several layers at once on the in-process app."""
    import anyio

    results: dict[int, LayerResult] = {}
    async with AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        async def one(out_features: int) -> None:
            results[out_features] = await client.linear(np.ones((2, 4)), in_features=4, out_features=out_features)

        async with anyio.create_task_group() as group:
            for out_features in (1, 2, 3):
                group.start_soon(one, out_features)
    assert {k: r.output_shape for k, r in results.items()} == {1: (2, 1), 2: (2, 2), 3: (2, 3)}


# -- every kind: the SDK's signature is PyTorch's constructor, the result is torch's -------------

TORCH_CLASSES = {
    "linear": nn.Linear, "conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d,
    "maxpool1d": nn.MaxPool1d, "maxpool2d": nn.MaxPool2d, "maxpool3d": nn.MaxPool3d,
    "avgpool1d": nn.AvgPool1d, "avgpool2d": nn.AvgPool2d, "avgpool3d": nn.AvgPool3d,
    "batchnorm1d": nn.BatchNorm1d, "batchnorm2d": nn.BatchNorm2d, "batchnorm3d": nn.BatchNorm3d,
    "relu": nn.ReLU, "flatten": nn.Flatten,
}
NOT_CONFIG = {"self", "device", "dtype"}
"""Constructor arguments that are no layer config: where the module's tensors live."""


def keywords(function) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if name not in NOT_CONFIG and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "x"}


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_method_signature_is_the_torch_constructor(kind):
    """Same keyword names, same defaults (required ones required), in the same order."""
    ours = keywords(getattr(Client, kind))
    theirs = keywords(TORCH_CLASSES[kind].__init__)
    assert list(ours) == list(theirs)
    assert ours == theirs
    assert inspect.signature(getattr(AsyncClient, kind)) == inspect.signature(getattr(Client, kind))


@pytest.fixture(scope="module")
def served_kinds(app):
    with TestClient(app) as test_client:
        return {item.kind: item for item in Client(http_client=test_client).layers()}


def test_the_server_computes_every_kind_the_sdk_has(served_kinds):
    assert sorted(served_kinds) == sorted(LAYER_KINDS)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_method_keywords_match_the_server_config(kind, served_kinds):
    """Every config field the server takes is a keyword of the method, with the same default."""
    ours = keywords(getattr(Client, kind))
    fields = list(served_kinds[kind].config_schema.get("properties", {}))
    assert [name for name in ours if name in fields] == fields, "a server config field the SDK cannot set"
    for name, default in served_kinds[kind].defaults.items():
        assert ours[name] == (tuple(default) if isinstance(default, list) else default), name


def test_config_holds_what_the_caller_set(sdk):
    """Arguments at PyTorch's default stay out of the body (the server fills them in); others go in."""
    assert _config("linear", {"self": sdk, "x": 1, "in_features": 4, "out_features": 1, "bias": True,
                              "options": {}}) == {"in_features": 4, "out_features": 1}
    assert _config("batchnorm1d", {"num_features": 5, "momentum": None, "eps": 1e-5}) == {
        "num_features": 5, "momentum": None}
    assert _config("maxpool2d", {"kernel_size": 3, "stride": None, "padding": False}) == {
        "kernel_size": 3, "padding": False}
    assert sdk.linear(np.ones((1, 4)), in_features=4, out_features=1, bias=True).config["bias"] is True


# (config, input shape) per kind: small, with non-default options where the kind has them
KIND_CASES = {
    "linear": (dict(in_features=4, out_features=3), (5, 4)),
    "conv1d": (dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1, groups=2), (2, 2, 9)),
    "conv2d": (dict(in_channels=3, out_channels=16, kernel_size=3, stride=2), (2, 3, 12, 16)),
    "conv3d": (dict(in_channels=2, out_channels=3, kernel_size=(1, 2, 2), padding="same", padding_mode="reflect"),
               (1, 2, 3, 4, 5)),
    "maxpool1d": (dict(kernel_size=3, stride=2, padding=1, return_indices=True), (2, 3, 10)),
    "maxpool2d": (dict(kernel_size=(3, 2)), (2, 3, 12, 16)),
    "maxpool3d": (dict(kernel_size=2, ceil_mode=True), (1, 2, 5, 5, 5)),
    "avgpool1d": (dict(kernel_size=3, padding=1, count_include_pad=False), (2, 3, 10)),
    "avgpool2d": (dict(kernel_size=2, divisor_override=3), (2, 3, 6, 8)),
    "avgpool3d": (dict(kernel_size=2, stride=1), (1, 2, 4, 4, 4)),
    "batchnorm1d": (dict(num_features=5), (10, 5)),
    "batchnorm2d": (dict(num_features=3, momentum=None), (2, 3, 2, 2)),
    "batchnorm3d": (dict(num_features=2, affine=False), (2, 2, 3, 3, 3)),
    "relu": ({}, (4, 5)),
    "flatten": (dict(start_dim=1, end_dim=2), (2, 3, 4, 5)),
}


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_every_kind_equals_torch_nn(kind, sdk):
    """The SDK's call on random data equals the torch.nn module with the same parameters."""
    config, shape = KIND_CASES[kind]
    x = rng.standard_normal(shape).astype(np.float32)
    result = getattr(sdk, kind)(x, **config, compare=True)

    with torch.random.fork_rng():
        module = TORCH_CLASSES[kind](**config)
    state = {**result.parameters}
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    module.train()
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    if isinstance(expected, tuple):  # return_indices
        expected, indices = expected
        np.testing.assert_array_equal(result.indices, indices.numpy())
    torch.testing.assert_close(torch.from_numpy(result.output), expected)
    assert result.output_shape == tuple(expected.shape)
    for name, buffer in module.named_buffers():
        torch.testing.assert_close(torch.from_numpy(result.buffers[name]), buffer, check_dtype=False)
    assert result.comparison.allclose


def test_scalar_tensors_keep_their_shape():
    """A 0-d tensor (BatchNorm's num_batches_tracked) is sent with shape [], an int64 as int64."""
    codec = JsonCodec()
    sent = encode(np.int64(3), codec, integers=True)
    assert (sent["shape"], sent["dtype"]) == ([], "int64")
    assert decode({"shape": [], "dtype": "int64", "base64": sent["base64"]}).shape == ()
    assert encode(torch.tensor(2.5), codec)["shape"] == []


@pytest.mark.parametrize("kind", ["batchnorm1d", "batchnorm2d"])
def test_batchnorm_buffers_fed_back_equal_torch_after_steps(kind, sdk):
    """Successive training steps: each call's buffers are the next call's parameters."""
    config, shape = KIND_CASES[kind]
    batches = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    with torch.random.fork_rng():
        module = TORCH_CLASSES[kind](**config)
    buffers: dict = {}
    for x in batches:
        result = getattr(sdk, kind)(x, **config, parameters=buffers)
        buffers = result.buffers
        with torch.no_grad():
            expected = module(torch.from_numpy(x))
        torch.testing.assert_close(torch.from_numpy(result.output), expected)
    for name, buffer in module.named_buffers():
        torch.testing.assert_close(torch.from_numpy(np.asarray(buffers[name])), buffer, check_dtype=False)
    assert int(buffers["num_batches_tracked"]) == 3


# -- stacks --------------------------------------------------------------------------------------


def test_shapes_of_the_notebook_conv2d(sdk):
    result = sdk.shapes((100, 3, 120, 160), [layer("conv2d", in_channels=3, out_channels=16, kernel_size=3, stride=2),
                                             layer("maxpool2d", kernel_size=(3, 2))])
    assert result.output_shape == (100, 16, 19, 39)
    assert [row["output_shape"] for row in result.layers] == [[100, 16, 59, 79], [100, 16, 19, 39]]
    assert result.layers[0]["parameters"]["weight"] == [16, 3, 3, 3]


def test_sequential_equals_nn_sequential(sdk):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    stack = [layer("linear", in_features=4, out_features=3), layer("relu"), layer("linear", in_features=3, out_features=2)]
    result = sdk.sequential(stack, x, seed=5, return_intermediates=True)

    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    torch.testing.assert_close(torch.from_numpy(result.output), expected)
    torch.testing.assert_close(torch.from_numpy(result.layers[0].parameters["weight"]), model[0].weight.detach())
    assert [i.shape for i in result.intermediates] == [(6, 3), (6, 3), (6, 2)]

    # the parameters a layer carries are the ones used
    weight = np.eye(2, 3, dtype=np.float32)
    stack[2] = layer("linear", in_features=3, out_features=2, parameters={"weight": weight, "bias": np.zeros(2)})
    again = sdk.sequential(stack, x, seed=5)
    torch.testing.assert_close(torch.from_numpy(again.output), torch.from_numpy(result.intermediates[1][:, :2]))


def test_api_key_from_argument_or_environment(in_process, monkeypatch):
    """With keys set on the server, the SDK authenticates (argument, then $LAYERLAB_API_KEY); else a typed 401."""
    from app.client import AuthenticationError

    guarded = create_app(Settings(api_key="old-key,new-key"))
    x = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(AuthenticationError) as info:
        in_process(guarded).linear(x, in_features=4, out_features=1)
    assert info.value.status == 401 and "old-key" not in str(info.value)
    assert in_process(guarded, api_key="new-key").linear(x, in_features=4, out_features=1).output_shape == (2, 1)
    monkeypatch.setenv("LAYERLAB_API_KEY", "old-key")
    assert in_process(guarded).health()["status"] == "ok"
    assert in_process(guarded).layers()
    with pytest.raises(AuthenticationError):
        in_process(guarded, api_key="wrong").layers()
