"""The one way to run the server: `python -m app.serve` (the Docker image's CMD, and the README's).

It reads the settings (LAYERLAB_* variables, see the README) and runs uvicorn with them:
`LAYERLAB_WORKERS` processes sharing one listening socket, JSON logs (app.logs), our own access
lines instead of uvicorn's, and TCP_NODELAY on every connection.

Why TCP_NODELAY here: with several workers uvicorn binds the socket itself as `socket(AF_INET)`
(protocol 0), and asyncio only sets TCP_NODELAY on sockets whose protocol reads IPPROTO_TCP. On
the standard asyncio loop each keep-alive response then waits ~40 ms for the client's delayed ACK
(Nagle's algorithm; uvicorn issue #3149). uvloop happens to set it; we set it whatever the loop.
"""

import logging
import logging.config
import os
import shutil
import socket
import tempfile
from collections.abc import MutableMapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from app import process_environment
from app.config import Settings, SettingsError, exit_for, load_settings, unknown_variables
from app.logs import logging_config
from app.shared_memory import TABLE_DIR_ENV

APP = "app.main:app"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("layerlab.serve")

try:  # what uvicorn's "auto" picks: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornHttp
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornHttp  # type: ignore[assignment]


class HttpProtocol(_UvicornHttp):
    """uvicorn's HTTP protocol, with Nagle's algorithm off on each accepted TCP connection."""

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of several workers, letting go of the listening socket on SIGTERM.

    Each worker holds its own copy and accepts until its drain ends (app.lifecycle). Left open
    here, the socket would take new connections into its backlog after the last worker stopped
    accepting, and reset them only when this process exits; closed, they are refused at once,
    and a proxy retries another replica at once.
    """

    def handle_term(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_term()


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare_environment(settings: Settings, environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Variables the worker processes inherit. Returns the metrics folder made here, to remove at exit.

    - torch threads: unless set, the CPUs are shared out among the workers (two workers each
      using every core would fight over them).
    - metrics: several workers share their counts through files in PROMETHEUS_MULTIPROC_DIR
      (see app.observability); a folder given by the operator is emptied first, as
      prometheus_client requires, else a fresh one is made.
    - allocator and BLAS (app.process_environment): glibc reads MALLOC_* at a process's start and OpenBLAS
      its thread timeout when NumPy loads, so they are set here, before either happens in the
      workers; an operator's own values win.
    """
    for name, value in process_environment.process_environment(allocator=settings.tune_allocator).items():
        environ.setdefault(name, value)
    if settings.workers > 1 and settings.torch_threads == 0:
        environ["LAYERLAB_TORCH_THREADS"] = str(max(1, available_cpus() // settings.workers))
    if given := environ.get(METRICS_DIR_ENV):
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return None
    if settings.workers > 1:
        folder = Path(tempfile.mkdtemp(prefix="layerlab-metrics-"))
        environ[METRICS_DIR_ENV] = str(folder)
        return folder
    return None


def prepare_shared_memory_table(settings: Settings, environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """With several workers, the folder they share shared-memory registrations through (see
    app.shared_memory), made here (private to this user) unless the operator named one; returned to remove at exit."""
    if settings.workers <= 1 or environ.get(TABLE_DIR_ENV):
        return None
    folder = Path(tempfile.mkdtemp(prefix="layerlab-shm-"))
    environ[TABLE_DIR_ENV] = str(folder)
    return folder


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": settings.loop,
        "http": HttpProtocol,
        "ws": "none",
        "log_config": logging_config(settings.log_level),
        "log_level": settings.log_level,
        "access_log": False,  # app.observability writes one JSON line per request instead
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "timeout_keep_alive": settings.keep_alive_s,
        "server_header": False,
    }


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        exit_for(exc)
    # The JSON logs from here on (uvicorn installs the same configuration again), so that a
    # misspelled variable is warned about once, here, before any worker starts.
    logging.config.dictConfig(logging_config(settings.log_level))
    for line in unknown_variables():
        log.warning(line)
    made = prepare_environment(settings)
    table = prepare_shared_memory_table(settings)
    try:
        # The app (and its metrics) is imported by uvicorn: in each worker, or here with one
        # worker, always after prepare_environment.
        if settings.workers > 1:  # what uvicorn.run does then, with our supervisor
            config = uvicorn.Config(APP, **uvicorn_options(settings))
            Supervisor(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.run(APP, **uvicorn_options(settings))
    finally:
        for folder in (made, table):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
