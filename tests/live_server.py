"""Start the real app under uvicorn on 127.0.0.1 (a free port), for tests and scripts: as a
subprocess (`live_server`, `ServerProcess`: its memory can be read from /proc; `ServeProcess`: the
run command `python -m app.serve`) or in a thread of the test process (`ServerThread`: its app
state can be inspected)."""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
                app: str = "app.main:app") -> Iterator[str]:
    """Yields the base URL once /healthz answers; stops the server afterwards."""
    with ServerProcess(*args, env=env, app=app, timeout_s=timeout) as server:
        yield server.url


def wait_healthy(url: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None,
                 log_path: Path | None = None, path: str = "/healthz") -> None:
    """Returns once `path` answers 200; raises if the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            said = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{said}")
        try:
            if httpx.get(f"{url}{path}", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer {path} in {timeout_s} s")


class ServerProcess:
    """`python -m uvicorn <app> <args>` with LAYERLAB_* settings from `env`. Its output goes to a
    file (`log_path`, else a temporary one), never to a pipe nobody reads, which would stall the
    server once full; tests read what it logged, and a failed start shows it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log_path: Path | None = None,
                 app: str = "app.main:app", timeout_s: float = 60.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="layerlab-server-", suffix=".log")[1])
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ServerProcess":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.url, self.timeout_s, self.process, self.log_path)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.own_log:
            self.log_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident) of the server process, in KiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
        return values


class ServeProcess(ServerProcess):
    """The run command itself, `python -m app.serve`, on 127.0.0.1 and a free port (LAYERLAB_PORT)."""

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None,
                 timeout_s: float = 60.0) -> None:
        super().__init__(env=env, log_path=log_path, timeout_s=timeout_s)
        self.command = [sys.executable, "-m", "app.serve"]
        self.env.update(LAYERLAB_HOST="127.0.0.1", LAYERLAB_PORT=str(self.port))


class ServerThread:
    """uvicorn serving `create_app(Settings(**settings))` from a thread of this process."""

    def __init__(self, **settings: object) -> None:
        import uvicorn

        from app.config import Settings
        from app.main import create_app

        self.app = create_app(Settings(**settings))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        wait_healthy(self.url, timeout_s=20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def raw_request(port: int, head: bytes, body: bytes = b"", timeout_s: float = 10.0) -> socket.socket:
    """A socket that has sent `head` (request line and headers, without the blank line) and `body`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.sendall(head + b"\r\n\r\n" + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response (Content-Length framed, or up to close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", -1))
    while length < 0 or len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length] if length >= 0 else rest


def exchange(port: int, method: str, target: bytes | str, body: bytes = b"",
             headers: dict[str, str] | None = None, timeout_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these bytes on the wire (no client-side path normalization)."""
    target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: " + str(len(body)).encode()]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    with raw_request(port, b"\r\n".join(lines), body, timeout_s=timeout_s) as sock:
        return read_response(sock)
