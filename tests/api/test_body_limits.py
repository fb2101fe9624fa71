"""Large msgpack bodies: read into one buffer sized by Content-Length (app.api.body_limits.read_body_buffer),
their big bins then read in place (app.codec.msgpack.unpack_request_views), with msgpack's own parser and
errors for anything else."""

import asyncio

import msgpack
import numpy as np
import pytest
import torch
from starlette.requests import Request

from app.codec import msgpack as wire
from app.api.body_limits import PREALLOCATE_BYTES, read_body_buffer
from app.codec.bodies import decode_body
from app.config import Settings
from app.errors import BadRequest, ClientGone, PayloadTooLarge

MSGPACK = {"content-type": "application/msgpack"}
BIG = PREALLOCATE_BYTES // 4 + 1
"""float32 elements: a tensor just over PREALLOCATE_BYTES."""


def request(chunks: list[bytes], content_length: int | None, disconnect: bool = False) -> tuple[Request, list[int]]:
    """A Starlette request whose body arrives in `chunks`; the list counts the receive calls."""
    headers = [(b"content-type", b"application/msgpack")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    calls = [0]

    async def receive():
        calls[0] += 1
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive), calls


def read(req: Request, **settings) -> memoryview:
    return asyncio.run(read_body_buffer(req, Settings(**settings)))


def test_a_large_body_lands_in_one_buffer_of_its_declared_size():
    body = np.random.default_rng(0).integers(0, 256, PREALLOCATE_BYTES + 12345, dtype=np.uint8).tobytes()
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    got = read(request(chunks, len(body))[0])
    assert isinstance(got, memoryview) and not got.readonly and got.nbytes == len(body)
    assert bytes(got) == body


@pytest.mark.parametrize("size", [0, 10, PREALLOCATE_BYTES - 1])
def test_small_bodies_and_bodies_without_a_length_are_read_as_before(size):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for length in (size, None):
        got = read(request([body[: size // 2], body[size // 2:]], length)[0])
        assert bytes(got) == body


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    req, calls = request([b"x" * 100], 2 * PREALLOCATE_BYTES)
    with pytest.raises(PayloadTooLarge):
        read(req, max_body_bytes=PREALLOCATE_BYTES)
    assert calls[0] == 0


def test_a_body_without_a_length_is_capped_as_it_streams():
    chunk = b"x" * 65536
    req, calls = request([chunk] * 40, None)
    with pytest.raises(PayloadTooLarge):
        read(req, max_body_bytes=20 * 65536)
    assert calls[0] == 21  # refused at the first piece past the limit, not after the whole body


def test_a_body_longer_than_its_content_length_is_refused():
    with pytest.raises(BadRequest, match="longer than its Content-Length"):
        read(request([b"x" * PREALLOCATE_BYTES, b"y"], PREALLOCATE_BYTES)[0])


def test_a_short_body_is_what_arrived_and_a_disconnect_is_client_gone():
    got = read(request([b"x" * PREALLOCATE_BYTES], PREALLOCATE_BYTES + 10)[0])
    assert got.nbytes == PREALLOCATE_BYTES
    with pytest.raises(ClientGone):
        read(request([b"x" * 1000], PREALLOCATE_BYTES + 10, disconnect=True)[0])


# -- decoding in place ---------------------------------------------------------------------------


@pytest.mark.parametrize("single_float", [False, True])
def test_big_bins_are_views_of_the_body_and_the_rest_is_what_msgpack_reads(single_float):
    x = np.random.default_rng(1).standard_normal(BIG).astype(np.float32)
    value = {"config": {"in_features": 5, "out_features": 3, "bias": True, "eps": 1e-5, "name": "é" * 40, "none": None,
                        "ints": [0, 127, 128, 255, 256, 65536, 2**32, -1, -32, -33, -129, -2**31 - 1, 2**64 - 1]},
             "input": {"shape": [BIG], "dtype": "float32", "bytes": x.tobytes()}, "small": b"\x00\x01",
             "nested": [[1, 2], {"a": []}], "f": 1.5}
    body = bytearray(msgpack.packb(value, use_bin_type=True, use_single_float=single_float))
    ours = wire.unpack_request_views(body)
    theirs = msgpack.unpackb(bytes(body), raw=False, strict_map_key=True)
    assert isinstance(ours["input"]["bytes"], memoryview) and ours["input"]["bytes"].obj is body
    assert type(ours["small"]) is bytes
    assert {**ours, "input": {**ours["input"], "bytes": bytes(ours["input"]["bytes"])}} == theirs


@pytest.mark.parametrize("value", [
    {"a": [1.0, True]},                                  # a boolean inside an array
    {"a": 1, 2: "b"},                                    # a key that is not a string
    {"a": list(range(2000))},                            # a body of many values (number lists)
    {"a": msgpack.ExtType(1, b"x")},                     # a type the view reader does not read
])
def test_anything_but_tensors_as_bins_is_left_to_msgpack(value):
    with pytest.raises(wire.NotPlain):
        wire.unpack_request_views(msgpack.packb(value, use_bin_type=True))


def test_malformed_bodies_are_left_to_msgpack():
    body = wire.packb({"input": wire.tensor(np.zeros(BIG, np.float32))})
    for broken in (body[:-1], body + b"\x00", b"\xc1" + body):
        with pytest.raises(wire.NotPlain):
            wire.unpack_request_views(broken)


def test_decode_body_reads_a_big_tensor_in_place():
    x = np.random.default_rng(2).standard_normal(BIG).astype(np.float32)
    buffer = memoryview(np.frombuffer(bytearray(wire.packb({"input": wire.tensor(x)})), np.uint8))
    value = decode_body(buffer, "msgpack")
    assert isinstance(value["input"]["bytes"], memoryview)
    np.testing.assert_array_equal(wire.array(value["input"]), x)


def big_linear(client, body: dict) -> dict:
    response = client.post("/v1/layers/linear", content=wire.packb(body), headers=MSGPACK)
    return {"status": response.status_code, **(response.json() if response.status_code != 200 else
                                               {"value": wire.unpackb(response.content)})}


def test_a_big_msgpack_request_computes_as_torch(client):
    x = np.random.default_rng(3).standard_normal((BIG // 64 + 1, 64)).astype(np.float32)
    weight = np.random.default_rng(4).standard_normal((8, 64)).astype(np.float32)
    out = big_linear(client, {"config": {"in_features": 64, "out_features": 8, "bias": False},
                              "input": wire.tensor(x), "parameters": {"weight": wire.tensor(weight)}})
    assert out["status"] == 200, out
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight))
    torch.testing.assert_close(torch.from_numpy(wire.array(out["value"]["output"]).copy()), expected)


@pytest.mark.parametrize("extra,status,field,words", [
    ({"parameters": {"bias": [True, 1.0, 2.0]}}, 422, "body", ["boolean"]),
    ({"input": {"shape": [1, 64], "dtype": "float32", "bytes": b"\x00" * (4 * BIG)}}, 422, "input.bytes", ["needs 256"]),
    ({"input": {"shape": [BIG // 64 + 1, 64], "dtype": "float32", "bytes": "x" * (4 * BIG)}}, 422, "input.bytes", ["binary"]),
])
def test_big_bodies_keep_the_same_errors(client, extra, status, field, words):
    x = np.zeros((BIG // 64 + 1, 64), np.float32)
    out = big_linear(client, {"config": {"in_features": 64, "out_features": 3}, "input": wire.tensor(x), **extra})
    assert out["status"] == status and out["field"] == field and all(w in out["detail"] for w in words), out


def test_big_malformed_msgpack_is_a_400(client):
    body = wire.packb({"config": {"in_features": 64, "out_features": 3}, "input": wire.tensor(np.zeros(BIG, np.float32))})
    for content in (body[:-1], msgpack.packb({1: 2, "input": b"\x00" * (4 * BIG)}, use_bin_type=True)):
        response = client.post("/v1/layers/linear", content=content, headers=MSGPACK)
        assert response.status_code == 400 and "not valid msgpack" in response.json()["detail"], response.text


@pytest.mark.parametrize("misplaced", [{"shape": "bin"}, {"dtype": "bin"}])
def test_a_misplaced_big_bin_is_quoted_as_a_small_one_is(client, misplaced):
    """A big body's bins are views of it; an error quotes one as bytes, as it quotes a small body's."""
    quotes = []
    for size in (4 * BIG, 64):  # the big-body path, then msgpack's own parser
        x = np.zeros((BIG // 64 + 1, 64) if size > 64 else (1, 64), np.float32)
        tensor = wire.tensor(x) | {key: b"\x01" * size for key in misplaced}
        out = big_linear(client, {"config": {"in_features": 64, "out_features": 3}, "input": tensor})
        assert out["status"] == 422 and "memory at" not in str(out), out
        quotes.append(out.get("actual"))
    assert quotes[0] == quotes[1] and str(quotes[0]).startswith("b'\\x01"), quotes
