"""The binary transport (application/msgpack, tensors as raw bytes) and Accept negotiation."""

import base64

import msgpack
import numpy as np
import pytest
import torch

from app.codec import msgpack as wire
from app.api.negotiation import response_format
from tests.live_server import live_server

MSGPACK = {"content-type": "application/msgpack"}
CONFIG = {"in_features": 5, "out_features": 3}


def awkward_values(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    """Random values plus the ones a lossy codec would get wrong: -0.0, subnormals, extremes, NaN, ±inf."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    info = np.finfo(dtype)
    flat = x.reshape(-1)
    flat[:7] = [-0.0, info.smallest_subnormal, -info.smallest_subnormal, info.max, info.tiny, np.nan, np.inf]
    flat[7] = -np.inf
    return x


def post_msgpack(client, body: dict, headers: dict | None = None, status: int = 200):
    response = client.post("/v1/layers/linear", content=wire.packb(body), headers={**MSGPACK, **(headers or {})})
    assert response.status_code == status, response.text
    return response


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_msgpack_round_trips_tensors_bit_exactly(client, dtype):
    x = awkward_values((4, 6, 5), dtype, seed=1)
    weight = awkward_values((3, 5), dtype, seed=2)
    bias = np.array([0.5, -0.0, 1e-30], dtype=dtype)
    body = wire.unpackb(post_msgpack(client, {"config": CONFIG, "input": wire.tensor(x),
                                               "parameters": {"weight": wire.tensor(weight), "bias": wire.tensor(bias)}}).content)
    # The parameters come back as the very bytes sent; the output as torch computes it.
    assert wire.array(body["parameters"]["weight"]).tobytes() == weight.tobytes()
    assert wire.array(body["parameters"]["bias"]).tobytes() == bias.tobytes()
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias)).numpy()
    out = wire.array(body["output"])
    assert body["output"]["dtype"] == dtype and out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out, expected)  # NaN where torch has NaN, bit-equal elsewhere


def test_msgpack_output_is_the_same_bytes_as_base64_and_lists(client):
    x = np.random.default_rng(3).standard_normal((7, 5)).astype(np.float32)
    request = {"config": CONFIG, "seed": 4}
    packed = wire.array(wire.unpackb(post_msgpack(client, {**request, "input": wire.tensor(x)}).content)["output"])
    json_body = {**request, "input": {"base64": base64.b64encode(x.tobytes()).decode(), "shape": [7, 5]}}
    from_base64 = client.post("/v1/layers/linear", json={**json_body, "encoding": "base64"}).json()["output"]
    from_lists = client.post("/v1/layers/linear", json=json_body).json()["output"]
    assert packed.tobytes() == base64.b64decode(from_base64["base64"])
    assert packed.tobytes() == np.array(from_lists["data"], dtype=np.float32).tobytes()


@pytest.mark.parametrize("content_type,accept,expected", [
    ("application/msgpack", None, "application/msgpack"),
    ("application/json", None, "application/json"),
    ("application/msgpack", "application/json", "application/json"),
    ("application/json", "application/msgpack", "application/msgpack"),
    ("application/json", "application/json;q=0.5, application/msgpack", "application/msgpack"),
    ("application/msgpack", "application/msgpack;q=0.2, application/json;q=0.9", "application/json"),
    ("application/msgpack", "*/*", "application/msgpack"),
    ("application/json", "application/json, application/msgpack", "application/json"),
    ("application/x-msgpack", "text/html", "application/msgpack"),
])
def test_accept_chooses_the_response_transport(client, content_type, accept, expected):
    x = np.ones((2, 5), dtype=np.float32)
    if "msgpack" in content_type:
        content = wire.packb({"config": CONFIG, "input": wire.tensor(x)})
    else:
        import orjson
        content = orjson.dumps({"config": CONFIG, "input": x.tolist()})
    headers = {"content-type": content_type, **({"accept": accept} if accept else {})}
    response = client.post("/v1/layers/linear", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == expected
    body = wire.unpackb(response.content) if expected == "application/msgpack" else response.json()
    output = body["output"]
    if expected == "application/msgpack":
        assert set(output) == {"shape", "dtype", "bytes"} and wire.array(output).shape == (2, 3)
    else:
        assert np.array(output["data"]).shape == (2, 3)


def test_response_format_parsing():
    assert response_format(None, "json") == "json"
    assert response_format("application/msgpack;q=0", "json") == "json"
    assert response_format("application/vnd.msgpack;q=0.8, application/json;q=0.1", "json") == "msgpack"
    assert response_format("application/json;q=oops, application/msgpack", "json") == "msgpack"


def test_msgpack_encoding_none_gives_summaries(client):
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    body = wire.unpackb(post_msgpack(client, {"config": CONFIG, "input": wire.tensor(x), "encoding": "none"}).content)
    assert set(body["output"]) == {"shape", "dtype", "summary"} and body["output"]["shape"] == [2, 3]


def test_json_request_with_lists_and_random_forms_in_msgpack(client):
    body = wire.unpackb(post_msgpack(client, {"config": CONFIG, "input": [[1.0, 2, 3.5, -4.0, 0.0]],
                                               "parameters": {"weight": {"random": "uniform", "shape": [3, 5]}}}).content)
    assert body["output"]["shape"] == [1, 3]


@pytest.mark.parametrize("content,status,field,words", [
    (b"\x81\xa6config", 400, "body", ["not valid msgpack"]),              # truncated map
    (b"\xc1", 400, "body", ["not valid msgpack"]),                        # the one byte msgpack never uses
    (b"", 400, "body", ["empty"]),
    (wire.packb([1, 2]), 422, "body", ["msgpack map"]),
    (wire.packb({"config": CONFIG, "input": {"shape": [2, 5], "dtype": "float32", "bytes": b"\x00" * 39}}),
     422, "input.bytes", ["39 bytes", "needs 40"]),
    (wire.packb({"config": CONFIG, "input": {"shape": [2, 5], "dtype": "float64", "bytes": b"\x00" * 40}}),
     422, "input.bytes", ["40 bytes", "needs 80"]),
    (wire.packb({"config": CONFIG, "input": wire.tensor(np.ones((1, 5), np.float32)),
                 "parameters": {"bias": {"shape": [3], "bytes": b"\x00" * 4}}}), 422, "parameters.bias.bytes", ["needs 12"]),
    (wire.packb({"config": CONFIG, "input": {"shape": [1, 5], "bytes": "not binary"}}), 422, "input.bytes", ["binary"]),
    (wire.packb({"config": CONFIG, "input": [[1.0, True, 2.0, 3.0, 4.0]]}), 422, "body", ["boolean"]),
    (msgpack.packb({"config": CONFIG, 1: 2}), 400, "body", ["not valid msgpack"]),  # non-string key
])
def test_msgpack_errors_are_clear_4xx(client, content, status, field, words):
    response = client.post("/v1/layers/linear", content=content, headers=MSGPACK)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"  # errors always use the JSON envelope
    body = response.json()
    assert body["field"] == field and all(w in body["detail"] for w in words), body


def test_bytes_form_in_a_json_body_points_to_base64(client):
    response = client.post("/v1/layers/linear", json={"config": CONFIG, "input": {"shape": [1, 5], "bytes": "AAAA"}})
    assert response.status_code == 422 and response.json()["field"] == "input.bytes"
    assert "base64" in response.json()["detail"]


def test_unknown_content_type_names_both_transports(client):
    response = client.post("/v1/layers/linear", content=b"x", headers={"content-type": "application/octet-stream"})
    assert response.status_code == 415
    assert response.json()["expected"] == ["application/json", "application/msgpack"]


@pytest.mark.parametrize("nbytes", [0, 1, 255, 256, 65535, 65536, 200_000])
def test_pack_writes_what_msgpack_writes(nbytes):
    """Our bin headers and chunking give exactly msgpack's own bytes, for every bin size class."""
    array = np.arange(nbytes, dtype=np.uint8)
    value = {"a": {"shape": [nbytes], "bytes": array}, "list": [1, {"x": array[:3]}], "n": None, "f": 1.5, "s": "é"}
    reference = msgpack.packb({**value, "a": {"shape": [nbytes], "bytes": array.tobytes()},
                               "list": [1, {"x": array[:3].tobytes()}]}, use_bin_type=True)
    assert wire.packb(value) == reference
    chunks = wire.pack(value)
    assert sum(memoryview(c).nbytes for c in chunks) == len(reference)


def test_pack_writes_big_endian_arrays_as_little_endian():
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    assert wire.array(wire.unpackb(wire.packb(wire.tensor(x)))).tolist() == x.tolist()


def test_msgpack_over_a_real_server_in_chunks():
    """The response is sent as memoryviews of the arrays (no join): check it through uvicorn's httptools."""
    import httpx

    x = np.random.default_rng(5).standard_normal((300, 64)).astype(np.float32)  # ~77 KB in, ~300 KB out
    with live_server("--http", "httptools") as url:
        response = httpx.post(f"{url}/v1/layers/linear", headers=MSGPACK, timeout=30,
                              content=wire.packb({"config": {"in_features": 64, "out_features": 256}, "input": wire.tensor(x)}))
    assert response.status_code == 200 and int(response.headers["content-length"]) == len(response.content)
    body = wire.unpackb(response.content)
    weight, bias = (torch.from_numpy(wire.array(body["parameters"][k]).copy()) for k in ("weight", "bias"))
    expected = torch.nn.functional.linear(torch.from_numpy(x), weight, bias)
    np.testing.assert_array_equal(wire.array(body["output"]), expected.numpy())


def test_sequential_and_shapes_speak_msgpack_too(client):
    x = np.random.default_rng(6).standard_normal((3, 4)).astype(np.float32)
    weight = np.random.default_rng(7).standard_normal((2, 4)).astype(np.float32)
    layers = [{"kind": "linear", "config": {"in_features": 4, "out_features": 2, "bias": False},
               "parameters": {"weight": wire.tensor(weight)}}, {"kind": "relu"}]
    response = client.post("/v1/sequential", content=wire.packb({"layers": layers, "input": wire.tensor(x)}),
                           headers=MSGPACK)
    assert response.status_code == 200 and response.headers["content-type"] == "application/msgpack", response.text
    body = wire.unpackb(response.content)
    expected = torch.relu(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight)))
    np.testing.assert_array_equal(wire.array(body["output"]), expected.numpy())
    assert wire.array(body["layers"][0]["parameters"]["weight"]).tobytes() == weight.tobytes()
    response = client.post("/v1/shapes", content=wire.packb({"input_shape": [3, 4], "layers": [
        {"kind": "linear", "config": {"in_features": 4, "out_features": 2}}]}), headers=MSGPACK)
    assert response.status_code == 200 and wire.unpackb(response.content)["output_shape"] == [3, 2]


def test_pack_frees_the_arrays_at_once():
    """No reference cycle holds the chunks: a 30 MB output is freed when its response is, not
    whenever the cyclic GC next runs (a recursive closure in pack once kept ~57 MB per request)."""
    import gc
    import weakref

    gc.disable()
    try:
        array = np.ones(1 << 20, np.float32)
        alive = weakref.ref(array)
        chunks = wire.pack({"output": wire.tensor(array), "layers": [{"output": wire.tensor(array)}]})
        assert sum(memoryview(c).nbytes for c in chunks) > 2 * array.nbytes
        del array, chunks
        assert alive() is None
    finally:
        gc.enable()
