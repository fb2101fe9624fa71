"""openapi/openapi.json: current with the app, valid OpenAPI, and complete enough to learn from:
every operation summarized, described and (with a body) given named examples that work; every
tensor form, config field and error response documented."""

import contextlib
import difflib
import json
import re
import shutil
import subprocess
from pathlib import Path

import annotated_types
import pybase64
import pytest
from openapi_spec_validator import validate

from app.codec.tensors import ALL_DTYPES, FLOAT_DTYPES
from app.config import Settings
from app.layers.registry import LAYERS
from app.openapi import COMMAND, PATH, render
from app.schemas.tensors import SPELLED_OUT_LEVELS

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def schema(client) -> dict:
    return client.get("/openapi.json").json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_committed_file_is_current(schema):
    current = render(schema)
    committed = PATH.read_text(encoding="utf-8") if PATH.exists() else ""
    if committed != current:
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), current.splitlines(True),
                                                 "openapi/openapi.json (committed)", "the app", n=1))[:60])
        pytest.fail(f"openapi/openapi.json differs from the app. Regenerate it with:\n\n    {COMMAND}\n\n{diff}")


def test_document_is_valid_openapi(schema):
    validate(schema)


def test_operation_ids_are_stable_and_readable(schema):
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), ids
    for kind in LAYERS:
        assert schema["paths"][f"/v1/layers/{kind}"]["post"]["operationId"] == f"layers-{kind}"


def test_every_operation_is_summarized_and_described(schema):
    for path, method, operation in operations(schema):
        assert operation.get("summary"), f"{method.upper()} {path} has no summary"
        assert len(operation.get("description", "")) >= 20, f"{method.upper()} {path} has no description"
        assert operation.get("tags"), f"{method.upper()} {path} has no tag"


def test_every_body_has_named_examples(schema):
    for path, method, operation in operations(schema):
        if "requestBody" not in operation:
            continue
        examples = operation["requestBody"]["content"]["application/json"].get("examples", {})
        assert examples, f"{method.upper()} {path} has no named request examples"
        for name, example in examples.items():
            assert example.get("summary") and "value" in example, f"{path} example {name!r}"


def test_every_example_works(schema, client):
    """What a Swagger user gets from the Examples list then Execute: a 200."""
    for path, method, operation in operations(schema):
        if "requestBody" not in operation:
            continue
        for name, example in operation["requestBody"]["content"]["application/json"]["examples"].items():
            # Path parameters (/v2/models/{model_name}/infer): the example's own (`x-path`), else the parameter's.
            values = {p["name"]: p.get("example") for p in operation.get("parameters", []) if p["in"] == "path"}
            target = path.format(**{**values, **example.get("x-path", {})})
            with shared_memory_object(example["value"] if "/systemsharedmemory/" in path else None):
                response = client.request(method.upper(), target, json=example["value"])
            assert response.status_code == 200, f"{target} example {name!r}: {response.text[:300]}"
            if "/systemsharedmemory/" in path:
                client.post("/v2/systemsharedmemory/unregister")


@contextlib.contextmanager
def shared_memory_object(register: dict | None):
    """The /dev/shm object a register example names, as its client would have created it."""
    if register is None:
        yield
        return
    path = Path("/dev/shm") / register["key"].lstrip("/")
    path.write_bytes(bytes(register["offset"] + register["byte_size"]))
    try:
        yield
    finally:
        path.unlink()


def layer_request(schema: dict, kind: str) -> dict:
    operation = schema["paths"][f"/v1/layers/{kind}"]["post"]
    return resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])


def refs(node: dict) -> set[str]:
    return {branch["$ref"].rsplit("/", 1)[1] for branch in node.get("anyOf", []) if "$ref" in branch}


JSON_INPUT_FORMS = {"NestedNumbers", "TensorData", "TensorBase64", "TensorRandom"}
JSON_PARAMETER_FORMS = {"NestedNumbers", "ParameterData", "ParameterBase64", "TensorRandom"}


def media_request(schema: dict, path: str, media_type: str) -> dict:
    return resolve(schema, schema["paths"][path]["post"]["requestBody"]["content"][media_type]["schema"])


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_tensor_form_is_documented_per_media_type(schema, kind):
    """JSON bodies: the JSON forms; msgpack bodies: the same and raw bytes (a msgpack bin, which
    JSON cannot carry: the server refuses `bytes` there)."""
    path = f"/v1/layers/{kind}"
    as_json = media_request(schema, path, "application/json")["properties"]
    as_msgpack = media_request(schema, path, "application/msgpack")["properties"]
    assert refs(as_json["input"]) == JSON_INPUT_FORMS
    assert refs(as_json["parameters"]["additionalProperties"]) == JSON_PARAMETER_FORMS
    assert refs(as_msgpack["input"]) == JSON_INPUT_FORMS | {"TensorBytes"}
    assert refs(as_msgpack["parameters"]["additionalProperties"]) == JSON_PARAMETER_FORMS | {"ParameterBytes"}
    assert {"type": "number"} in as_json["input"]["anyOf"]  # a bare number: a 0-d tensor
    assert as_json["input"]["description"] and as_msgpack["input"]["description"]
    components = schema["components"]["schemas"]
    for form in (JSON_INPUT_FORMS | JSON_PARAMETER_FORMS | {"TensorBytes", "ParameterBytes"}) - {"NestedNumbers"}:
        for name, field in components[form]["properties"].items():
            assert field.get("description") or resolve(schema, field).get("description"), f"{form}.{name}"
    out = components["TensorOut"]["properties"]
    assert {"data", "base64", "bytes", "summary"} <= set(out)


def test_sequential_tensors_per_media_type(schema):
    as_json = media_request(schema, "/v1/sequential", "application/json")["properties"]
    as_msgpack = media_request(schema, "/v1/sequential", "application/msgpack")["properties"]
    assert refs(as_json["input"]) == JSON_INPUT_FORMS
    assert refs(as_msgpack["input"]) == JSON_INPUT_FORMS | {"TensorBytes"}
    for body, layer_union, forms in ((as_json, "SequentialLayer", JSON_PARAMETER_FORMS),
                                     (as_msgpack, "SequentialMsgpackLayer", JSON_PARAMETER_FORMS | {"ParameterBytes"})):
        assert body["layers"]["items"] == {"$ref": f"#/components/schemas/{layer_union}"}
        for variant in schema["components"]["schemas"][layer_union]["oneOf"]:
            assert refs(resolve(schema, variant)["properties"]["parameters"]["additionalProperties"]) == forms


def test_dtype_enums_are_what_each_field_accepts(schema, client):
    """Inputs and random draws take float32 and float64 (int64 is refused); given parameters and
    buffers take int64 too (num_batches_tracked)."""
    components = schema["components"]["schemas"]
    floats, any_dtype = components["FloatDType"]["enum"], components["TensorDType"]["enum"]
    assert floats == list(FLOAT_DTYPES) and any_dtype == list(ALL_DTYPES)
    for form, expected in (("TensorData", "FloatDType"), ("TensorBase64", "FloatDType"), ("TensorBytes", "FloatDType"),
                           ("TensorRandom", "FloatDType"), ("ParameterData", "TensorDType"),
                           ("ParameterBase64", "TensorDType"), ("ParameterBytes", "TensorDType")):
        assert components[form]["properties"]["dtype"]["$ref"] == f"#/components/schemas/{expected}", form
    linear = {"in_features": 2, "out_features": 1}
    refused = client.post("/v1/layers/linear", json={"config": linear, "input": {"data": [[1, 2]], "dtype": "int64"}})
    assert refused.status_code == 422 and refused.json()["field"] == "input.dtype"
    for dtype in floats:
        assert client.post("/v1/layers/linear", json={"config": linear, "input": {"data": [[1, 2]], "dtype": dtype}}).status_code == 200
    counted = client.post("/v1/layers/batchnorm1d", json={
        "config": {"num_features": 2}, "input": [[1.0, 2.0], [3.0, 5.0]],
        "parameters": {"num_batches_tracked": {"data": 3, "shape": [], "dtype": "int64"}}})
    assert counted.status_code == 200, counted.text


def test_base64_pattern_is_what_the_server_decodes(schema):
    pattern = re.compile(schema["components"]["schemas"]["TensorBase64"]["properties"]["base64"]["pattern"])
    base64 = schema["components"]["schemas"]["TensorBase64"]["properties"]["base64"]
    assert base64.get("minLength", 0) == 0  # "" is an empty tensor's base64 (a batch of 0), which the server takes
    for text in ("", "AAAA", "AAAAAA==", "AAAAAAA=", "AAAAAAAA", "q83vq83vq80="):
        assert pattern.search(text) and pybase64.b64decode(text, validate=True) is not None, text
    for text in ("AAAAAAA", "AA=AAAAA", "AAAA AAA", "AAAA\nAAA", "AAAA-_AA", "AAAAAAAAA==="):
        assert not pattern.search(text), text
        with pytest.raises(ValueError):
            pybase64.b64decode(text, validate=True)


def test_shapes_are_bounded_like_the_server(schema):
    shape = schema["components"]["schemas"]["TensorShape"]
    assert shape["items"]["minimum"] == 0 and shape["maxItems"] == Settings().max_json_depth
    assert "LAYERLAB_MAX_JSON_DEPTH" in shape["description"] and "LAYERLAB_MAX_TENSOR_ELEMENTS" in shape["description"]


def test_nested_numbers_are_not_recursive(schema):
    """Client generators cannot handle a recursive schema (openapi-python-client dropped every
    tensor route): no component may reach itself through its references."""
    components = schema["components"]["schemas"]

    def references(node) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"].rsplit("/", 1)[1]} if "$ref" in node else set()
            return found.union(*(references(value) for value in node.values()))
        return set().union(*(references(value) for value in node)) if isinstance(node, list) else set()

    direct = {name: references(body) for name, body in components.items()}
    for name in components:
        seen, frontier = set(), set(direct[name])
        while frontier:
            assert name not in frontier, f"{name} refers to itself"
            seen |= frontier
            frontier = set().union(*(direct[n] for n in frontier)) - seen
    nested = components["NestedNumbers"]
    depth = 0
    while nested.get("items", {}).get("anyOf"):
        depth, nested = depth + 1, nested["items"]["anyOf"][-1]
    assert depth == SPELLED_OUT_LEVELS and nested == {"type": "array", "items": {}}


def constraint_keywords(node: dict, schema: dict) -> set[str]:
    """Every JSON-schema keyword in a field's schema, anyOf branches and item schemas included."""
    node = resolve(schema, node)
    found = set(node)
    for branch in node.get("anyOf", []) + node.get("oneOf", []) + node.get("prefixItems", []):
        found |= constraint_keywords(branch, schema)
    if isinstance(node.get("items"), dict):
        found |= constraint_keywords(node["items"], schema)
    return found


CONSTRAINTS = {annotated_types.Gt: "exclusiveMinimum", annotated_types.Ge: "minimum",
               annotated_types.Lt: "exclusiveMaximum", annotated_types.Le: "maximum",
               annotated_types.MinLen: "minItems", annotated_types.MaxLen: "maxItems"}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_config_field_is_documented(schema, kind):
    """Each constructor argument: a description, PyTorch's default when optional, its constraints."""
    spec = LAYERS[kind]
    config = resolve(schema, layer_request(schema, kind)["properties"]["config"])
    assert set(config["properties"]) == set(spec.config_model.model_fields)
    for name, field in spec.config_model.model_fields.items():
        documented = config["properties"][name]
        assert documented.get("description"), f"{kind} config.{name} has no description"
        if field.is_required():
            assert name in config.get("required", []), f"{kind} config.{name}"
        else:
            assert "default" in documented, f"{kind} config.{name} has no default"
            assert documented["default"] == json.loads(json.dumps(field.default)), f"{kind} config.{name}"
        keywords = constraint_keywords(documented, schema)
        for constraint in field.metadata:
            if type(constraint) in CONSTRAINTS:
                assert CONSTRAINTS[type(constraint)] in keywords, f"{kind} config.{name}: {constraint}"


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_error_response_is_documented(schema, kind):
    responses = schema["paths"][f"/v1/layers/{kind}"]["post"]["responses"]
    for status in ("400", "404", "413", "415", "422"):
        content = responses[status]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, status
        assert responses[status]["description"]
    for status in ("413", "422"):
        assert responses[status]["content"]["application/json"]["example"]["status"] == int(status)
    ok = resolve(schema, responses["200"]["content"]["application/json"]["schema"])
    assert {"output", "output_shape", "parameters", "comparison"} <= set(ok["properties"])


def test_error_body_is_documented(schema):
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "status", "detail"}
    for name, field in body["properties"].items():
        assert field.get("description"), f"ErrorBody.{name}"


def test_docs_are_served_offline(client):
    """Swagger UI and ReDoc load their scripts from this server, never from a CDN."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        scripts = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert scripts and all(url.startswith("/") for url in scripts), scripts
        for url in scripts:
            assert client.get(url).status_code == 200, url


# --- Lint: what redocly's recommended rules ask, checked here too, and redocly itself where installed ---

def test_document_says_where_and_under_what_terms(schema):
    assert schema["servers"] and all(server["url"] for server in schema["servers"])
    assert schema["info"]["license"] == {"name": "MIT", "identifier": "MIT"}  # as pyproject.toml
    assert "msgpack" in schema["info"]["description"] and "base64 on the wire" not in schema["info"]["description"]


def test_every_operation_has_a_security_requirement_and_an_error_answer(schema):
    for path, method, operation in operations(schema):
        assert "security" in operation, f"{method.upper()} {path}"
        assert any(status.startswith("4") for status in operation["responses"]), f"{method.upper()} {path}"


def test_every_component_is_used_and_every_reference_resolves(schema):
    components = schema["components"]["schemas"]
    text = json.dumps({key: value for key, value in schema.items() if key != "components"})
    used, frontier = set(), set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    while frontier:
        assert frontier <= set(components), frontier - set(components)
        used |= frontier
        frontier = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps([components[n] for n in frontier]))) - used
    assert used == set(components), set(components) - used


REDOCLY = Path(__file__).resolve().parent.parent / ".ci" / "npm" / "node_modules" / ".bin" / "redocly"


@pytest.mark.parametrize("keys", [False, True], ids=["without-keys", "with-keys"])
def test_redocly_lint_is_clean(make_client, tmp_path, keys):
    """`redocly lint` with its recommended rules: no error, no warning (the committed document, and
    the one a server with API keys serves)."""
    redocly = str(REDOCLY) if REDOCLY.exists() else shutil.which("redocly")
    if redocly is None:
        pytest.skip("redocly is not installed: run .ci/install-npm-tools (npm install @redocly/cli)")
    document = PATH if not keys else tmp_path / "openapi.json"
    if keys:
        document.write_text(json.dumps(make_client(api_key=["k" * 32]).get("/openapi.json").json()))
    result = subprocess.run([redocly, "lint", str(document), "--format", "json"], capture_output=True, text=True,
                            timeout=300)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, report
