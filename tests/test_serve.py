"""app.serve: the environment it prepares for the workers, and TCP_NODELAY on every connection."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import uvicorn

from app import process_environment
from app.config import Settings
from app.serve import METRICS_DIR_ENV, HttpProtocol, available_cpus, prepare_environment


async def tiny_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


class RecordingProtocol(HttpProtocol):
    """Our protocol, keeping each accepted connection's socket (asyncio's transport API, not uvicorn's)."""

    accepted: list[socket.socket] = []

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        RecordingProtocol.accepted.append(transport.get_extra_info("socket"))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_every_connection_gets_tcp_nodelay(loop):
    """On a listener made as `socket(AF_INET)` (protocol 0, as some uvicorn releases bind for their
    workers) the asyncio loop leaves Nagle's algorithm on: each keep-alive response then waits ~40 ms
    for a delayed ACK (uvicorn issue #3149). Whatever the listener, every accepted connection must
    have TCP_NODELAY: the option is read on the server's side of the connection."""
    if loop == "uvloop" and (sys.platform in ("win32", "cygwin") or sys.implementation.name == "pypy"):
        pytest.skip("uvicorn[standard] installs uvloop only on CPython outside Windows")  # its own marker
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # protocol 0: the case that stalled
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(tiny_app, loop=loop, http=RecordingProtocol, ws="none", lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    RecordingProtocol.accepted.clear()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        client = http.client.HTTPConnection(*listener.getsockname()[:2], timeout=5)
        for _ in range(2):  # keep-alive: the same connection twice
            client.request("GET", "/")
            assert client.getresponse().read() == b"ok"
        (accepted,) = RecordingProtocol.accepted
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.close()
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def test_workers_share_the_cpus_and_get_a_metrics_folder():
    environ: dict[str, str] = {}
    made = prepare_environment(Settings(workers=2), environ)
    try:
        assert environ["LAYERLAB_TORCH_THREADS"] == str(max(1, available_cpus() // 2))
        assert made is not None and made.is_dir() and environ[METRICS_DIR_ENV] == str(made)
    finally:
        made.rmdir()


def test_explicit_threads_are_kept_and_one_worker_needs_nothing():
    environ: dict[str, str] = {}
    made = prepare_environment(Settings(workers=3, torch_threads=5), environ)
    made.rmdir()
    assert "LAYERLAB_TORCH_THREADS" not in environ
    environ = {}
    assert prepare_environment(Settings(workers=1), environ) is None
    assert environ == process_environment.process_environment()  # the allocator and BLAS settings only


def test_openmp_threads_sleep_between_calls_unless_the_operator_says_otherwise():
    """libgomp's threads spin after each torch call; spinning, they delay the response's socket writes
    and the client's reads on a machine with few cores (issue 19, tests/benchmarks/NOTES.md)."""
    environ: dict[str, str] = {}
    prepare_environment(Settings(workers=1), environ)
    assert environ["OMP_WAIT_POLICY"] == "PASSIVE"
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_environment(Settings(workers=1), environ)
    assert environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_run_command_starts_torch_with_sleeping_openmp_threads():
    """The variable is set after the process started (app.serve), before torch loads: what the OpenMP
    runtime itself read, as it reports it with OMP_DISPLAY_ENV (GNU libgomp: torch's Linux wheels)."""
    from tests.live_server import ServeProcess

    with ServeProcess(env={"LAYERLAB_LOG_LEVEL": "warning", "OMP_DISPLAY_ENV": "TRUE"}) as server:
        log = server.log_path.read_text(errors="replace")
    if "OPENMP DISPLAY ENVIRONMENT" not in log:
        pytest.skip("this torch's OpenMP runtime does not display its environment")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in log


def test_a_given_metrics_folder_is_emptied_of_old_values(tmp_path):
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "histogram_456.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    environ = {METRICS_DIR_ENV: str(tmp_path)}
    assert prepare_environment(Settings(workers=2), environ) is None  # the operator's folder stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert environ[METRICS_DIR_ENV] == str(tmp_path)


def test_the_run_command_creates_no_metric_before_the_workers_exist():
    """prometheus_client picks memory or files when a metric is created: app.serve must not
    create any before it has set PROMETHEUS_MULTIPROC_DIR."""
    code = "import sys, app.serve; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# -- settings errors a person can act on -------------------------------------------------------------

def clean_environ(**variables: str) -> dict[str, str]:
    """This process's environment without any LAYERLAB_* variable, plus `variables`."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAYERLAB_")}
    return {**environ, "LAYERLAB_PORT": "0", **variables}


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "app.serve"],
    [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],  # the app made at import, as uvicorn does
], ids=["app.serve", "uvicorn"])
@pytest.mark.parametrize("variable, value, expected", [
    ("LAYERLAB_MAX_BODY_BYTES", "abc", "an integer > 0"),
    ("LAYERLAB_COMPUTE_TIMEOUT_S", "1e999", "a finite number > 0"),
    ("LAYERLAB_COMPUTE_QUEUE_TIMEOUT_S", "nan", "a finite number > 0"),
])
def test_a_bad_setting_is_one_line_and_status_2(command, variable, value, expected):
    done = subprocess.run(command, env=clean_environ(**{variable: value}), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines() == [f"layerlab: invalid setting: {variable}={value!r}: expected {expected}"]


def test_a_misspelled_variable_is_warned_about_at_start():
    """The warning is the server's first log line (JSON, as every other): read it, then stop the server."""
    server = subprocess.Popen([sys.executable, "-m", "app.serve"], env=clean_environ(LAYERLAB_MAX_BODYBYTES="5"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()
    finally:
        server.terminate()
        server.wait(60)
        server.stderr.close()
    entry = json.loads(first)
    assert entry["level"] == "warning" and entry["message"] == (
        "LAYERLAB_MAX_BODYBYTES is not a layerlab setting and is ignored; did you mean LAYERLAB_MAX_BODY_BYTES?")


def test_a_known_variable_and_the_sdk_url_are_not_warned_about():
    server = subprocess.Popen([sys.executable, "-m", "app.serve"],
                              env=clean_environ(LAYERLAB_MAX_BODY_BYTES="5000", LAYERLAB_URL="http://127.0.0.1:1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()  # uvicorn's first line: the server started without a warning
    finally:
        server.terminate()
        server.wait(60)
        server.stderr.close()
    assert json.loads(first)["level"] == "info", first
