"""The one way to run the server: `python -m app.serve` (the Docker image's CMD, and the README's).

It reads the settings (LAYERLAB_* variables, see the README) and runs uvicorn with them:
`LAYERLAB_WORKERS` processes sharing one listening socket, JSON logs (app.logs), our own access
lines instead of uvicorn's, TCP_NODELAY on every connection, and large request bodies received
straight into one buffer (`HttpProtocol`).

Why TCP_NODELAY here: with several workers uvicorn binds the socket itself as `socket(AF_INET)`
(protocol 0), and asyncio only sets TCP_NODELAY on sockets whose protocol reads IPPROTO_TCP. On
the standard asyncio loop each keep-alive response then waits ~40 ms for the client's delayed ACK
(Nagle's algorithm; uvicorn issue #3149). uvloop happens to set it; we set it whatever the loop.
"""

import asyncio
import logging
import logging.config
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, MutableMapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import httptools  # uvicorn[standard]'s parser, what uvicorn's "auto" picks
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.supervisors import Multiprocess

from app import process_environment
from app.config import Settings, SettingsError, exit_for, load_settings, unknown_variables
from app.logs import logging_config
from app.shared_memory import TABLE_DIR_ENV

APP = "app.main:app"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("layerlab.serve")

DIRECT_BODY_BYTES = 2**20
"""Bodies declaring at least this many bytes are received straight into one buffer (`HttpProtocol`)."""
READ_BUFFER_BYTES = 256 * 1024
"""The buffer every other read lands in: uvloop's own read size."""


class _ReadBuffer(threading.local):
    """One read buffer per event loop thread: a read is parsed (its pieces copied out as bytes by
    httptools) before the loop reads the next, from any connection, as uvloop does with its own."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_BUFFER_BYTES))


_read_buffer = _ReadBuffer()


def _tcp_nodelay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with Nagle's algorithm off on each accepted TCP connection,
    and a large request body received straight into one buffer.

    uvicorn reads a body as uvloop hands it over: each read (up to 256 KiB) becomes a bytes
    object, httptools copies its body part into another, uvicorn appends that to the request's
    bytearray, and `receive()` copies the bytearray into the bytes of an ASGI message, which
    the app then copies into its own buffer: five copies of the notebook's 23 MB upload after
    the kernel's, and a round of Python per read (issue 19; tests/benchmarks/NOTES.md).

    Here the socket is read with `recv_into` (asyncio's BufferedProtocol, which uvloop and the
    standard loop both serve; see `_BufferedReads`): headers and small bodies into a reused buffer and through the
    parser as before; and when the app asks for a body that declares DIRECT_BODY_BYTES or
    more with a Content-Length (and no Transfer-Encoding), the rest of it is read straight
    into one buffer of that size, and the app gets the whole body in one `http.request`
    message whose body is a writable memoryview of that buffer. The buffer is `np.empty`:
    its pages are touched only as bytes arrive, so a client that declares much and sends
    little costs little, and limits on the declared size (app.api.body_limits) are checked
    before the app asks. Chunked bodies, small ones, keep-alive and pipelining are uvicorn's.
    """

    def connection_made(self, transport: Any) -> None:
        _tcp_nodelay(transport)
        super().connection_made(transport)
        self.body_into: memoryview | None = None
        self.body_received = 0
        transport.set_protocol(_BufferedReads(self))

    # -- reading: asyncio.BufferedProtocol's half, called by _BufferedReads --------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.body_into is not None:
            return self.body_into[self.body_received :]  # never past the body: no next request's bytes
        return _read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.body_into is None:
            self.data_received(_read_buffer.view[:nbytes])  # type: ignore[arg-type]  # httptools reads buffers
            return
        self.body_received += nbytes
        if self.body_received == len(self.body_into):
            self._body_complete()

    def _body_complete(self) -> None:
        """The parser saw the headers and part of this body, and never the rest: a fresh one
        for the next request on this connection."""
        self.body_into = None
        self.parser = httptools.HttpRequestParser(self)
        with suppress(AttributeError):  # as uvicorn does; httptools < 0.6.3 has no leniencies
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.cycle.more_body = False
        self.cycle.message_event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.body_into = None
        super().connection_lost(exc)

    # -- the request's cycle -----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = _DirectBodyCycle  # the same object; `receive` may take a body whole
            cycle.protocol = self  # type: ignore[attr-defined]

    async def receive_body(self, cycle: "_DirectBodyCycle", size: int) -> dict[str, Any]:
        """The rest of `cycle`'s body (`size` bytes) read into one buffer; one ASGI message."""
        # Imported here: this module runs before prepare_environment, and OpenBLAS reads its
        # variables when NumPy loads (app.process_environment).
        import numpy as np

        buffer = np.empty(size, np.uint8).data
        got = len(cycle.body)
        buffer[:got] = cycle.body  # what arrived with the headers, before the app asked
        cycle.body = bytearray()
        self.body_into, self.body_received = buffer, got
        self.flow.resume_reading()
        while self.body_into is not None and not cycle.disconnected:
            await cycle.message_event.wait()
            cycle.message_event.clear()
        if cycle.disconnected or cycle.response_complete:
            self.body_into = None
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": buffer, "more_body": False}


class _BufferedReads(asyncio.BufferedProtocol):
    """What the transport calls: `HttpProtocol`'s methods, as an asyncio.BufferedProtocol.

    uvloop reads with `recv_into` only for a protocol that is not also an asyncio.Protocol,
    which uvicorn's protocols are; so each connection's transport gets this one, whose methods
    are the HTTP protocol's own (bound: no extra call per read).
    """

    def __init__(self, http: HttpProtocol) -> None:
        self.get_buffer = http.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = http.buffer_updated  # type: ignore[method-assign]
        self.eof_received = http.eof_received  # type: ignore[method-assign]
        self.connection_lost = http.connection_lost  # type: ignore[method-assign]
        self.pause_writing = http.pause_writing  # type: ignore[method-assign]
        self.resume_writing = http.resume_writing  # type: ignore[method-assign]


class _DirectBodyCycle(RequestResponseCycle):
    """uvicorn's request cycle, whose `receive` takes the rest of a large body in one message."""

    protocol: HttpProtocol
    delivered = 0
    """Body bytes already handed to the app in uvicorn's messages (after Expect: 100-continue, say)."""

    async def receive(self) -> Any:
        if self.more_body and not self.waiting_for_100_continue and not self.disconnected:
            size = _direct_body_size(self.scope["headers"])
            if size is not None and self.protocol.cycle is self:
                return await self.protocol.receive_body(self, size - self.delivered)
        message = await super().receive()
        if message["type"] == "http.request":
            self.delivered += len(message["body"])
        return message


def _direct_body_size(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a body to receive whole: DIRECT_BODY_BYTES or more, not chunked."""
    size = None
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and size is not None):
            return None
        if name == b"content-length":
            if not value.isdigit():
                return None
            size = int(value)
    return size if size is not None and size >= DIRECT_BODY_BYTES else None


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
        # A worker answers the supervisor's ping only once torch has imported, which can take more
        # than uvicorn's default 5 s on a busy machine; it would be killed as hung and restarted.
        "timeout_worker_healthcheck": 30,
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
