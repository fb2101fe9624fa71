"""Overload: a bounded compute pool, a queue wait that ends in 503 + Retry-After, a compute time
limit that answers 504, health that never queues, and work dropped when its client has gone.

The pool's mechanics are tested with real threads held on a gate (exact and fast); the same
behaviours are then checked over real HTTP against uvicorn with real, heavy layer requests."""

import asyncio
import socket
import threading
import time

import httpx
import pytest

from app.compute_pool import ComputePool
from app.errors import ClientGone, ComputeTimeout, InvalidInput, Overloaded
from tests.live_server import ServerThread, raw_request

# 8.6 G multiply-adds (under the default limit): about half a second on two cores.
HEAVY = {"config": {"in_features": 2048, "out_features": 2048},
         "input": {"random": "normal", "shape": [2048, 2048]}, "encoding": "none"}
SMALL = {"config": {"in_features": 4, "out_features": 1}, "input": [[0.1, 0.2, 0.3, 0.4]]}


class Gate:
    """Work that blocks its worker thread until opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def __call__(self, result: object = "done") -> object:
        self.entered.set()
        assert self.opened.wait(10), "gate never opened"
        return result


def run(coroutine):
    return asyncio.run(coroutine)


def test_waits_for_a_worker_then_503_with_retry_after():
    async def scenario():
        pool, gate = ComputePool(1, queue_timeout_s=0.1, retry_after_s=3), Gate()
        holder = asyncio.create_task(pool.run(gate))
        await asyncio.to_thread(gate.entered.wait, 5)
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await pool.run(lambda: "never")
        waited = time.monotonic() - started
        gate.opened.set()
        assert await holder == "done"
        return pool, refused.value, waited

    pool, error, waited = run(scenario())
    assert error.status_code == 503 and error.headers == {"Retry-After": "3"}
    assert error.body()["limit"] == "compute_queue_timeout_s" and "LAYERLAB_COMPUTE_QUEUE_TIMEOUT_S" in error.detail
    assert 0.09 <= waited < 2
    assert (pool.counters.started, pool.counters.rejected) == (1, 1)


def test_a_waiting_request_runs_when_a_worker_frees():
    async def scenario():
        pool, gate = ComputePool(1, queue_timeout_s=5), Gate()
        holder = asyncio.create_task(pool.run(gate, "first"))
        await asyncio.to_thread(gate.entered.wait, 5)
        waiter = asyncio.create_task(pool.run(lambda: "second"))
        await asyncio.sleep(0.05)
        assert pool.waiting == 1 and not waiter.done()
        gate.opened.set()
        return await holder, await waiter, pool

    first, second, pool = run(scenario())
    assert (first, second) == ("first", "second")
    assert pool.busy == 0 and pool.counters.finished == 2


def test_a_full_queue_refuses_at_once():
    async def scenario():
        pool, gate = ComputePool(1, queue_timeout_s=5, queue_size=1), Gate()
        holder = asyncio.create_task(pool.run(gate))
        await asyncio.to_thread(gate.entered.wait, 5)
        waiter = asyncio.create_task(pool.run(lambda: "queued"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await pool.run(lambda: "never")
        elapsed = time.monotonic() - started
        gate.opened.set()
        await holder
        assert await waiter == "queued"
        return refused.value, elapsed

    error, elapsed = run(scenario())
    assert error.body()["limit"] == "compute_queue_size" and elapsed < 1


def test_compute_time_limit_answers_504_and_keeps_the_slot_until_the_thread_ends():
    async def scenario():
        pool, gate = ComputePool(1, timeout_s=0.1, queue_timeout_s=0.1), Gate()
        with pytest.raises(ComputeTimeout) as timed_out:
            await pool.run(gate)
        # The thread runs on, holding its slot: the pool stays bounded, the next request waits.
        assert pool.busy == 1 and not gate.opened.is_set()
        with pytest.raises(Overloaded):
            await pool.run(lambda: "never")
        gate.opened.set()
        for _ in range(100):
            if pool.busy == 0:
                break
            await asyncio.sleep(0.02)
        return timed_out.value, await pool.run(lambda: "after"), pool

    error, after, pool = run(scenario())
    assert error.status_code == 504 and error.body()["limit"] == "compute_timeout_s"
    assert after == "after"
    assert (pool.counters.timed_out, pool.counters.started, pool.counters.finished) == (1, 2, 2)


def test_work_of_a_client_gone_while_waiting_never_starts():
    ran = []

    async def scenario():
        pool, gate, gone = ComputePool(1, queue_timeout_s=5), Gate(), asyncio.Event()
        holder = asyncio.create_task(pool.run(gate))
        await asyncio.to_thread(gate.entered.wait, 5)
        waiter = asyncio.create_task(pool.run(lambda: ran.append("ran"), disconnected=gone.wait))
        await asyncio.sleep(0.05)
        gone.set()
        with pytest.raises(ClientGone):
            await waiter
        assert pool.waiting == 0
        gate.opened.set()
        await holder
        return pool

    pool = run(scenario())
    assert ran == []
    assert (pool.counters.started, pool.counters.dropped) == (1, 1)


def test_errors_of_the_work_reach_the_caller():
    def bad():
        raise InvalidInput("bad value", field="input")

    async def scenario():
        pool = ComputePool(1)
        with pytest.raises(InvalidInput):
            await pool.run(bad)
        return pool

    assert run(scenario()).busy == 0


# --- Over real HTTP (uvicorn in a thread of this process, so the pool can be watched). ---------

def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def post_in_background(url: str, body: dict) -> tuple[threading.Thread, list]:
    results: list = []

    def send() -> None:
        results.append(httpx.post(f"{url}/v1/layers/linear", json=body, timeout=60))

    thread = threading.Thread(target=send)
    thread.start()
    return thread, results


def test_503_with_retry_after_over_http():
    with ServerThread(compute_workers=1, compute_queue_timeout_s=0.05, retry_after_s=2) as server:
        pool = server.app.state.compute
        heavy, results = post_in_background(server.url, HEAVY)
        wait_until(lambda: pool.busy == 1)
        refused = httpx.post(f"{server.url}/v1/layers/linear", json=HEAVY, timeout=10)
        heavy.join()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert refused.json()["error"] == "Overloaded" and refused.json()["status"] == 503
    assert results[0].status_code == 200


def test_504_over_http_and_the_server_recovers():
    with ServerThread(compute_workers=1, compute_timeout_s=0.05) as server:
        pool = server.app.state.compute
        response = httpx.post(f"{server.url}/v1/layers/linear", json=HEAVY, timeout=60)
        assert response.status_code == 504, response.text
        assert response.json()["error"] == "ComputeTimeout" and "LAYERLAB_COMPUTE_TIMEOUT_S" in response.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        wait_until(lambda: pool.busy == 0, timeout_s=60)
        assert httpx.post(f"{server.url}/v1/layers/linear", json=SMALL).status_code == 200
    assert pool.counters.timed_out == 1


def test_health_never_queues_behind_compute():
    with ServerThread(compute_workers=2) as server:
        pool = server.app.state.compute
        heavies = [post_in_background(server.url, HEAVY) for _ in range(3)]  # 2 computing, 1 waiting
        wait_until(lambda: pool.busy == 2 and pool.waiting == 1)
        latencies = {}
        with httpx.Client(base_url=server.url) as client:
            for path in ("/healthz", "/metrics"):
                started = time.perf_counter()
                response = client.get(path)
                if response.status_code == 404:  # /metrics arrives with the operations issue
                    continue
                latencies[path] = time.perf_counter() - started
                assert response.status_code == 200
        assert pool.busy == 2, "the heavy requests finished first; the check proved nothing"
        for thread, _ in heavies:
            thread.join()
    assert all(results[0].status_code == 200 for _, results in heavies)
    assert max(latencies.values()) < 1.0, latencies


def test_a_disconnected_client_leaves_no_work_behind():
    """B (heavy too) waits behind A, then its client hangs up: B's work is dropped and never runs."""
    # inline_request_size=0: the last small request goes through the pool too (it is counted below).
    with ServerThread(compute_workers=1, compute_queue_timeout_s=30, inline_request_size=0) as server:
        pool = server.app.state.compute
        heavy, results = post_in_background(server.url, HEAVY)
        wait_until(lambda: pool.busy == 1)
        body = httpx.Request("POST", "http://x", json=HEAVY).content
        head = (b"POST /v1/layers/linear HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode())
        sock = raw_request(server.port, head, body)
        wait_until(lambda: pool.waiting == 1)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        wait_until(lambda: pool.counters.dropped == 1)
        assert pool.waiting == 0 and pool.busy == 1, "A must still be computing"
        heavy.join()
        assert results[0].status_code == 200
        assert httpx.post(f"{server.url}/v1/layers/linear", json=SMALL).status_code == 200
    assert pool.counters.started == 2  # A and the last request; never B


def test_small_requests_take_the_light_lane_while_heavy_ones_queue():
    """The heavy lane full and a queue behind it: a small request still answers at once."""
    with ServerThread(compute_workers=1, compute_light_workers=1) as server:
        pool = server.app.state.compute
        heavies = [post_in_background(server.url, HEAVY) for _ in range(2)]
        wait_until(lambda: pool.busy == 1 and pool.waiting == 1)
        with httpx.Client(base_url=server.url) as client:
            latencies = []
            for _ in range(5):
                started = time.perf_counter()
                assert client.post("/v1/layers/linear", json=SMALL).status_code == 200
                latencies.append(time.perf_counter() - started)
        assert pool.waiting == 1, "the heavy requests finished first; the check proved nothing"
        for thread, _ in heavies:
            thread.join()
    assert max(latencies) < 1.0, latencies


def test_without_a_light_lane_small_requests_queue_too():
    # inline_request_size=0: otherwise a request this small computes on the event loop, never queued.
    with ServerThread(compute_workers=1, compute_light_workers=0, compute_queue_timeout_s=0.05,
                      inline_request_size=0) as server:
        pool = server.app.state.compute
        heavy, _ = post_in_background(server.url, HEAVY)
        wait_until(lambda: pool.busy == 1)
        refused = httpx.post(f"{server.url}/v1/layers/linear", json=SMALL, timeout=10)
        heavy.join()
    assert refused.status_code == 503


def test_tiny_requests_compute_inline_even_when_the_pool_is_full():
    """A request estimated at most LAYERLAB_INLINE_REQUEST_SIZE skips the pool: no queue, no 503."""
    with ServerThread(compute_workers=1, compute_light_workers=0, compute_queue_timeout_s=0.05) as server:
        pool = server.app.state.compute
        heavy, _ = post_in_background(server.url, HEAVY)
        wait_until(lambda: pool.busy == 1)
        response = httpx.post(f"{server.url}/v1/layers/linear", json=SMALL, timeout=10)
        assert pool.busy == 1, "the heavy request finished first; the check proved nothing"
        heavy.join()
    assert response.status_code == 200 and pool.counters.started == 1
