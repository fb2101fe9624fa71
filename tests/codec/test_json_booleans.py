"""The JSON reader's guard against booleans inside arrays (NumPy would read them as 1.0 and 0.0).

The guard skips strings with memchr instead of running a regex over the whole body; here it is
checked against the structural truth on random JSON documents, and on the bodies it must not slow.
"""

import json
import random

import orjson
import pytest

from app.codec.json import boolean_in_array as _boolean_in_array

LEAVES = [1, 2.5, True, False, None, "true", 'x"[true,', "\\", '\\"', "a,false]", "t", "f\\\\", "[1, true]"]


def random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice(LEAVES)
    if r < 0.65:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["a", "true", "[", '"', "f,"]): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def has_boolean_in_array(value) -> bool:
    if isinstance(value, list):
        return any(type(v) is bool for v in value) or any(has_boolean_in_array(v) for v in value)
    if isinstance(value, dict):
        return any(has_boolean_in_array(v) for v in value.values())
    return False


def test_guard_agrees_with_the_parsed_structure():
    rng = random.Random(7)
    for _ in range(3000):
        value = random_json(rng)
        small = (orjson.dumps(value), json.dumps(value, indent=rng.choice([None, 1, 30])).encode())
        for body in (*small, *(b + b" " * 16384 for b in small)):  # small bodies, then big ones
            at = _boolean_in_array(body)
            assert (at is not None) == has_boolean_in_array(value), body
            if at is not None:
                assert body[at:at + 4] in (b"true", b"fals")


def test_guard_falls_back_to_the_regex_after_many_strings():
    many_keys = {f"k{i}": "v" for i in range(1500)}
    assert _boolean_in_array(orjson.dumps({**many_keys, "x": [1, True]})) is not None
    assert _boolean_in_array(orjson.dumps({**many_keys, "x": [1, 2], "y": True})) is None


@pytest.mark.parametrize("body", [
    b'{"input": [1.0,' + b" " * 5000 + b"true]}",
    b'{"input": [[1, 2], [3,\n\t\r false\n]]}',
])
def test_guard_sees_through_long_whitespace(body):
    assert _boolean_in_array(body) is not None


def test_base64_text_holding_true_by_chance_is_not_a_boolean(client):
    text = "true" * 12_000  # valid base64 of 36,000 bytes: 9,000 float32
    response = client.post("/v1/layers/linear", json={
        "config": {"in_features": 4, "out_features": 1}, "input": {"base64": text, "shape": [2250, 4]}, "encoding": "none"})
    assert response.status_code == 200, response.text
