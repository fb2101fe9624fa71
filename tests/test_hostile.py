"""The hostile-input corpus, sent byte for byte to a real uvicorn subprocess on 127.0.0.1.

Each request gets its 4xx with a clear body in the error envelope (a few unusual but valid
inputs get their 200 and the right value); the server answers /healthz after every one; and its
resident memory (VmRSS from /proc) comes back near where it was. A second test sends monster
requests to a fresh server and checks that its peak memory (VmHWM) does not move: refused
before allocation, with a control request that shows the measurement would have seen it."""

import json
import math
import socket
from dataclasses import dataclass, field

import orjson
import pytest

from tests.live_server import ServerProcess, exchange, raw_request

MiB = 1024  # /proc reports KiB
CONFIG = b'"config": {"in_features": 4, "out_features": 1}'
ROW = b"[[0.1, 0.2, 0.3, 0.4]]"


def layer(input_json: bytes, extra: bytes = b"") -> bytes:
    return b"{" + CONFIG + b', "input": ' + input_json + extra + b"}"


def tensor(form: dict) -> bytes:
    return layer(json.dumps(form).encode())


@dataclass
class Case:
    name: str
    body: bytes
    status: int
    error: str | None = None
    """The envelope's `error`; None: any."""
    detail: str | None = None
    """A fragment the envelope's `detail` must contain."""
    path: bytes = b"/v1/layers/linear"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    envelope: bool = True


DEEP = 100_000
CORPUS = [
    # Malformed and truncated JSON.
    Case("missing closing brace", layer(ROW)[:-1], 400, "BadRequest", "not valid JSON"),
    Case("truncated inside a number", layer(ROW)[:60], 400, "BadRequest", "not valid JSON"),
    Case("truncated after a key", b'{"config"', 400, "BadRequest"),
    Case("trailing garbage", layer(ROW) + b" xyz", 400, "BadRequest"),
    Case("trailing comma", b"{" + CONFIG + b', "input": [[1, 2, 3, 4,]]}', 400, "BadRequest"),
    Case("single quotes", b"{'config': {}}", 400, "BadRequest"),
    Case("not JSON at all", b"hello", 400, "BadRequest"),
    Case("invalid UTF-8", b'{"config": "\xff\xfe"}', 400, "BadRequest"),
    Case("lone surrogate escape", b'{"config": {"\\ud800": 1}, "input": [[1]]}', 400, "BadRequest"),
    Case("byte-order mark", b"\xef\xbb\xbf" + layer(ROW), 400, "BadRequest"),
    Case("a JSON array, not an object", b"[1, 2]", 422, "InvalidInput", "JSON object"),
    Case("a JSON string", b'"linear"', 422, "InvalidInput"),
    Case("JSON null", b"null", 422, "InvalidInput"),
    # Nesting.
    Case("arrays nested 100,000 deep as the body", b"[" * DEEP + b"]" * DEEP, 413, "PayloadTooLarge", "1024"),
    Case("objects nested 100,000 deep", b'{"a":' * DEEP + b"1" + b"}" * DEEP, 413, "PayloadTooLarge", "1024"),
    Case("input nested 100,000 deep", layer(b"[" * DEEP + b"1" + b"]" * DEEP), 413, "PayloadTooLarge"),
    Case("input nested 1,000 deep", layer(b"[" * 1000 + b"1" + b"]" * 1000), 413, "PayloadTooLarge", "64"),
    Case("config nested 1,000 deep", b'{"config": ' + b"[" * 1000 + b"]" * 1000 + b', "input": [[1]]}', 422,
         "InvalidInput"),
    # Numbers JSON cannot hold, and the non-finite tokens.
    Case("10^400 in a tensor", layer(b"[[1e400, 0, 0, 0]]"), 400, "BadRequest", "infinity"),
    Case("-10^400 in a tensor", layer(b"[[-1e400, 0, 0, 0]]"), 400, "BadRequest"),
    Case("10^400 as in_features", b'{"config": {"in_features": 1e400, "out_features": 1}, "input": [[1]]}', 400),
    Case("NaN token", layer(b"[[NaN, 0, 0, 0]]"), 400, "BadRequest", '"NaN"'),
    Case("Infinity token", layer(b"[[Infinity, 0, 0, 0]]"), 400, "BadRequest", '"Infinity"'),
    Case("-Infinity token", layer(b"[[-Infinity, 0, 0, 0]]"), 400, "BadRequest"),
    Case("nan token", layer(b"[[nan, 0, 0, 0]]"), 400, "BadRequest"),
    Case("in_features 2^63", b'{"config": {"in_features": 9223372036854775808, "out_features": 1}, "input": [[1]]}',
         413, "PayloadTooLarge", "LAYERLAB_MAX_PARAMETER_ELEMENTS"),
    Case("in_features 10^30", b'{"config": {"in_features": 1000000000000000000000000000000, "out_features": 1}, '
         b'"input": [[1]]}', 422, "InvalidInput", "config.in_features"),
    # Values inside tensors that are not numbers.
    Case("a string in a tensor", layer(b'[[0.1, "abc", 0.3, 0.4]]'), 422, "InvalidInput", "'abc'"),
    Case("a lowercase 'nan' string", layer(b'[[0.1, "nan", 0.3, 0.4]]'), 422, "InvalidInput"),
    Case("a boolean in a tensor", layer(b"[[0.1, true, 0.3, 0.4]]"), 422, "InvalidInput", "boolean"),
    Case("null in a tensor", layer(b"[[0.1, null, 0.3, 0.4]]"), 422, "InvalidInput", "null"),
    Case("an object in a tensor", layer(b'[[0.1, {"a": 1}, 0.3, 0.4]]'), 422, "InvalidInput"),
    Case("a ragged tensor", layer(b"[[0.1, 0.2, 0.3, 0.4], [1]]"), 422, "ShapeMismatch", "ragged"),
    Case("input is a bare number (a 0-d tensor)", layer(b"4"), 422, "ShapeMismatch"),
    Case("input is a string", layer(b'"[[1,2,3,4]]"'), 422, "InvalidInput"),
    # Empty tensors: torch computes on a zero batch, but Linear(4, 1) needs 4 features in the last dimension.
    Case("empty array", layer(b"[]"), 422, "ShapeMismatch", "0 features"),
    Case("array of an empty array", layer(b"[[]]"), 422, "ShapeMismatch", "0 features"),
    Case("empty data with shape [0]", tensor({"data": [], "shape": [0]}), 422, "ShapeMismatch", "0 features"),
    # Shapes.
    Case("shape with a zero feature dimension", tensor({"random": "normal", "shape": [4, 0]}), 422, "ShapeMismatch",
         "0 features"),
    Case("shape with a negative", tensor({"random": "normal", "shape": [-3, 4]}), 422, "InvalidInput", "negative"),
    Case("shape with 2^63", tensor({"random": "normal", "shape": [2**63, 4]}), 413, "PayloadTooLarge",
         "LAYERLAB_MAX_TENSOR_ELEMENTS"),
    Case("shape with 2^64 (a float to JSON parsers)", layer(b'{"random": "normal", "shape": [18446744073709551616, 4]}'),
         422, "InvalidInput", "integers"),
    Case("shape with a float", layer(b'{"random": "normal", "shape": [2.0, 4]}'), 422, "InvalidInput", "integers"),
    Case("shape with a boolean", layer(b'{"random": "normal", "shape": [true, 4]}'), 422, "InvalidInput"),
    Case("shape of 100,000 dimensions", tensor({"random": "normal", "shape": [1] * 100_000}), 413,
         "PayloadTooLarge", "LAYERLAB_MAX_JSON_DEPTH"),
    Case("random input of 10^12 elements", tensor({"random": "normal", "shape": [10**6, 10**6]}), 413,
         "PayloadTooLarge", "1000000000000"),
    Case("random seed 2^64", tensor({"random": "normal", "shape": [1, 4], "seed": 2**64}), 422, "InvalidInput"),
    Case("unknown distribution", tensor({"random": "cauchy", "shape": [1, 4]}), 422, "InvalidInput", "cauchy"),
    # base64.
    Case("base64 garbage of the right length", tensor({"base64": "!!!!" * 4 + "!!!!==", "shape": [1, 4]}), 422),
    Case("base64 of the wrong length", tensor({"base64": "AAAA", "shape": [1, 4]}), 422, "ShapeMismatch", "characters"),
    Case("base64 with bad padding", tensor({"base64": "AAAAAAAAAAAAAAAAAAAAAA=A", "shape": [1, 4]}), 422),
    Case("base64 with a newline", tensor({"base64": "AAAAAAAAAAA\nAAAAAAAAAA==", "shape": [1, 4]}), 422),
    Case("base64, URL-safe alphabet", tensor({"base64": "-_-_-_-_-_-_-_-_-_-_-_==", "shape": [1, 4]}), 422),
    Case("base64 of non-ASCII", tensor({"base64": "ÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀ==", "shape": [1, 4]}), 422),
    Case("base64 as a number", tensor({"base64": 12, "shape": [1, 4]}), 422),
    Case("base64 of 10^12 elements", tensor({"base64": "AAAAAAAA", "shape": [10**6, 10**6]}), 413, "PayloadTooLarge"),
    # dtypes.
    Case("dtype float16", tensor({"data": [[1, 2, 3, 4]], "dtype": "float16"}), 422, "InvalidInput", "float16"),
    Case("dtype complex64", tensor({"data": [[1, 2, 3, 4]], "dtype": "complex64"}), 422, "InvalidInput"),
    Case("dtype int8", tensor({"random": "normal", "shape": [1, 4], "dtype": "int8"}), 422, "InvalidInput"),
    Case("dtype as a path", tensor({"data": [[1, 2, 3, 4]], "dtype": "../../etc/passwd"}), 422, "InvalidInput"),
    Case("dtype as a number", tensor({"data": [[1, 2, 3, 4]], "dtype": 32}), 422, "InvalidInput"),
    # The kind: unicode and path tricks.
    Case("kind ..%2F..%2Fhealthz", layer(ROW), 404, path=b"/v1/layers/..%2F..%2Fhealthz"),
    Case("kind %2e%2e", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/%2e%2e"),
    Case("dot segments in the path", layer(ROW), 404, "NotFound", path=b"/v1/layers/../layers/linear"),
    Case("kind with a NUL", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/linear%00"),
    Case("kind in capitals", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/LINEAR"),
    Case("kind with an accent", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/lin%C3%A9ar"),
    Case("kind in fullwidth letters", layer(ROW), 404, "UnknownKind",
         path=b"/v1/layers/%EF%BD%8C%EF%BD%89%EF%BD%8E%EF%BD%85%EF%BD%81%EF%BD%92"),
    Case("kind as an emoji", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/%F0%9F%98%80"),
    Case("kind of invalid UTF-8", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/%ff%fe"),
    Case("kind with a parameter", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/linear;x=1"),
    Case("kind of 10,000 characters", layer(ROW), 404, "UnknownKind", path=b"/v1/layers/" + b"a" * 10_000),
    Case("raw UTF-8 in the request line (refused by the HTTP parser)", layer(ROW), 400,
         path="/v1/layers/ｌｉｎｅａｒ".encode(), envelope=False),
    # Duplicate keys.
    Case("duplicate top-level key", b"{" + CONFIG + b", " + CONFIG + b', "input": [[1, 2, 3, 4]]}', 400,
         "BadRequest", "'config'"),
    Case("duplicate key in the config",
         b'{"config": {"in_features": 4, "in_features": 5, "out_features": 1}, "input": [[1, 2, 3, 4]]}', 400,
         "BadRequest", "'in_features'"),
    Case("duplicate key in a tensor form", layer(b'{"random": "normal", "shape": [1, 4], "shape": [2, 4]}'), 400,
         "BadRequest", "'shape'"),
    Case("duplicate key next to 1,000-deep nesting",
         b'{"config": ' + b"[" * 1000 + b"]" * 1000 + b', "config": 1, "input": [[1]]}', 413, "PayloadTooLarge"),
    Case("an object hidden after a number in a tensor", layer(b'[[0.1, {"a": 1}, 0.3, 0.4]]'), 422, "InvalidInput"),
    # Whitespace and content types.
    Case("5 MB of whitespace", b" \n\t\r" * (5 * 2**20 // 4), 400, "BadRequest", "empty"),
    Case("empty body", b"", 400, "BadRequest", "empty"),
    Case("text/plain", layer(ROW), 415, "UnsupportedMediaType", headers={"Content-Type": "text/plain"}),
    Case("form-urlencoded", b"config=1", 415, "UnsupportedMediaType",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Case("multipart", b"--x\r\n\r\n--x--", 415, "UnsupportedMediaType",
         headers={"Content-Type": "multipart/form-data; boundary=x"}),
    Case("application/xml", b"<config/>", 415, "UnsupportedMediaType", headers={"Content-Type": "application/xml"}),
    Case("UTF-16 JSON", layer(ROW).decode().encode("utf-16"), 400, "BadRequest",
         headers={"Content-Type": "application/json; charset=utf-16"}),
    # The request's other fields.
    Case("unknown top-level field", layer(ROW, b', "device": "tpu:0"'), 422, "InvalidInput", "device"),
    Case("config is a list", b'{"config": [4, 1], "input": [[1, 2, 3, 4]]}', 422, "InvalidInput", "config"),
    Case("in_features as a string", b'{"config": {"in_features": "4", "out_features": 1}, "input": [[1, 2, 3, 4]]}',
         422, "InvalidInput", "config.in_features"),
    Case("negative out_features", b'{"config": {"in_features": 4, "out_features": -1}, "input": [[1, 2, 3, 4]]}',
         422, "InvalidInput", "config.out_features"),
    Case("unknown backend", layer(ROW, b', "backend": "cuda"'), 422, "InvalidInput", "backend"),
    Case("unknown encoding", layer(ROW, b', "encoding": "xml"'), 422, "InvalidInput", "encoding"),
    Case("parameters of an unknown name", layer(ROW, b', "parameters": {"../weight": [[1]]}'), 422, "InvalidInput"),
    Case("a monster layer", b'{"config": {"in_features": 1000000, "out_features": 1000000}, "input": [[1]]}', 413,
         "PayloadTooLarge", "LAYERLAB_MAX_PARAMETER_ELEMENTS"),
    # Unusual but valid: the right answer, not an error.
    Case("-0.0 and subnormals", b'{"config": {"in_features": 4, "out_features": 1, "bias": false}, '
         b'"input": {"data": [[-0.0, 5e-324, 2.2250738585072014e-308, 1e-310]], "dtype": "float64"}, '
         b'"parameters": {"weight": [[1, 0, 0, 0]]}}', 200),
    Case("the strings NaN and Infinity", layer(b'[["NaN", "Infinity", "-Infinity", 0]]'), 200),
    Case("a valid body inside 5 MB of whitespace", b" " * (5 * 2**20) + layer(ROW) + b"\n" * 1000, 200),
]


def check(server: ServerProcess, case: Case) -> str | None:
    """None when the server answered as it should; else what went wrong."""
    status, headers, body = exchange(server.port, "POST", case.path, case.body, case.headers)
    if status != case.status:
        return f"status {status}, expected {case.status}: {body[:300]!r}"
    if status != 200 and case.envelope:
        if not headers.get("content-type", "").startswith("application/json"):
            return f"content type {headers.get('content-type')!r}"
        envelope = orjson.loads(body)
        if envelope.get("status") != status or not isinstance(envelope.get("detail"), str) or not envelope["detail"]:
            return f"not the error envelope: {envelope}"
        if case.error and envelope.get("error") != case.error:
            return f"error {envelope.get('error')!r}, expected {case.error!r}: {envelope['detail']}"
        if case.detail and case.detail not in envelope["detail"]:
            return f"detail lacks {case.detail!r}: {envelope['detail']}"
        if len(body) > 4096:
            return f"error body of {len(body)} bytes: it echoes too much"
    health, _, _ = exchange(server.port, "GET", "/healthz")
    if health != 200:
        return f"/healthz answered {health} afterwards"
    return None


ODD_VALUES = [-0.0, 5e-324, 2.2250738585072014e-308, 1e-310]  # negative zero, subnormals (float64)


@pytest.mark.parametrize("row, weight", [
    ([-0.0], [[1.0]]), ([-0.0], [[-1.0]]), ([5e-324], [[1.0]]), ([1e-310], [[-1.0]]),
    (ODD_VALUES, [[1.0, 1.0, 1.0, 1.0]]), (ODD_VALUES, [[1.0, 0.5, 1e300, 1e-10]]),
])
def test_negative_zero_and_subnormals_match_torch_bit_for_bit(client, row, weight):
    import torch

    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": len(row), "out_features": 1, "bias": False}, "input": {"data": [row], "dtype": "float64"},
        "parameters": {"weight": {"data": weight, "dtype": "float64"}}})
    assert response.status_code == 200, response.text
    value = response.json()["output"]["data"][0][0]
    expected = torch.nn.functional.linear(torch.tensor([row], dtype=torch.float64),
                                          torch.tensor(weight, dtype=torch.float64)).item()
    assert value == expected and math.copysign(1.0, value) == math.copysign(1.0, expected)


def truncated_upload(server: ServerProcess) -> bytes:
    """Content-Length promises 1000 bytes, 100 come, then the client stops sending."""
    head = (b"POST /v1/layers/linear HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000")
    with raw_request(server.port, head, layer(ROW)[:100], timeout_s=10) as sock:
        sock.shutdown(socket.SHUT_WR)
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


def test_corpus_gets_clear_4xx_and_memory_returns_to_baseline(tmp_path):
    log = tmp_path / "server.log"
    with ServerProcess(log_path=log) as server:
        for _ in range(3):  # warm up: torch, the thread pool, the allocator
            assert exchange(server.port, "POST", "/v1/layers/linear", layer(ROW),
                            {"Content-Type": "application/json"})[0] == 200
        baseline = server.memory_kib()["VmRSS"]
        failures = [f"{case.name}: {problem}" for case in CORPUS if (problem := check(server, case))]
        after_first = server.memory_kib()["VmRSS"]
        for case in CORPUS:  # a second pass: nothing may accumulate
            check(server, case)
        after_second = server.memory_kib()["VmRSS"]
        answer = truncated_upload(server)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert exchange(server.port, "GET", "/healthz")[0] == 200
    output = log.read_text()
    assert "Traceback" not in output and '" 500' not in output, output[-3000:]
    print(f"server VmRSS: baseline {baseline / MiB:.1f} MiB, after the corpus {after_first / MiB:.1f} MiB, "
          f"after a second pass {after_second / MiB:.1f} MiB")
    assert not failures, "\n".join(failures)
    assert after_second - baseline < 48 * MiB, (baseline, after_first, after_second)
    assert after_second - after_first < 16 * MiB, (baseline, after_first, after_second)


MONSTERS = [
    # 10^12 parameters (4 TB): refused from the config alone.
    b'{"config": {"in_features": 1000000, "out_features": 1000000}, "input": [[1]]}',
    # 10^12 random input elements.
    tensor({"random": "normal", "shape": [10**6, 10**6]}),
    # An input of exactly the element limit (128 MiB to draw) whose output would pass it.
    b'{"config": {"in_features": 1, "out_features": 2}, "input": {"random": "normal", "shape": [33554432, 1]}}',
    # A 100 MB weight of the wrong shape.
    layer(ROW, b', "parameters": {"weight": {"random": "normal", "shape": [5000, 5000]}}'),
    # Multiply-adds past the limit on an input that would take 128 MiB.
    b'{"config": {"in_features": 4096, "out_features": 1000}, "input": {"random": "normal", "shape": [8192, 4096]}}',
]


def test_refused_monsters_leave_memory_where_it_was():
    with ServerProcess() as server:
        for _ in range(3):
            exchange(server.port, "POST", "/v1/layers/linear", layer(ROW), {"Content-Type": "application/json"})
        before = server.memory_kib()
        statuses = [exchange(server.port, "POST", "/v1/layers/linear", body, {"Content-Type": "application/json"})[0]
                    for body in MONSTERS]
        after = server.memory_kib()
        # Control: an allowed request of the same size does move the peak, so the check can see.
        control = exchange(server.port, "POST", "/v1/layers/linear",
                           b'{"config": {"in_features": 1, "out_features": 1}, "encoding": "none", '
                           b'"input": {"random": "normal", "shape": [4194304, 1]}}',
                           {"Content-Type": "application/json"})[0]
        after_control = server.memory_kib()
    print(f"server memory (MiB): before {before['VmRSS'] / MiB:.1f} RSS / {before['VmHWM'] / MiB:.1f} peak; "
          f"after {len(MONSTERS)} monsters {after['VmRSS'] / MiB:.1f} / {after['VmHWM'] / MiB:.1f}; "
          f"after a 16 MiB control {after_control['VmRSS'] / MiB:.1f} / {after_control['VmHWM'] / MiB:.1f}")
    assert statuses == [413, 413, 413, 422, 413]
    assert after["VmHWM"] - before["VmHWM"] < 8 * MiB
    assert after["VmRSS"] - before["VmRSS"] < 8 * MiB
    assert control == 200 and after_control["VmHWM"] - after["VmHWM"] > 32 * MiB
