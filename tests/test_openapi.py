"""openapi/openapi.json: current with the app, valid OpenAPI, and complete enough to learn from:
every operation summarized, described and (with a body) given named examples that work; every
tensor form, config field and error response documented."""

import difflib
import json
import re

import annotated_types
import pytest
from openapi_spec_validator import validate

from app.layers.registry import LAYERS
from app.openapi import COMMAND, PATH, render

METHODS = ("get", "post", "put", "patch", "delete")
TENSOR_FORMS = {"NestedNumbers", "TensorData", "TensorBase64", "TensorRandom"}


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
            response = client.request(method.upper(), path, json=example["value"])
            assert response.status_code == 200, f"{path} example {name!r}: {response.text[:300]}"


def layer_request(schema: dict, kind: str) -> dict:
    operation = schema["paths"][f"/v1/layers/{kind}"]["post"]
    return resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])


def refs(node: dict) -> set[str]:
    return {branch["$ref"].rsplit("/", 1)[1] for branch in node.get("anyOf", []) if "$ref" in branch}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_tensor_form_is_documented(schema, kind):
    properties = layer_request(schema, kind)["properties"]
    assert refs(properties["input"]) == TENSOR_FORMS
    assert refs(properties["parameters"]["additionalProperties"]) == TENSOR_FORMS
    assert properties["input"]["description"]
    components = schema["components"]["schemas"]
    for form in TENSOR_FORMS - {"NestedNumbers"}:
        for name, field in components[form]["properties"].items():
            assert field.get("description"), f"{form}.{name}"
    out = components["TensorOut"]["properties"]
    assert {"data", "base64", "summary"} <= set(out)


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
