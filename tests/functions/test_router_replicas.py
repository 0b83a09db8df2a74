"""Replicas behind the local router (a real router process, reading a real PostgreSQL): requests go
to the replica with the fewest in flight, never past the revision's containerConcurrency, over
kept-alive connections, around a replica that refuses connections; the runtime starts and retires
a revision's replicas together.

The upstreams of the first tests are small HTTP servers of this module (uvicorn on loopback), not
functions: they count what the router does to them (requests in flight, connections), which a
function does not expose. The last test runs real func-python replicas."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import httpx
import psycopg
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from pefm.local.runtime import LocalRuntime, free_port, record_revision, revision_alive
from pefm.rollout.local import LocalRouter
from pefm.rollout.router import TrafficTarget
from pefm.storage.database import Database

ADMIN = "test-router-admin"


class Upstream:
    """An HTTP server that answers after ``?delay=`` seconds and counts the requests it has in
    flight (the peak too) and the connections they came over."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.in_flight = self.peak = self.requests = 0
        self.connections: set[tuple[str, int]] = set()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope, receive, send) -> None:
        self.connections.add(tuple(scope["client"]))
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            delay = float(parse_qs(scope["query_string"].decode()).get("delay", ["0"])[0])
            await asyncio.sleep(delay)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": str(self.port).encode()})
        finally:
            self.in_flight -= 1

    def __enter__(self) -> Upstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "upstream did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack(module_schema, tmp_path_factory):
    """A router for the service ``bench`` (what the tests register as its revisions)."""
    runtime = LocalRuntime(module_schema, tmp_path_factory.mktemp("replicas"))
    db = Database(module_schema, max_size=2)
    yield runtime, db
    runtime.stop_all()
    db.close()


def route(db, service: str, revision: str, urls: list[str], concurrency: int = 0) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        record_revision(conn, service, revision, urls, container_concurrency=concurrency)
    LocalRouter(db, {}).set_traffic(service, [TrafficTarget(revision, 100, None)])


def start_router(runtime, service: str) -> str:
    return runtime.start_router(service, env={"PEFM_ADMIN_TOKEN": ADMIN}).url


def routed_per_replica(router: str, revision: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{router}/_router/metrics").text):
        for sample in family.samples:
            assert not sample.name.endswith("_created"), sample.name  # the functions expose none either
            if sample.name == "pefm_router_routed_total" and sample.labels["revision"] == revision:
                counts[sample.labels["replica"]] = counts.get(sample.labels["replica"], 0) + sample.value
    return counts


def test_requests_never_exceed_a_replicas_concurrency_and_spread_over_the_replicas(stack):
    """containerConcurrency 1 and two replicas: eight concurrent requests of 0.3 s each are all
    answered, each replica never holds more than one, so they take four rounds; the ones that
    waited are counted as queued."""
    runtime, db = stack
    with Upstream() as a, Upstream() as b:
        route(db, "limited", "limited-1", [a.url, b.url], concurrency=1)
        router = start_router(runtime, "limited")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.get(f"{router}/?delay=0.3", timeout=30), range(8)))
        took = time.monotonic() - started
        assert [r.status_code for r in answers] == [200] * 8
        assert (a.peak, b.peak) == (1, 1)
        assert a.requests + b.requests == 8 and min(a.requests, b.requests) >= 3
        assert took >= 4 * 0.3
        metrics = httpx.get(f"{router}/_router/metrics").text
        queued = [
            s for f in text_string_to_metric_families(metrics) for s in f.samples if s.name.endswith("queued_total")
        ]
        assert queued and queued[0].value >= 4  # 6 when the eight arrive within 0.3 s
        assert routed_per_replica(router, "limited-1") == {"0": a.requests, "1": b.requests}


def test_the_least_loaded_replica_takes_the_next_request(stack):
    """One replica holds a slow request: the next ten (quick, one at a time) all go to the other."""
    runtime, db = stack
    with Upstream() as slow_one, Upstream() as other:
        route(db, "balanced", "balanced-1", [slow_one.url, other.url])
        router = start_router(runtime, "balanced")
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.get, f"{router}/?delay=1.5", timeout=30)
            deadline = time.monotonic() + 5
            while slow_one.in_flight + other.in_flight == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            busy, idle = (slow_one, other) if slow_one.in_flight else (other, slow_one)
            before = idle.requests
            answers = [httpx.get(f"{router}/", timeout=10) for _ in range(10)]
            assert held.result().status_code == 200
        assert all(r.status_code == 200 and r.text == str(idle.port) for r in answers)
        assert idle.requests - before == 10 and busy.requests == 1


def test_upstream_connections_are_kept_alive(stack):
    """Two hundred requests, a new client connection each, reach the replica over one connection."""
    runtime, db = stack
    with Upstream() as upstream:
        route(db, "pooled", "pooled-1", [upstream.url])
        router = start_router(runtime, "pooled")
        for _ in range(200):
            assert httpx.get(f"{router}/", timeout=10).status_code == 200
        assert upstream.requests == 200
        assert len(upstream.connections) == 1


def test_a_replica_that_refuses_connections_is_left_out(stack):
    """A replica whose process is gone: every request is still answered, by the live one, and
    the router's table shows the dead one down."""
    runtime, db = stack
    with Upstream() as live:
        dead = f"http://127.0.0.1:{free_port()}"
        route(db, "halfdead", "halfdead-1", [dead, live.url])
        router = start_router(runtime, "halfdead")
        answers = [httpx.get(f"{router}/", timeout=10) for _ in range(20)]
        assert [r.status_code for r in answers] == [200] * 20
        assert live.requests == 20
        table = httpx.get(f"{router}/_router/traffic", headers={"authorization": f"Bearer {ADMIN}"}).json()
        assert [(r["url"], r["down"]) for r in table["revisions"]["halfdead-1"]] == [(dead, True), (live.url, False)]


def test_no_replica_accepting_connections_is_a_json_502(stack):
    runtime, db = stack
    route(db, "alldead", "alldead-1", [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    router = start_router(runtime, "alldead")
    answer = httpx.get(f"{router}/", timeout=10)
    assert answer.status_code == 502 and "no replica accepts connections" in answer.json()["error"]


def test_a_request_target_that_is_not_a_path_is_refused_not_fetched(stack):
    """`GET *@host:port/x` appended to a replica's URL named another host, which the router then
    fetched for the client (and `*` alone was a 500): a target must be a path, else 400."""
    runtime, db = stack
    with Upstream() as replica, Upstream() as internal:
        route(db, "targets", "targets-1", [replica.url])
        router = start_router(runtime, "targets")
        port = int(router.rsplit(":", 1)[1])
        for target in (f"*@127.0.0.1:{internal.port}/internal?x=1", "*", "*x"):
            for method in ("GET", "OPTIONS"):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    conn.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    answer = b""
                    while chunk := conn.recv(65536):
                        answer += chunk
                head, _, body = answer.partition(b"\r\n\r\n")
                assert int(head.split()[1]) == 400, (method, target, answer[:300])
                assert "must be a path" in json.loads(body)["error"]
        assert internal.requests == 0
        assert httpx.get(f"{router}/ok", timeout=10).status_code == 200 and replica.requests == 1


def test_the_runtime_starts_and_retires_a_revisions_replicas_together(stack):
    """Two func-python replicas of an ingest revision: recorded as one revision with both URLs
    and pids and the manifest's containerConcurrency, both serve through the router, and retiring
    the revision stops both. The runtime reports a replica that died unasked, and forgets those
    of a retired revision (what `pefm up` watches for)."""
    runtime, db = stack
    first = runtime.start_revision(
        "ingest", "pefm-ingest-pair", replicas=2, env={"PEFM_INGEST_TOKEN": "router-ingest-token"}
    )
    second = runtime.processes["pefm-ingest-pair/1"]
    with psycopg.connect(db.url) as conn:
        urls, pids, limit = conn.execute(
            "SELECT urls, pids, container_concurrency FROM local_revisions WHERE revision = 'pefm-ingest-pair'"
        ).fetchone()
    assert urls == [first.url, second.url] and pids == [first.process.pid, second.process.pid]
    assert limit == 20  # knative/base/ingest.yaml
    LocalRouter(db, {}).set_traffic("ingest", [TrafficTarget("pefm-ingest-pair", 100, None)])
    router = start_router(runtime, "ingest")
    answers = [httpx.get(f"{router}/v1/series/realgdp", timeout=10) for _ in range(10)]
    assert [r.status_code for r in answers] == [200] * 10
    assert routed_per_replica(router, "pefm-ingest-pair") == {"0": 5.0, "1": 5.0}
    assert runtime.exited() == []
    # a replica that dies while its revision is recorded stopped unasked: `pefm up` reports it
    second.process.kill()
    second.process.wait(10)
    assert runtime.exited() == ["pefm-ingest-pair/1"]
    assert LocalRouter(db, {}).retire("ingest", "pefm-ingest-pair")
    assert not any(revision_alive(pid, "pefm-ingest-pair") for pid in pids)
    # retired (as a rollout retires its loser, from another process): stopped as asked, forgotten
    # once it has ended (signalled, it may still be on its way out as /proc stops naming it its
    # revision's: about one run in five saw it running still, neither dead nor forgotten)
    first.process.wait(10)
    assert runtime.exited() == []
    assert not {"pefm-ingest-pair", "pefm-ingest-pair/1"} & set(runtime.processes)


def test_a_revision_seen_between_its_stop_and_its_retirement_stopped_as_asked(stack, monkeypatch):
    """`pefm up` looks at its processes every second; another process retiring a revision stops its
    replicas, then forgets it. Seen in between, the stopped replicas were reported as dead unasked
    and the whole local stack stopped (a flaky `pefm up` test): the runtime now waits for the
    retirement to end."""
    import pefm.rollout.local

    runtime, db = stack
    runtime.start_revision("ingest", "pefm-ingest-gone", replicas=2, env={"PEFM_INGEST_TOKEN": "router-ingest-token"})
    stopped = threading.Event()
    stop = pefm.rollout.local.stop_revision

    def slow_stop(pids, revision):
        answer = stop(pids, revision)
        stopped.set()
        time.sleep(2)  # a retiring process slow to forget (a loaded machine)
        return answer

    monkeypatch.setattr(pefm.rollout.local, "stop_revision", slow_stop)
    retiring = threading.Thread(target=LocalRouter(db, {}).retire, args=("ingest", "pefm-ingest-gone"))
    retiring.start()
    assert stopped.wait(30)
    assert runtime.exited() == []
    retiring.join(30)
    assert runtime.exited() == []
    assert not {"pefm-ingest-gone", "pefm-ingest-gone/1"} & set(runtime.processes)


def test_a_relayed_answer_has_one_date_and_the_revisions_server_header(stack):
    """The router's own server wrote Date and Server beside the revision's: two of each."""
    runtime, db = stack
    with Upstream() as a:
        route(db, "headers", "headers-1", [a.url])
        router = start_router(runtime, "headers")
        answer = httpx.get(f"{router}/")
        assert answer.status_code == 200
        assert len(answer.headers.get_list("date")) == 1, answer.headers
        assert answer.headers.get_list("server") == ["uvicorn"], answer.headers  # the revision's
        untagged = httpx.get(f"{router}/_tag//x")
        assert untagged.status_code == 404 and untagged.json()["error"] == "no revision tagged ''", untagged.text


def test_an_idle_upstream_connection_is_dropped_before_the_revisions_server_drops_it(stack):
    """A revision's server closes a connection idle for 5 s (uvicorn's and hypercorn's default);
    the router kept its side 30 s and could write the next request into one just closed, a 502.
    Idle past UPSTREAM_KEEPALIVE, the next request goes over a new connection."""
    from pefm.local.router import UPSTREAM_KEEPALIVE

    runtime, db = stack
    with Upstream() as upstream:
        route(db, "idle", "idle-1", [upstream.url])
        router = start_router(runtime, "idle")
        assert httpx.get(f"{router}/", timeout=10).status_code == 200
        assert httpx.get(f"{router}/", timeout=10).status_code == 200
        assert len(upstream.connections) == 1  # reused while fresh
        time.sleep(UPSTREAM_KEEPALIVE + 0.5)  # the upstream still holds it open (5 s)
        assert httpx.get(f"{router}/", timeout=10).status_code == 200
        assert len(upstream.connections) == 2
