"""The duplicate-key guard's key counter: a regex on small bodies, quote-to-quote jumps on big
ones. Both are checked against the structural truth (keys in the parsed document) on random JSON
documents whose strings hold quotes, backslashes, colons and brackets, in several layouts."""

import json
import random

import pytest

from app.codec.json import parse_json
from app.codec.json_scanner import count_keys as _count_key_tokens
from app.errors import BadRequest

ALPHABET = ['a', '"', '\\', ':', ' ', '\n', 'é', '\t', ',', '{', '[', '}']


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))


def random_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([1, -2.5e-3, random_string(rng), None, True])
    if r < 0.6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def keys_in(value) -> int:
    if isinstance(value, dict):
        return len(value) + sum(keys_in(v) for v in value.values())
    if isinstance(value, list):
        return sum(keys_in(v) for v in value)
    return 0


def layouts(rng: random.Random, value) -> list[str]:
    return [json.dumps(value),
            json.dumps(value, indent=rng.choice([1, "\t"]), ensure_ascii=rng.random() < 0.5),
            json.dumps(value, separators=rng.choice([(",", " : "), (" ,", ":\n "), (",", ":")]))]


@pytest.mark.parametrize("seed", range(4))
def test_key_count_matches_the_document_on_small_and_big_bodies(seed):
    rng = random.Random(seed)
    for _ in range(500):
        value = {random_string(rng): random_value(rng) for _ in range(rng.randint(0, 4))}
        expected = keys_in(value)  # random keys can repeat: the dict keeps one, so build the text from it
        for text in layouts(rng, value):
            body = text.encode()
            assert _count_key_tokens(body) == expected, body
            padded = body[:-1] + b"," + b" " * 20000 + b'"pad": 0}' if body != b"{}" else b'{' + b" " * 20000 + b'"pad": 0}'
            assert len(padded) >= 16384  # the big-body path
            assert _count_key_tokens(padded) == expected + 1, body


def test_a_repeated_key_is_refused_in_a_small_body():
    with pytest.raises(BadRequest, match="repeats the key 'a'"):
        parse_json(b'{"b": ["\\"a\\":", ":"], "a": 1, "a": 2}')
