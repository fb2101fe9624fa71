"""The README stays true: every shell and Python block in it runs against a real server, the
outputs it shows are what those blocks print, and CI runs its test command. The same holds for every
markdown page of the repository the README links to (and those link to, and so on): examples moved
out of the README stay checked.

How a page is read (any section, so new sections and pages are covered without touching this file):

- A fenced block tagged `bash`/`sh`/`shell` or `python`/`py` runs against `python -m app.serve`
  on a free port: `127.0.0.1:8000` and `localhost:8000` in it become that server's address,
  `.venv/bin/python` and `python` the interpreter running the tests; `$LAYERLAB_URL` points there too.
- Marked `<!-- not-run: reason -->` on the line before it, it is only checked for syntax
  (`bash -n`, `compile()`); marked `<!-- server: reason -->`, it is started with `LAYERLAB_PORT`
  set to a free port, must answer `/healthz`, and is stopped.
- A `json` or `text` block that comes next after a block that runs (no other block between) is
  what that block prints. JSON is compared as data: every key the output has must be shown, `"..."`
  stands for a value left out (an abbreviated output says so in its own text). Text is compared
  line by line. Numbers match within float32 rounding (relative 1e-4, absolute 1e-6; but a zero
  only matches a zero): the values shown are one machine's, another CPU may round the last bits
  differently.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import ServeProcess, free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
SHELL = {"bash", "sh", "shell"}
PYTHON = {"python", "py"}
OUTPUT = {"json", "text"}
MARK = re.compile(r"<!--\s*(not-run|server):\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
RUN_TIMEOUT_S = 180


@dataclass
class Block:
    doc: str  # the page, relative to the repository root
    section: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mark: str | None = None  # "not-run", "server", or None: runs
    reason: str = ""
    output: "Block | None" = None

    @property
    def runs(self) -> bool:
        return self.lang in SHELL | PYTHON and self.mark is None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.section}:L{self.line}"

    @property
    def where(self) -> str:
        return f"{self.doc} line {self.line}"


def linked_pages(start: str = "README.md") -> list[str]:
    """The README and every repository markdown page reachable from it by relative links."""
    pages, queue = [start], [start]
    while queue:
        page = queue.pop()
        for target in LINK.findall((ROOT / page).read_text()):
            if "://" in target:
                continue
            path = (ROOT / page).parent.joinpath(target).resolve().relative_to(ROOT).as_posix()
            if path not in pages:
                pages.append(path)
                queue.append(path)
    return pages


def parse(text: str, doc: str = "README.md") -> list[Block]:
    """Every fenced block, with its section (the H2 above it), its mark and the output shown after it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section, i = "(top)", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = FENCE.match(line)
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(doc, section, i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n")
        if i and (mark := MARK.fullmatch(lines[i - 1].strip())):
            block.mark, block.reason = mark.group(1), mark.group(2)
        if blocks and block.lang in OUTPUT and blocks[-1].runs and blocks[-1].section == section:
            blocks[-1].output = block
        blocks.append(block)
        i = end + 1
    return blocks


PAGES = linked_pages()
BLOCKS = [block for page in PAGES for block in parse((ROOT / page).read_text(), page)]
README_BLOCKS = [b for b in BLOCKS if b.doc == "README.md"]
RUNNABLE = [b for b in BLOCKS if b.runs]
SERVERS = [b for b in BLOCKS if b.mark == "server"]
SYNTAX_ONLY = [b for b in BLOCKS if b.mark == "not-run"]


def section_blocks(section: str) -> list[Block]:
    return [b for b in README_BLOCKS if b.section == section]


# -- what the README must hold --------------------------------------------------------------------


def test_ci_runs_the_readme_test_command():
    run_service, run_tests = (b.code.strip() for b in section_blocks("The two commands")[:2])
    assert "pytest" in run_tests and "app.serve" in run_service
    assert run_service.rsplit("&&", 1)[0] == run_tests.rsplit("&&", 1)[0], "the two commands set up differently"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert run_tests in ci_lines, "README's test command and .ci/run drifted apart"


def test_every_block_says_what_it_is():
    for block in BLOCKS:
        assert block.lang, f"{block.where}: a block without a language tag"
        if block.mark:
            assert block.lang in SHELL | PYTHON, f"{block.where}: {block.mark} marks a {block.lang} block"
            assert block.reason, f"{block.where}: say why it is {block.mark}"
    assert len(RUNNABLE) >= 4 and any(b.lang in PYTHON for b in RUNNABLE)


def test_the_pages_with_examples_are_linked_and_checked():
    """The pages examples moved to are found by following the README's links (so they run here)."""
    assert {"app/client/README.md", ".deploy/README.md", "openapi/README.md"} <= set(PAGES)
    assert any(b.doc == "app/client/README.md" for b in RUNNABLE)
    assert any(b.doc == ".deploy/README.md" for b in RUNNABLE)
    assert len(README.splitlines()) < 350, "the README is for users: move detail to a linked page"


def test_the_examples_show_the_notebooks_linear_and_conv2d_by_curl_and_by_the_sdk():
    readme_runs = [b for b in README_BLOCKS if b.runs]
    curl = " ".join(b.code for b in readme_runs if b.lang in SHELL)
    sdk = " ".join(b.code for b in readme_runs if b.lang in PYTHON)
    for route in ("/v1/layers/linear", "/v1/layers/conv2d"):
        assert route in curl
    assert "client.linear(" in sdk and "client.conv2d(" in sdk


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "json"], ids=lambda b: b.id)
def test_json_blocks_are_json(block):
    json.loads(block.code)


@pytest.mark.parametrize("block", SYNTAX_ONLY, ids=lambda b: b.id)
def test_blocks_not_run_are_well_formed(block):
    if block.lang in PYTHON:
        compile(block.code, f"{block.doc}:{block.line}", "exec")
    else:
        checked = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr


# -- running the blocks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    """The run command (`python -m app.serve`) with default settings, on a free port."""
    with ServeProcess() as process:
        yield process


def localized(code: str, port: int) -> str:
    code = re.sub(r"(?:127\.0\.0\.1|localhost):8000\b", f"127.0.0.1:{port}", code)
    return code.replace(".venv/bin/python", sys.executable)


def environment(url: str) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "LAYERLAB_URL": url, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_block_runs_and_prints_what_is_shown(block, server):
    if block.lang in SHELL and re.search(r"\bcurl\b", block.code) and shutil.which("curl") is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    code = localized(block.code, server.port)
    command = [sys.executable, "-c", code] if block.lang in PYTHON else ["bash", "-e", "-o", "pipefail", "-c", code]
    ran = subprocess.run(command, cwd=ROOT, env=environment(server.url), capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S)
    assert ran.returncode == 0, f"{block.where} exited {ran.returncode}:\n{ran.stderr[-3000:]}"
    if block.output is None:
        return
    where = block.output.where
    if block.output.lang == "json":
        assert_matches(json.loads(block.output.code), json.loads(ran.stdout), where)
    else:
        assert_text_matches(block.output.code, ran.stdout, where)


@pytest.mark.parametrize("block", SERVERS, ids=lambda b: b.id)
def test_server_blocks_serve(block, tmp_path):
    port = free_port()
    code = re.sub(r"\bLAYERLAB_PORT=\d+", f"LAYERLAB_PORT={port}", localized(block.code, 8000))
    assert f"LAYERLAB_PORT={port}" in code, f"{block.where}: a server block sets LAYERLAB_PORT"
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", "-c", code], cwd=ROOT, env=environment(""), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout_s=60, process=process, log_path=log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_port_taken_message_is_the_servers(tmp_path):
    """The README quotes what the server logs when its port is taken; it exits with status 3."""
    quoted = next(b for b in README_BLOCKS if b.lang == "text" and "address already in use" in b.code)
    expected = json.loads(quoted.code)
    assert "exits with status 3" in README
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**os.environ, "LAYERLAB_HOST": "127.0.0.1", "LAYERLAB_PORT": str(port)}
        ran = subprocess.run([sys.executable, "-m", "app.serve"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=RUN_TIMEOUT_S)
    assert ran.returncode == 3, ran.stderr[-3000:]
    logged = [json.loads(line) for line in (ran.stdout + ran.stderr).splitlines() if line.startswith("{")]
    expected["message"] = expected["message"].replace("8000", str(port))
    assert any(all(k == "ts" or line.get(k) == v for k, v in expected.items()) for line in logged), logged


# -- comparing outputs ----------------------------------------------------------------------------


def numbers_close(shown: float, got: float) -> bool:
    """Equal to float32 rounding; but zero is zero: a difference shown as 0.0 must be 0.0."""
    if (shown == 0) != (got == 0):
        return False
    return math.isclose(shown, got, rel_tol=1e-4, abs_tol=1e-6)


def assert_matches(shown: Any, got: Any, where: str, path: str = "$") -> None:
    """`got` is what the block printed; `shown` what the README shows, with "..." for a value left out."""
    if shown == "...":
        return
    if isinstance(shown, dict):
        assert isinstance(got, dict), f"{where}: {path} is {got!r}, the README shows an object"
        assert set(shown) == set(got), (f"{where}: {path} has keys {sorted(got)}, the README shows {sorted(shown)} "
                                        '(write "key": "..." for one left out)')
        for key, value in shown.items():
            assert_matches(value, got[key], where, f"{path}.{key}")
    elif isinstance(shown, list):
        assert isinstance(got, list) and len(got) == len(shown), f"{where}: {path} is {got!r}, the README shows {shown!r}"
        for index, (a, b) in enumerate(zip(shown, got, strict=True)):
            assert_matches(a, b, where, f"{path}[{index}]")
    elif isinstance(shown, bool) or not isinstance(shown, int | float):
        assert shown == got and type(shown) is type(got), f"{where}: {path} is {got!r}, the README shows {shown!r}"
    else:
        assert isinstance(got, int | float) and not isinstance(got, bool) and numbers_close(shown, got), \
            f"{where}: {path} is {got!r}, the README shows {shown!r}"


def assert_text_matches(shown: str, got: str, where: str) -> None:
    shown_lines, got_lines = shown.rstrip("\n").splitlines(), got.rstrip("\n").splitlines()
    assert len(shown_lines) == len(got_lines), f"{where}: printed\n{got}\nthe README shows\n{shown}"
    for a, b in zip(shown_lines, got_lines, strict=True):
        assert NUMBER.split(a) == NUMBER.split(b), f"{where}: printed {b!r}, the README shows {a!r}"
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
            assert numbers_close(float(x), float(y)), f"{where}: printed {b!r}, the README shows {a!r}"


def test_the_comparison_is_strict_where_it_should_be():
    """The matcher itself: a wrong value, a missing key or a stale number fails; "..." and rounding pass."""
    assert_matches({"a": [1, 2.0], "b": "..."}, {"a": [1, 2.0000001], "b": {"x": 1}}, "here")
    for shown, got in [({"a": 1}, {"a": 1, "b": 2}), ({"a": 1.0}, {"a": 1.1}), ([1], [1, 2]),
                       ({"a": True}, {"a": 1}), ({"a": "x"}, {"a": "y"}), ({"m": 0.5}, {"m": 0.0}),
                       ({"max_abs_diff": 0.0}, {"max_abs_diff": 2.98e-08})]:
        with pytest.raises(AssertionError):
            assert_matches(shown, got, "here")
    assert_text_matches("(10, 1) [-0.2397]\nTrue\n", "(10, 1) [-0.23970001]\nTrue\n", "here")
    for shown, got in [("True\n", "False\n"), ("(10, 1)\n", "(10, 2)\n"), ("a\n", "a\nb\n")]:
        with pytest.raises(AssertionError):
            assert_text_matches(shown, got, "here")
