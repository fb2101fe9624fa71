"""The wire format as the tests speak it: read a response tensor, write a base64 tensor, post a layer.

Independent of app/codec/tensors.py on purpose: the tests check the codec, they do not reuse it.
"""

import base64

import numpy as np

NON_FINITE = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}
"""JSON has no NaN or infinities: the list encoding sends them as these strings (and nothing else as a string)."""


def _number(value):
    return NON_FINITE[value] if isinstance(value, str) else value


def decode(tensor: dict) -> np.ndarray:
    """A response tensor {shape, dtype, data | base64} -> a writable ndarray of that shape and dtype.

    `data` is a nested list or a scalar (a 0-d tensor); base64 is little-endian bytes."""
    dtype, shape = np.dtype(tensor["dtype"]), tensor["shape"]
    if "base64" in tensor:
        raw = base64.b64decode(tensor["base64"], validate=True)
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape).astype(dtype)  # astype copies
    array = np.array(tensor["data"])
    if array.dtype.kind == "U":  # a non-finite value made every element a string: map the three names back
        array = np.vectorize(_number, otypes=[np.float64])(np.array(tensor["data"], dtype=object))
    return array.astype(dtype).reshape(shape)


def as_base64(array: np.ndarray) -> dict:
    """The {base64, shape, dtype} request form of an array (little-endian bytes, as the service reads them)."""
    return {"base64": base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode(),
            "shape": list(array.shape), "dtype": array.dtype.name}


def random_input(*shape: int) -> dict:
    """The {random, shape} request form: torch.randn(shape) after torch.manual_seed(0)."""
    return {"random": "normal", "shape": list(shape)}


def post_json(client, path: str, body: dict, status: int = 200) -> dict:
    """POST a JSON body; the response's JSON once its status is the one expected (an error's
    envelope repeating that status)."""
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    if status >= 400:
        assert payload["status"] == status, payload
    return payload


def post_layer(client, kind: str, body: dict, status: int = 200) -> dict:
    """POST /v1/layers/{kind}; the response's JSON once its status is the one expected."""
    return post_json(client, f"/v1/layers/{kind}", body, status)


def listed_layers(client) -> dict[str, dict]:
    """GET /v1/layers by kind; every kind listed once."""
    response = client.get("/v1/layers")
    assert response.status_code == 200, response.text
    entries = response.json()
    listed = {entry["kind"]: entry for entry in entries}
    assert len(listed) == len(entries), "a kind is listed twice"
    return listed


def assert_names(error: dict, field: str, words: str | list[str]) -> None:
    """A 4xx error body names `field` and its detail says each of `words`."""
    assert 400 <= error["status"] < 500 and error["error"], error
    assert error["field"] == field, error
    for word in [words] if isinstance(words, str) else words:
        assert word in error["detail"], error["detail"]
