"""The deployment files: Dockerfile, compose, nginx; and the server started with the image's command line.

These machines have a Docker client but no engine, so the image is not built here: its files are
read and checked, compose validates the compose file when it can, and the image's exact command
line runs outside Docker.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.serve import available_cpus
from tests.live_server import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


# -- reading the Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def arguments(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def image_cmd() -> list[str]:
    (cmd,) = arguments("CMD")
    return json.loads(cmd)  # exec form: no shell between Docker's signals and the server


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in arguments("ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def healthcheck() -> tuple[str, list[str]]:
    (args,) = arguments("HEALTHCHECK")
    options, _, command = args.partition(" CMD ")
    return options, json.loads(command)


def readme_run_command() -> str:
    """The README's first command: the setup, then the server."""
    section = (ROOT / "README.md").read_text().split("## The two commands", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).strip()


def ci_torch_pin() -> str:
    return re.search(r"torch==([\w.+]+)", (ROOT / ".ci" / "run").read_text()).group(1)


# -- the Dockerfile


def test_dockerfile_base_and_cpu_only_torch():
    (base,) = arguments("FROM")
    assert base.startswith("python:3.11-slim")
    torch_install = [run for run in arguments("RUN") if "torch==" in run]
    assert len(torch_install) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_install[0]
    assert f"torch=={ci_torch_pin()}" in torch_install[0]  # the version the tests run against
    # Installed before the project's requirements, which then find torch already there.
    runs = arguments("RUN")
    assert runs.index(torch_install[0]) < next(i for i, run in enumerate(runs) if "requirements" in run)


def test_dockerfile_runs_as_an_unprivileged_user():
    users = arguments("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = [run for run in arguments("RUN") if "useradd" in run]
    assert created and (f"--uid {user}" in created[0] or user in created[0].split())
    # Nothing after USER needs root.
    instructions = [kw for kw, _ in dockerfile()]
    assert "RUN" not in instructions[instructions.index("USER"):]


def test_dockerfile_healthcheck_probes_liveness_without_curl():
    options, command = healthcheck()
    assert "--interval=" in options and "--timeout=" in options and "--start-period=" in options
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2] and "urllib" in command[2]


def test_dockerfile_cmd_is_the_readme_run_command():
    cmd = image_cmd()
    assert readme_run_command().endswith(f"/{' '.join(cmd)}")  # .venv/bin/python -m app.serve
    assert image_env()["LAYERLAB_HOST"] == "0.0.0.0"
    assert "LAYERLAB_WORKERS" in image_env()
    assert arguments("EXPOSE") == [image_env()["LAYERLAB_PORT"]]
    for name in image_env():
        if name.startswith("LAYERLAB_"):
            assert name.removeprefix("LAYERLAB_").lower() in Settings.model_fields, name


def test_dockerignore_lets_in_only_what_the_image_copies():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {args.split()[0].rstrip("/") for args in arguments("COPY")}
    assert copied <= allowed
    assert not any(name.startswith(("tests", ".git", ".venv")) for name in allowed)


# -- docker compose and nginx


def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def nginx_conf() -> str:
    return (ROOT / ".deploy" / "nginx.conf").read_text()


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose`, when one answers here."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            if subprocess.run([*command, "version"], capture_output=True, timeout=60).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def test_compose_config_validates():
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client here (`docker compose version` fails)")
    result = subprocess.run([*command, "config", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_compose_api_service_scales():
    api = compose_file()["services"]["api"]
    assert api["build"] == "."
    # A fixed host port or container name would make `--scale api=4` fail.
    assert "ports" not in api and "container_name" not in api
    assert [str(port) for port in api["expose"]] == [image_env()["LAYERLAB_PORT"]]
    assert api["healthcheck"]["test"] == ["CMD", *healthcheck()[1]]
    for name in api["environment"]:
        assert name.startswith("LAYERLAB_") and name.removeprefix("LAYERLAB_").lower() in Settings.model_fields, name


def test_compose_load_balancer_is_nginx_in_front_of_every_replica():
    services = compose_file()["services"]
    lb = services["lb"]
    image, _, tag = lb["image"].partition(":")
    assert image == "nginx"
    # `resolve` in an upstream (re-reading Docker's DNS as replicas come and go) needs nginx 1.27.3.
    assert tuple(int(part) for part in re.match(r"[\d.]+", tag).group().strip(".").split(".")) >= (1, 27, 3)
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    source, target = lb["volumes"][0].split(":")[:2]
    assert (ROOT / source).resolve() == ROOT / ".deploy" / "nginx.conf" and target == "/etc/nginx/nginx.conf"
    conf = nginx_conf()
    listen = re.search(r"listen (\d+);", conf).group(1)
    assert lb["ports"][0].endswith(f":{listen}")
    assert re.search(rf"server api:{image_env()['LAYERLAB_PORT']} resolve", conf)
    assert "proxy_pass http://api;" in conf and "proxy_set_header X-Request-ID" in conf
    # nginx must drop idle upstream connections before uvicorn does, or it reuses closing ones (502s).
    upstream_idle = int(re.search(r"keepalive_timeout (\d+)s;", conf).group(1))
    assert upstream_idle < Settings().keep_alive_s
    prometheus = yaml.safe_load((ROOT / ".deploy" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["port"] == int(image_env()["LAYERLAB_PORT"])


def test_nginx_conf_parses_when_nginx_is_here(tmp_path):
    """`nginx -t` on the real file, with what only Docker provides (the `api` name, nginx >= 1.27.3's
    `resolve`) replaced by local equivalents."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed here")
    local = nginx_conf().replace("server api:", "server 127.0.0.1:").replace(" resolve ", " ")
    local = local.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    (tmp_path / "nginx.conf").write_text(local)
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- the image's command line, outside Docker


def count(metrics_text: str, route: str) -> float:
    pattern = rf'^layerlab_http_requests_total\{{method="GET",route="{re.escape(route)}",status="200"\}} (\S+)$'
    match = re.search(pattern, metrics_text, flags=re.M)
    return float(match.group(1)) if match else 0.0


def test_the_image_command_serves_with_two_workers(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = image_cmd()
    argv = [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(image_env())
    env.update(LAYERLAB_HOST="127.0.0.1", LAYERLAB_PORT=str(port), LAYERLAB_WORKERS="2", TMPDIR=str(tmp_path))
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        server = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        wait_healthy(base, 120, server, stderr, path="/readyz")
        health_env = {**os.environ, "LAYERLAB_PORT": str(port)}
        probe = [sys.executable, *healthcheck()[1][1:]]
        assert subprocess.run(probe, env=health_env, timeout=30).returncode == 0

        # Liveness and readiness.
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["status"] == "ready" and ready["checks"]["torch:cpu"] == "ok"
        info = httpx.get(f"{base}/v1/info").json()
        assert info["workers"] == 2 and info["devices"][0]["threads"] == max(1, available_cpus() // 2)

        # A layer request, checked against torch itself.
        x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
        body = {"config": {"in_features": 4, "out_features": 3}, "input": x.tolist(), "compare": True}
        response = httpx.post(f"{base}/v1/layers/linear", json=body, headers={"X-Request-ID": "deploy-1"}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "deploy-1"
        result = response.json()
        weight, bias = (torch.tensor(result["parameters"][name]["data"]) for name in ("weight", "bias"))
        expected = torch.nn.functional.linear(torch.from_numpy(x), weight, bias)
        torch.testing.assert_close(torch.tensor(result["output"]["data"]), expected)
        assert result["comparison"]["allclose"]

        # Metrics add up over both workers, whichever answers: 8 fresh connections + the probe.
        for _ in range(8):
            assert httpx.get(f"{base}/healthz").status_code == 200  # a new connection each time
        for _ in range(3):
            assert count(httpx.get(f"{base}/metrics").text, "/healthz") == 1 + 1 + 8
        (metrics_dir,) = tmp_path.glob("layerlab-metrics-*")
        workers = {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir.glob("gauge_livesum_*.db")}
        assert len(workers) == 2 and server.pid not in workers

        # Each worker's own CPU time and resident memory, by pid, whichever worker answers.
        for _ in range(3):
            families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)}
            cpu = {int(s.labels["pid"]): s.value for s in families["process_cpu_seconds"].samples}
            resident = {int(s.labels["pid"]): s.value for s in families["process_resident_memory_bytes"].samples}
            assert set(cpu) == set(resident) == workers
            assert all(seconds > 0 for seconds in cpu.values())  # torch's import alone takes CPU seconds
            assert all(100 * 2**20 < size < 4 * 2**30 for size in resident.values())  # torch is loaded
    finally:
        server.send_signal(signal.SIGTERM)  # what `docker stop` sends
        returncode = server.wait(timeout=60)
    assert returncode == 0, stderr.read_text()[-3000:]
    assert not list(tmp_path.glob("layerlab-metrics-*")), "the metrics folder outlived the server"
    assert subprocess.run(probe, env=health_env, timeout=30, capture_output=True).returncode != 0

    # Logs: JSON on both streams; our request's access line on stdout.
    access = [orjson.loads(line) for line in stdout.read_text().splitlines()]
    (line,) = [entry for entry in access if entry["request_id"] == "deploy-1"]
    assert {k: line[k] for k in ("method", "route", "status", "kind", "backend")} == {
        "method": "POST", "route": "/v1/layers/linear", "status": 200, "kind": "linear", "backend": "torch"}
    assert line["duration_ms"] > 0
    messages = [orjson.loads(entry)["message"] for entry in stderr.read_text().splitlines()]
    assert sum("Application startup complete" in m for m in messages) == 2


def test_every_setting_is_in_a_configuration_table():
    """The README's table (what most users set) and .deploy/README.md's (operations): each setting once."""
    tables = [("README.md", "## Configuration"), (".deploy/README.md", "## Settings for operations")]
    documented = []
    for page, heading in tables:
        section = (ROOT / page).read_text().split(heading, 1)[1].split("\n## ", 1)[0]
        documented += re.findall(r"^\| `LAYERLAB_([A-Z0-9_]+)` \|", section, flags=re.M)
    assert sorted(documented) == sorted(name.upper() for name in Settings.model_fields)
