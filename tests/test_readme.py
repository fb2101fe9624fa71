"""The README stays true: CI runs its test command, and its curl example works."""

import re
from pathlib import Path

import orjson

from tests.wire import post_json

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks(section: str) -> list[str]:
    body = README.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", body, re.S)]


def test_ci_runs_the_readme_test_command():
    run_service, run_tests = bash_blocks("The two commands")[:2]
    assert "pytest" in run_tests and ("uvicorn" in run_service or "app.serve" in run_service)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert run_tests in ci_lines, "README's test command and .ci/run drifted apart"


def test_curl_example_works(client):
    curl = bash_blocks("Try it")[0]
    path = re.search(r"http://127\.0\.0\.1:8000(/\S+)", curl).group(1)
    body = orjson.loads(re.search(r"-d '(.*)'", curl, re.S).group(1))
    assert post_json(client, path, body)["comparison"]["allclose"] is True
