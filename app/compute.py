"""Compute runs in a bounded thread pool, off the event loop, so health checks never wait on it."""

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class ComputePool:
    def __init__(self, workers: int) -> None:
        self.limiter = anyio.CapacityLimiter(workers)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
