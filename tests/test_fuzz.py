"""Schemathesis against the published OpenAPI document: generated requests (valid and invalid by
the schema) to every operation, in-process. No 5xx; every status code, header and body
conforms to what the schema documents; schema-violating requests are refused.

Bounded: a fixed number of examples per operation, derandomized so every run tries the same
ones. The server's limits are set small so generated shapes cannot ask for gigabytes; that
changes which answers come (413 more often), not what the schema promises."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from app.config import Settings
from app.main import create_app
from tests.live_server import live_server

SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


# The tensor routes also take and give application/msgpack: the hooks shipped for the stock CLI
# (openapi/schemathesis_hooks.py) register its serializer and deserializer here too.
HOOKS = Path(__file__).resolve().parent.parent / "openapi" / "schemathesis_hooks.py"
_hooks_spec = importlib.util.spec_from_file_location("layerlab_schemathesis_hooks", HOOKS)
_hooks_spec.loader.exec_module(importlib.util.module_from_spec(_hooks_spec))

EXAMPLES_PER_OPERATION = 30

app = create_app(Settings(max_tensor_elements=100_000, max_parameter_elements=100_000, max_macs=10**8,
                          max_body_bytes=2**20))


def load_schema(coverage_phase: bool) -> schemathesis.BaseSchema:
    """The checked-in document when there is one (what clients see), else the app's own."""
    config = SchemathesisConfig.from_dict({
        "checks": {
            # The API rightly refuses many schema-valid requests (an input whose last dimension is
            # not in_features, a limit), so "valid by the schema must succeed" does not hold here.
            "positive_data_acceptance": {"enabled": False},
            # Schema-violating requests must be refused; 413 is a refusal too (a limit).
            "negative_data_rejection": {"expected-statuses": ["400", "404", "405", "413", "415", "422"]},
        },
        # The coverage phase tries every boundary value the schema defines: thorough but
        # unbounded (hundreds of requests per operation), so it runs in the slow suite only.
        "phases": {"coverage": {"enabled": coverage_phase}},
    })
    loaded = schemathesis.openapi.from_dict(json.loads(SPEC.read_text()) if SPEC.exists() else app.openapi(),
                                            config=config)
    loaded.app = app
    return loaded


schema = load_schema(coverage_phase=False)
thorough_schema = load_schema(coverage_phase=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_schema_conformance(case):
    response = case.call_and_validate()
    assert response.status_code < 500, response.text


@pytest.mark.slow
@thorough_schema.parametrize()
@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_schema_conformance_thorough(case):
    response = case.call_and_validate()
    assert response.status_code < 500, response.text


def test_fuzzing_covers_every_operation():
    operations = {(result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()}
    documented = {(method.upper(), path) for path, items in app.openapi()["paths"].items() for method in items}
    assert operations == documented and ("POST", "/v1/layers/linear") in operations


@pytest.mark.parametrize("status", ["401", "413", "503", "504"])
def test_hardening_answers_are_documented(status):
    """Status-code conformance only holds if what the hardening layers answer is in the schema."""
    operation = app.openapi()["paths"]["/v1/layers/linear"]["post"]
    assert status in operation["responses"]


# --- The stock `schemathesis run` CLI, as a user runs it against a live server ---------------

STOCK_CLI_ENV = {"LAYERLAB_MAX_TENSOR_ELEMENTS": "100000", "LAYERLAB_MAX_PARAMETER_ELEMENTS": "100000",
                 "LAYERLAB_MAX_MACS": "100000000", "LAYERLAB_MAX_BODY_BYTES": "1048576", "LAYERLAB_ACCESS_LOG": "false"}
"""Small limits, so generated shapes cannot ask for gigabytes (they get 413s instead)."""

CROSS_FIELD_RULES = {
    # Positive-data rejections: requests valid by the schema that the server refuses for a rule no
    # JSON schema can state, as each ties one field to another (or to a setting). The README lists them.
    "a limit: the product of a shape, or what the config implies (parameters, output, work), against "
    "a LAYERLAB_MAX_* setting": lambda e: e["status"] == 413 and e.get("limit") in (
        "max_tensor_elements", "max_parameter_elements", "max_macs"),
    "raw bytes or base64 whose length is not the shape's element count times the dtype's size":
        lambda e: re.search(r"\.(bytes has \d+ bytes|base64 has \d+ characters|base64 decodes to)", e["detail"]),
    "flat `data` whose length is not the product of `shape`, or nested `data` whose nesting is not `shape`":
        lambda e: re.search(r"\.data (has \d+ values but shape|is nested as)", e["detail"]),
    "nested arrays that are ragged or mix numbers and arrays (every row at one depth the same length)":
        lambda e: "ragged" in e["detail"] or "non-numeric" in e["detail"],
    "the input's shape against the config (rank, channels or features; a window that does not fit; "
    "reflect/circular padding wider than the input) or, in a stack, against the layer before":
        lambda e: e["error"] == "ShapeMismatch" and re.fullmatch(r"input(\.shape)?|layers\[\d+\]", e.get("field", "")),
    "a given parameter's name or shape against the config (bias=False has no bias; weight is "
    "(out_features, in_features))": lambda e: re.search(r"parameters\.\w+ (has shape|is not a tensor of)", e["detail"]),
    "BatchNorm training on one value per channel (the `training` flag against the input's shape)":
        lambda e: "more than 1 value per channel" in e["detail"],
    "config fields against each other: groups dividing the channels, padding at most half the kernel, "
    "padding='same' only with stride 1": lambda e: re.fullmatch(r"(layers\[\d+\]\.)?config\.\w+", e.get("field") or "")
        and re.search(r"divisible|half|same", e["detail"]),
    "a device this server lacks (`cuda:N`: GET /v1/info lists the devices), or a device asked of the reference "
    "backend alone": lambda e: e.get("field") == "device",
    "num_batches_tracked given as a float that is not a whole number": lambda e: "must hold an integer" in e["detail"],
    "a V2 requested output the config does not produce (bias=False has no bias; BatchNorm without "
    "track_running_stats has no running statistics)":
        lambda e: re.fullmatch(r"output '[\w.]+' is not an output of this model; it has \[.*\]", e["detail"]),
    "the backward pass's start: grad_output against the output's shape, a loss target against the output "
    "(and its function), grad_output and loss not both": lambda e: e.get("field") in ("grad_output", "loss", "loss.target")
        or "grad_output and loss both" in e["detail"],
    "shared memory: a key naming no object the server can open, bounds past an object's or a region's end, a "
    "region not registered, a tensor's shared_memory_byte_size other than its size, or the shared_memory_* "
    "parameters without each other or beside data": lambda e: e["status"] in (400, 409) and re.search(
        r"^'key' |runs past the end of|no system shared memory region|shared_memory_|is registered already",
        e["detail"]),
}


def run_stock_cli(url: str, report: Path, *options: str) -> tuple[str, dict]:
    """`schemathesis run` (the installed console script, nothing of ours but the hooks module)."""
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "--checks", "all",
               "--seed", "1", "--continue-on-failure", "--output-truncate", "false", "--report", "json",
               "--report-json-path", str(report), *options]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    # cwd: the CLI keeps a cache (.schemathesis/) in its working directory, which is not the repository
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, cwd=report.parent)
    return result.stdout + result.stderr, json.loads(report.read_text())


def rejected_positive_cases(output: str) -> list[dict]:
    """The error bodies of every ST202 (schema-valid request rejected) in the CLI's output."""
    found = []
    for block in output.split("- ST202 ")[1:]:
        body = re.search(r"^\[(\d{3})\] [^\n]*:\n\n    `(\{.*?\})`$", block, re.M | re.S)
        assert body, block[:600]
        error = json.loads(body.group(2))
        if set(error) == {"error"}:  # the Open Inference Protocol's error body: the message alone
            error = {"error": "V2", "status": int(body.group(1)), "detail": error["error"], "field": None}
        found.append(error)
    return found


def check_stock_cli_run(output: str, report: dict) -> None:
    """Zero server errors, response-schema violations, serialization errors, negative data accepted;
    every rejected positive case a cross-field rule."""
    assert report["errors"] == [], output[-3000:]
    assert report["operations"]["tested"] == report["operations"]["selected"] == 37  # /v1 and /docs (22), /v2 (15)
    assert {failure["code"] for failure in report["failures"]} <= {"ST202"}, output[-6000:]
    assert not report["warnings"].get("missing_deserializer"), report["warnings"]
    rejected = rejected_positive_cases(output)
    assert len(rejected) == sum(f["count"] for f in report["failures"] if f["code"] == "ST202"), output[-3000:]
    unmatched = [error for error in rejected if not any(rule(error) for rule in CROSS_FIELD_RULES.values())]
    assert not unmatched, unmatched


def test_stock_cli_with_the_shipped_hooks(tmp_path):
    """What the README's command runs, bounded (examples and fuzzing, 8 cases per operation)."""
    with live_server(env=STOCK_CLI_ENV) as url:
        output, report = run_stock_cli(url, tmp_path / "report.json", "--phases", "examples,fuzzing",
                                       "--max-examples", "8")
    assert report["test_cases"]["generated"] > 100, output[-3000:]
    check_stock_cli_run(output, report)


@pytest.mark.slow
def test_stock_cli_with_the_shipped_hooks_thorough(tmp_path):
    """Every phase (the coverage phase tries every boundary of every schema: ~40,000 requests, ~10 min)."""
    with live_server(env=STOCK_CLI_ENV) as url:
        output, report = run_stock_cli(url, tmp_path / "report.json", "--max-examples", "30")
    check_stock_cli_run(output, report)
