"""Compute runs in a bounded thread pool, off the event loop, so health checks never wait on it.

Admission and time limits (settings in app.config):
- Two lanes. `compute_workers` threads compute heavy requests; `compute_light_workers` more are
  kept for light ones (a few milliseconds of work, known from the request's plan before any
  tensor is drawn: app.stacks.plan), so small requests never queue behind big ones.
- A request that finds its lane busy waits, at most `compute_queue_timeout_s`, then gets 503
  with Retry-After. With `compute_queue_size` requests already waiting it gets the 503 at once.
- A request whose client disconnects while it waits is dropped: its work never starts.
- `compute_timeout_s` bounds how long a request waits for its result: past it the answer is 504.
  Python cannot kill a thread, so the worker finishes that computation unseen and only then
  frees its slot; the pool never runs more than `compute_workers` computations, so overload
  shows as 503s rather than as unbounded threads. The work limits (LAYERLAB_MAX_MACS and the
  element limits) are what keeps any one computation short.

Known limit: orjson and NumPy's list conversion hold the GIL, so a very large JSON body being
parsed delays every coroutine (health checks too) for as long as that parse takes. Run several
worker processes for isolation.
"""

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import anyio

from app.errors import ClientGone, ComputeTimeout, Overloaded

T = TypeVar("T")


@dataclass
class PoolCounters:
    """Totals since start, for tests and metrics."""

    started: int = 0
    finished: int = 0
    rejected: int = 0
    """503: queue full or queue wait over."""
    dropped: int = 0
    """The client left before the work started."""
    timed_out: int = 0
    """504: the answer was given up; the work ran on."""


class ComputePool:
    def __init__(
        self,
        workers: int,
        *,
        light_workers: int = 0,
        queue_timeout_s: float = 10.0,
        queue_size: int = 64,
        timeout_s: float = 120.0,
        retry_after_s: int = 1,
    ) -> None:
        self.workers = workers
        self.light_workers = light_workers
        self.queue_timeout_s = queue_timeout_s
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        # A slot is held from admission until the worker thread returns, even when the request
        # has already been answered 504: that is what keeps the pool bounded.
        self.slots = anyio.CapacityLimiter(workers)
        self.light_slots = anyio.CapacityLimiter(light_workers) if light_workers else self.slots
        self.executor = ThreadPoolExecutor(max_workers=workers + light_workers, thread_name_prefix="compute")
        self.counters = PoolCounters()
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Heavy-lane workers computing."""
        return self.slots.borrowed_tokens

    @property
    def waiting(self) -> int:
        """Requests waiting for a heavy-lane worker."""
        return self.slots.statistics().tasks_waiting

    async def run(
        self,
        fn: Callable[..., T],
        *args: object,
        disconnected: Callable[[], Awaitable[object]] | None = None,
        light: bool = False,
    ) -> T:
        """`fn(*args)` in a worker thread of the heavy lane (or the light one: `light`).
        `disconnected()` returns when the client has gone."""
        slots, slot = (self.light_slots if light else self.slots), object()
        await self._admit(slots, slot, disconnected)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # request-scoped context (request ids) follows the work
        try:
            future = self.executor.submit(context.run, self._work, fn, args, slots, slot, loop)
        except BaseException:
            slots.release_on_behalf_of(slot)
            raise
        return await self._result(future, disconnected)

    async def _admit(
        self, slots: anyio.CapacityLimiter, slot: object, disconnected: Callable[[], Awaitable[object]] | None
    ) -> None:
        """Wait for a slot: 503 when the queue is full or the wait runs out, ClientGone if the client leaves."""
        try:
            slots.acquire_on_behalf_of_nowait(slot)
            return
        except anyio.WouldBlock:
            pass
        waiting, workers = slots.statistics().tasks_waiting, int(slots.total_tokens)
        if waiting >= self.queue_size:
            raise self._rejected(
                f"all {workers} compute workers are busy and {waiting} requests are waiting",
                "compute_queue_size",
                value=waiting,
            )
        outcome = await _first_of(slots.acquire_on_behalf_of(slot), disconnected, self.queue_timeout_s)
        if outcome == "gone":
            self._count("dropped")
            raise ClientGone("the client disconnected while its request waited for a compute worker")
        if outcome == "timeout":
            raise self._rejected(
                f"all {workers} compute workers stayed busy for {self.queue_timeout_s} s", "compute_queue_timeout_s"
            )

    def _rejected(self, why: str, setting: str, **details: int) -> Overloaded:
        """A 503 that names the setting to raise and when to retry; counted as rejected."""
        self._count("rejected")
        return Overloaded(
            f"{why} (setting LAYERLAB_{setting.upper()}); retry in {self.retry_after_s} s",
            retry_after=self.retry_after_s,
            limit=setting,
            **details,
        )

    async def _result(self, future: "Future[T]", disconnected: Callable[[], Awaitable[object]] | None) -> T:
        waited = asyncio.wrap_future(future)
        outcome = await _first_of(waited, disconnected, self.timeout_s, shield=True)
        if outcome == "done":
            return future.result()
        if outcome == "gone":
            raise ClientGone("the client disconnected while its request computed")
        self._count("timed_out")
        raise ComputeTimeout(
            f"the computation took longer than {self.timeout_s} s (setting LAYERLAB_COMPUTE_TIMEOUT_S); "
            "its worker finishes it unseen and then takes new work",
            limit="compute_timeout_s",
        )

    def _work(
        self,
        fn: Callable[..., T],
        args: tuple,
        slots: anyio.CapacityLimiter,
        slot: object,
        loop: asyncio.AbstractEventLoop,
    ) -> T:
        self._count("started")
        try:
            return fn(*args)
        finally:
            self._count("finished")
            # The limiter belongs to the event loop: release there. If that loop is gone (a test
            # client's loop, closed), no coroutine of it can be waiting, so release here.
            try:
                loop.call_soon_threadsafe(slots.release_on_behalf_of, slot)
            except RuntimeError:
                slots.release_on_behalf_of(slot)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.counters, name, getattr(self.counters, name) + 1)


async def _first_of(
    awaitable: Awaitable[object],
    disconnected: Callable[[], Awaitable[object]] | None,
    timeout_s: float,
    shield: bool = False,
) -> str:
    """'done', 'gone' (the client left first) or 'timeout'. The loser is cancelled (unless shielded)."""
    main = asyncio.ensure_future(awaitable)
    watchers = {main}
    gone = asyncio.ensure_future(disconnected()) if disconnected else None
    if gone is not None:
        watchers.add(gone)
    try:
        done, _ = await asyncio.wait(watchers, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        _cancel(main, gone, shield)
        raise
    if main in done:
        _cancel(None, gone, shield)
        main.result()  # raise what the work raised
        return "done"
    _cancel(main, gone, shield)
    return "gone" if gone is not None and gone in done else "timeout"


def _cancel(main: "asyncio.Future[object] | None", gone: "asyncio.Future[object] | None", shield: bool) -> None:
    if gone is not None and not gone.done():
        gone.cancel()
    if main is not None and not main.done():
        if shield:  # left to finish; nobody will read its outcome, so asyncio must not log it
            main.add_done_callback(lambda f: f.cancelled() or f.exception())
        else:
            main.cancel()
