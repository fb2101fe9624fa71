"""Big JSON bodies read by simdjson (app.codec.json_arrays) give exactly what orjson + np.array give,
or nothing (the caller then uses orjson): checked on crafted edge cases and random documents."""

import json
import random

import numpy as np
import orjson
import pytest

from app.codec import json_arrays


@pytest.fixture
def small_thresholds(monkeypatch):
    monkeypatch.setattr(json_arrays, "MIN_BYTES", 0)
    monkeypatch.setattr(json_arrays, "MIN_ELEMENTS", 4)


def same_as_orjson(fast, slow) -> bool:
    """`fast` equals orjson's value, with each ndarray bit-equal to np.array of orjson's list."""
    if isinstance(fast, np.ndarray):
        return isinstance(slow, list) and fast.dtype == np.float64 and fast.tobytes() == np.array(slow, dtype=np.float64).tobytes()
    if isinstance(fast, dict):
        return isinstance(slow, dict) and list(fast) == list(slow) and all(same_as_orjson(fast[k], slow[k]) for k in fast)
    if isinstance(fast, list):
        return isinstance(slow, list) and len(fast) == len(slow) and all(map(same_as_orjson, fast, slow))
    return type(fast) is type(slow) and fast == slow


@pytest.mark.parametrize("body,read", [
    (b'{"a": [[1, 2], [3, 4.5], [5, 6]]}', True),
    (b'{"a": [[[1,2],[3,4]],[[5,6],[7,8]]], "s": "x[\\"[", "b": [[1]]}', True),
    (b'{"a": [1, 2, 3, -0], "b": [1]}', True),           # the integer -0 is 0 for orjson too
    (b'{"a": [[1, [2]], [3, 4], [5, 6]]}', False),       # a nested [2] the flattening would hide
    (b'{"a": [[1, 2], [3], [5, 6, 7]]}', True),          # ragged: kept as lists, refused later as by orjson
    (b'{"a": [[1, "NaN"], [3, 4], [5, 6]]}', False),     # non-finite strings: orjson's path
    (b'{"a": [[1, true], [3, 4], [5, 6]]}', False),
    (b'{"a": [[1, null], [3, 4], [5, 6]]}', False),
    (b'{"a": [1, 2, 3, -0.0]}', False),                  # negative zero: left to orjson
    (b'{"a": [1, 2, 3, 9007199254740993]}', False),      # beyond 2**53: an int for orjson
    (b'{"a": [1e400, 2, 3, 4]}', False),
    (b'{"a": [1, 2, 3, 4], "a": [5, 6, 7, 8]}', False),  # duplicate keys: orjson keeps the last
    (b'{"a": [], "b": [[], []]}', True),
    (b'not json', False),
])
def test_edge_cases(small_thresholds, body, read):
    fast = json_arrays.loads(body)
    assert (fast is not None) == read
    if read:
        assert same_as_orjson(fast, orjson.loads(body))


def random_document(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 2 or r < 0.25:
        return rng.choice([1, -2.5, 0, True, None, "NaN", 'q"[', "\\", 1e-300, 3.4028235e38, 12345678901])
    if r < 0.6:  # a number array, mostly regular, sometimes spoilt
        shape = [rng.randint(1, 3) for _ in range(rng.randint(1, 3))]
        values = np.round(np.random.default_rng(rng.randint(0, 99)).standard_normal(shape) * 100, rng.randint(0, 6)).tolist()
        if rng.random() < 0.3:
            row = values
            while isinstance(row[0], list):
                row = row[0]
            row[0] = rng.choice([[7], "NaN", False, None, [1, 2], -0.0, 2**60])
        return values
    if r < 0.8:
        return [random_document(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b[", 'c"']): random_document(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_random_documents_read_as_orjson_reads_them(small_thresholds):
    rng = random.Random(3)
    read = 0
    for _ in range(2000):
        value = {"x": random_document(rng), "y": random_document(rng)}
        for body in (orjson.dumps(value), json.dumps(value, indent=1).encode()):
            fast = json_arrays.loads(body)
            if fast is not None:
                read += 1
                assert same_as_orjson(fast, orjson.loads(body)), body
    assert read > 1000  # the fast path is taken, not merely always declined


def test_a_big_json_lists_request_matches_base64_bit_for_bit(client):
    x = np.random.default_rng(0).standard_normal((2048, 64)).astype(np.float32)  # ~2.6 MB of JSON
    request = {"config": {"in_features": 64, "out_features": 8}, "seed": 1, "encoding": "base64"}
    body = orjson.dumps({**request, "input": x}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(body) >= json_arrays.MIN_BYTES and json_arrays.loads(body) is not None
    as_lists = client.post("/v1/layers/linear", content=body, headers={"content-type": "application/json"}).json()
    import base64

    as_base64 = client.post("/v1/layers/linear", json={**request, "input": {
        "base64": base64.b64encode(x.tobytes()).decode(), "shape": [2048, 64]}}).json()
    assert as_lists["output"]["base64"] == as_base64["output"]["base64"]
    x[0, 0] = np.nan  # a "NaN" string among the numbers: orjson's path, same answer
    body = orjson.dumps({**request, "input": [["NaN" if np.isnan(v) else float(v) for v in row] for row in x.tolist()]})
    response = client.post("/v1/layers/linear", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["output"]["shape"] == [2048, 8]
