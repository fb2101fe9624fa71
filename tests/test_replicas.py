"""A replica dies, nothing is lost: two `python -m app.serve` replicas behind nginx with the
compose file's .deploy/nginx.conf; under a bounded load one is SIGKILLed.

nginx sends every request the dead replica did not answer to the survivor (`proxy_next_upstream
error timeout non_idempotent`: a layer request is a pure computation; bodies buffered so they
can be sent again), so it never answers 502. One case no proxy can retry: the replica dies after
its response's header went out, and nginx has passed that header on; the client sees the
connection cut. The project's client (app.client) retries that, so its users see no error."""

import json
import shutil

import httpx
import pytest

from tests.replicas import Outcome, load_and_kill, nginx, nginx_statuses, replica

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here")


def linear_count(url: str) -> float:
    """POST /v1/layers/linear 200s this replica answered (its own /metrics, not through nginx)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith('layerlab_http_requests_total{method="POST",route="/v1/layers/linear",status="200"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def kill_one_under_load(tmp_path, *, clients: int, duration_s: float, kill_after_s: float,
                        sdk: bool) -> tuple[Outcome, float]:
    """The load's outcome, and how many of its requests the survivor answered."""
    with replica(tmp_path, "a") as (victim, victim_url), replica(tmp_path, "b") as (_, survivor_url):
        ports = [int(url.rsplit(":", 1)[1]) for url in (victim_url, survivor_url)]
        with nginx(tmp_path, ports) as url:
            before = linear_count(survivor_url)
            outcome = load_and_kill(url, victim, clients=clients, duration_s=duration_s, kill_after_s=kill_after_s,
                                    sdk=sdk)
            assert victim.wait(timeout=10) < 0  # it really died, by signal
            survivor_answered = linear_count(survivor_url) - before
            # The survivor carries on, through nginx.
            after = httpx.post(f"{url}/v1/layers/linear", json={"config": {"in_features": 1, "out_features": 1},
                                                                "input": [[1.0]]}, timeout=30)
            assert after.status_code == 200
    return outcome, survivor_answered


def test_a_killed_replica_costs_no_client_an_error(tmp_path):
    outcome, survivor_answered = kill_one_under_load(tmp_path, clients=4, duration_s=6.0, kill_after_s=2.0, sdk=True)
    assert outcome.errors() == []
    statuses = nginx_statuses(tmp_path)
    assert 502 not in statuses and 504 not in statuses  # nginx itself never gave up on a request
    after_kill = [began for began, _, _ in outcome.results if began > outcome.killed_at]
    assert len(after_kill) > 0 and len(outcome.results) > 20
    # Every request after the kill was answered by the survivor (and some before it too).
    assert survivor_answered >= len(after_kill)


@pytest.mark.slow
@pytest.mark.parametrize("sdk", [False, True], ids=["httpx", "sdk"])
def test_latency_while_a_replica_dies(tmp_path, sdk):
    """p50/p99 before, in the 2 s after, and after the kill (printed; `-m slow -s` to see them)."""
    outcome, _ = kill_one_under_load(tmp_path, clients=8, duration_s=20.0, kill_after_s=8.0, sdk=sdk)
    summary = {**outcome.summary(), "error_kinds": sorted({status for _, _, status in outcome.errors()})}
    print("\n" + json.dumps(summary, indent=2))
    assert 502 not in nginx_statuses(tmp_path)
    # Without retries, only a response cut after its header can fail (see the module's docstring).
    assert set(summary["error_kinds"]) <= ({"RemoteProtocolError", "ReadError"} if not sdk else set())
    assert summary["kill_window_2s"]["n"] > 0
