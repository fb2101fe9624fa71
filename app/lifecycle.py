"""A serving process's stop: SIGTERM drains before the server shuts down.

Orchestrators stop a replica with SIGTERM and stop routing to it once its readiness probe fails
(Kubernetes also removes it from the Service's endpoints, a few seconds later everywhere). uvicorn,
on SIGTERM, stops accepting at once: requests routed here in those seconds would be refused. So
SIGTERM first starts a drain of `drain_s` seconds (setting LAYERLAB_DRAIN_S):

1. at once: /readyz answers 503 ("draining"), and responses say `Connection: close`, so clients
   holding a keep-alive connection here reconnect, through the balancer, to another replica;
2. meanwhile every request, new or in flight, is served as usual;
3. then the server's own SIGTERM handling runs (uvicorn's: stop accepting, finish the requests
   in flight, exit).

A second SIGTERM ends the drain at once; SIGINT (Ctrl+C) is left to uvicorn (no drain).

The hook wraps the handler uvicorn installed in the serving process (each worker with
LAYERLAB_WORKERS > 1, the only process otherwise), before the app starts: so it works however
uvicorn was started, with one worker or several (their supervisor passes SIGTERM on to each).
"""

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("layerlab.lifecycle")

SignalHandler = Callable[[int, FrameType | None], Any]


class Drain:
    """The drain state of one app; `install` hooks SIGTERM (from the app's startup, on its loop)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started_at: float | None = None
        """time.monotonic() when SIGTERM came; None while serving normally."""
        self._server_handler: SignalHandler | None = None
        self._handed_over = False

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Hook SIGTERM; False (nothing changed) with no drain period, off the main thread (signals
        go to the main thread only), or when nobody handles SIGTERM but the default action."""
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return False
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):
            return False
        self._server_handler = server_handler

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.started_at is not None:  # a second SIGTERM: stop now
                self._hand_over()
                return
            self.started_at = time.monotonic()
            # A signal handler runs between two bytecodes of the loop's thread: schedule, don't act.
            loop.call_soon_threadsafe(self._start, loop)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        logger.info(
            "SIGTERM: draining for %s s (readiness 503, requests still served), then shutting down", self.seconds
        )
        loop.call_later(self.seconds, self._hand_over)

    def _hand_over(self) -> None:
        if self._handed_over or self._server_handler is None:
            return
        self._handed_over = True
        logger.info("drain over: the server stops accepting and finishes the requests in flight")
        self._server_handler(signal.SIGTERM, None)
