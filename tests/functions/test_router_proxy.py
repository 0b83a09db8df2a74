"""The local router as an HTTP proxy: a client gone mid-upload aborts the upstream request, a slow
revision is a 504, a websocket is no 500, hop-by-hop headers stay on their hop, an unknown tag is a
404. A real router (a process, or the Router class on uvicorn here where a test patches a constant)
in front of small upstream servers that record what reached them."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
import uvicorn

import pefm.local.router
from pefm.config import Settings
from pefm.local.router import Router
from pefm.local.runtime import free_port, record_revision
from pefm.rollout.local import LocalRouter
from pefm.rollout.router import TrafficTarget
from pefm.serving.http import guard
from tests.functions import test_router_replicas
from tests.functions.test_router_replicas import Upstream, route, start_router

stack = test_router_replicas.stack  # its router for each test's service, on a module schema


class Recorder(Upstream):
    """An upstream that keeps each request's headers and body, whether its body ended or the
    connection dropped first, and whether it is over; it answers with the body it read and
    hop-by-hop headers of its own (a field its Connection header names, Proxy-Authenticate)."""

    def __init__(self):
        super().__init__()
        self.seen: list[dict] = []

    async def app(self, scope, receive, send) -> None:
        request = {"headers": {k.decode(): v.decode() for k, v in scope["headers"]}, "body": b"", "ended": False}
        self.seen.append(request)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                request["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    break
            request["ended"] = True
            headers = [(b"connection", b"x-hop-back"), (b"x-hop-back", b"1"), (b"proxy-authenticate", b"Basic")]
            headers.append((b"x-end-to-end", b"1"))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": request["body"]})
        finally:
            request["over"] = True


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@contextmanager
def router_here(database_url: str, service: str) -> Iterator[str]:
    """The router in this process, on uvicorn in a thread, so that a test can patch its constants."""
    port = free_port()
    app = guard(Router(database_url, service, Settings.from_env({})))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the router did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_client_gone_mid_upload_aborts_the_upstream_request_and_frees_its_replica(stack, framing):
    """The router took the client's disconnect for the end of the body: a chunked upload went on
    as a whole (truncated) body, and one with a Content-Length left the revision waiting for the
    rest while it held the replica's only slot. Now the upstream request is aborted, and the
    replica (containerConcurrency 1) takes the next request at once."""
    runtime, db = stack
    with Recorder() as upstream:
        route(db, f"gone-{framing}", f"gone-{framing}-1", [upstream.url], concurrency=1)
        router = start_router(runtime, f"gone-{framing}")
        port = int(router.rsplit(":", 1)[1])
        head = (
            b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
            if framing == "chunked"
            else b"content-length: 100\r\n\r\nhello"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /upload HTTP/1.1\r\nhost: x\r\n" + head)
            wait_until(lambda: upstream.seen and upstream.seen[0]["body"] == b"hello", "the upload did not start")
        wait_until(lambda: upstream.seen[0].get("over"), "the upstream request was not aborted")
        assert not upstream.seen[0]["ended"], "the revision took a truncated body for a whole one"
        answer = httpx.post(f"{router}/next", content=b"next", timeout=10)
        assert answer.status_code == 200 and answer.content == b"next"


def test_an_upstream_slower_than_the_timeout_is_a_json_504(stack, monkeypatch):
    """aiohttp's total timeout raised a TimeoutError, not a ClientError: a 500 'internal error'.
    A revision that has not answered within UPSTREAM_TIMEOUT is a gateway timeout, and its slot is
    freed for the next request."""
    runtime, db = stack
    monkeypatch.setattr(pefm.local.router, "UPSTREAM_TIMEOUT", 0.5)
    with Upstream() as upstream:
        route(db, "slow", "slow-1", [upstream.url], concurrency=1)
        with router_here(runtime.url_for("rollout"), "slow") as router:
            answer = httpx.get(f"{router}/?delay=3", timeout=10)
            assert answer.status_code == 504, answer.text
            assert answer.json() == {"error": "revision slow-1 did not answer within 0.5 s", "details": []}
            assert httpx.get(f"{router}/", timeout=10).status_code == 200


def test_a_websocket_upgrade_is_answered_as_plain_http_not_a_500(stack):
    """With the websockets package installed, uvicorn handed the router a websocket scope, which it
    read as an HTTP one: a KeyError, a plain-text 500. The router's uvicorn serves no websockets:
    an Upgrade is a plain request, relayed without its Upgrade."""
    runtime, db = stack
    with Recorder() as upstream:
        route(db, "ws", "ws-1", [upstream.url])
        router = start_router(runtime, "ws")
        conn = http.client.HTTPConnection("127.0.0.1", int(router.rsplit(":", 1)[1]), timeout=10)
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        conn.request("GET", "/socket", headers={**upgrade, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        answer = conn.getresponse()
        assert answer.status == 200, (answer.status, answer.read()[:300])
        conn.close()
        assert "upgrade" not in upstream.seen[0]["headers"]


def test_a_websocket_scope_is_refused():
    """Served by an ASGI server that does pass websockets, the router refuses one (before its
    handshake: the server answers 403), rather than reading it as an HTTP request."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    router = Router("postgresql://unused", "ws", Settings.from_env({}))
    router.table.targets = [{"revision": "ws-1", "percent": 100, "tag": None}]
    router.table.replicas = {"ws-1": [pefm.local.router.Replica("http://127.0.0.1:9", 0)]}
    scope = {"type": "websocket", "path": "/", "raw_path": b"/", "query_string": b"", "headers": [], "subprotocols": []}
    asyncio.run(guard(router)(scope, receive, send))
    assert [m["type"] for m in sent] == ["websocket.close"]


def test_hop_by_hop_headers_stay_on_their_hop_both_ways(stack):
    """RFC 9110 §7.6.1: the fields the Connection header names, and Proxy-Authorization and
    Proxy-Authenticate, are for one hop; they reached the revision, and the client."""
    runtime, db = stack
    with Recorder() as upstream:
        route(db, "hops", "hops-1", [upstream.url])
        router = start_router(runtime, "hops")
        headers = {"Connection": "keep-alive, X-Hop", "X-Hop": "1", "Proxy-Authorization": "Basic eDp5", "X-Kept": "1"}
        answer = httpx.get(f"{router}/", headers=headers, timeout=10)
        assert answer.status_code == 200
        seen = upstream.seen[0]["headers"]
        assert seen["x-kept"] == "1" and not {"x-hop", "proxy-authorization", "connection"} & set(seen), seen
        assert answer.headers["x-end-to-end"] == "1"
        assert not {"x-hop-back", "proxy-authenticate", "connection"} & set(answer.headers), answer.headers


def test_an_unknown_tag_is_a_json_404_and_a_tag_with_no_replica_a_503(stack):
    """Knative answers 404 for a route that does not exist; the router answered 503, which a client
    retries. A tag the block holds whose revision has no replica is still a 503."""
    runtime, db = stack
    with Upstream() as upstream:
        with psycopg.connect(db.url, autocommit=True) as conn:
            record_revision(conn, "tags", "tags-1", [upstream.url])  # tags-0: no replica (retired)
        LocalRouter(db, {}).set_traffic(
            "tags", [TrafficTarget("tags-1", 100, None), TrafficTarget("tags-0", 0, "blue")]
        )
        router = start_router(runtime, "tags")
        for answer in (
            httpx.get(f"{router}/_tag/nosuch/v1/forecast", timeout=10),
            httpx.get(f"{router}/v1/forecast", headers={"host": "nosuch-tags.local"}, timeout=10),
        ):
            assert answer.status_code == 404, answer.text
            assert answer.json() == {"error": "no revision tagged 'nosuch'", "details": []}
        known = httpx.get(f"{router}/_tag/blue/v1/forecast", timeout=10)
        assert known.status_code == 503 and "tags-0" in known.json()["error"], known.text
        assert httpx.get(f"{router}/v1/forecast", timeout=10).status_code == 200


def test_a_revision_the_router_cannot_reach_is_charged_with_the_failures(stack):
    """A green that crashed or hung answered its share with the router's 502s and 504s, which
    nothing counted: its own metrics and log saw no request, so a rollout's analysis waited for
    traffic until ``max_wait_seconds``. The router counts them against the revision, as failures
    before routing, in its metrics and the request log; the analysis reads them."""
    from datetime import UTC, datetime, timedelta

    from prometheus_client.parser import text_string_to_metric_families

    from pefm.rollout.providers import DatabaseProvider

    runtime, db = stack
    began = datetime.now(UTC) - timedelta(seconds=1)
    route(db, "dead", "dead-1", [f"http://127.0.0.1:{free_port()}"])  # nothing listens there
    router = start_router(runtime, "dead")
    for _ in range(3):
        answer = httpx.post(f"{router}/v1/forecast", json={}, timeout=10)
        assert answer.status_code == 502, answer.text
    probe = httpx.post(f"{router}/v1/forecast", json={}, headers={"x-pefm-shadow": "t=1,sig=x"}, timeout=10)
    assert probe.status_code == 502  # a rollout's probe: no traffic, as the revisions leave it out
    samples = [
        s
        for family in text_string_to_metric_families(httpx.get(f"{router}/_router/metrics", timeout=10).text)
        for s in family.samples
        if s.name == "pefm_requests_total"
    ]
    assert [(s.labels["revision"], s.labels["route"], s.labels["status"], s.value) for s in samples] == [
        ("dead-1", "unmatched", "502", 3.0)
    ]
    provider = DatabaseProvider(db)
    wait_until(lambda: provider.revision_metrics("dead-1", began).requests == 3, "not in the request log", 30)
    assert provider.revision_metrics("dead-1", began).success_rate == 0.0
