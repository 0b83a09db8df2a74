"""The inference hot path's pieces read, limit, count and log exactly what the general code did:
bodies cut off as before (with no timer while nothing is waited for), request metrics as
prometheus-client's own Counter and Histogram expose them, log rows as they were put (written by
the writer process), and errors of the raw forecast route answered as the app answers them."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Route

from pefm.serving.http import ApiError, ClientGone, RequestBody, receive_body
from pefm.serving.log_writer import LogWriter
from pefm.serving.observability import LATENCY_BUCKETS, ServiceMetrics
from pefm.storage.roles import role_url


def receiving(*messages, wait: float | None = None):
    """A receive callable: ``messages`` in turn, the first after ``wait`` seconds, if given."""
    queue = list(messages)

    async def receive():
        if wait is not None and len(queue) == len(messages):
            await asyncio.sleep(wait)
        if not queue:
            await asyncio.sleep(3600)  # a client that sends nothing more
        return queue.pop(0)

    return receive


def chunk(body: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def test_receive_body_takes_a_body_there_at_once_without_a_timer():
    async def run():
        loop = asyncio.get_running_loop()
        body = await receive_body(receiving(chunk(b"ab", True), chunk(b"c")), b"3", 100, 30)
        return body, [h for h in loop._scheduled if not h.cancelled()]

    body, timers = asyncio.run(run())
    assert body == b"abc" and timers == []


def test_receive_body_waits_for_a_body_still_on_its_way():
    body = asyncio.run(receive_body(receiving(chunk(b"ab", True), chunk(b"c"), wait=0.05), None, 100, 30))
    assert body == b"abc"


def test_receive_body_limits_and_deadline():
    with pytest.raises(ApiError) as declared:
        asyncio.run(receive_body(receiving(chunk(b"x")), b"101", 100, 30))
    assert declared.value.status == 413 and declared.value.headers == {}  # read to its end: reusable
    with pytest.raises(ApiError) as counted:
        asyncio.run(receive_body(receiving(chunk(b"x" * 60, True), chunk(b"x" * 60)), None, 100, 30))
    assert counted.value.status == 413 and counted.value.headers == {}
    started = time.monotonic()
    with pytest.raises(ApiError) as trickled:  # past its deadline, not the hour the client waits (wait_for's 30 s)
        asyncio.run(asyncio.wait_for(receive_body(receiving(chunk(b"x", True)), None, 100, 0.2), 30))
    assert trickled.value.status == 408 and time.monotonic() - started >= 0.2  # not before the deadline
    assert trickled.value.error == "the body did not arrive within 0.2 s"
    with pytest.raises(ClientGone):
        asyncio.run(receive_body(receiving({"type": "http.disconnect"}), None, 100, 30))


def test_receive_body_waits_its_turn_once_past_large_and_the_wait_moves_the_deadline():
    """A body of unsaid length waits for its turn (ingest's large writes) once it passes the
    ``large`` size, before more of it is read; the time it waited does not count against the
    body's deadline (0.25 s here, with a wait of 0.3 s and the rest arriving 0.1 s later)."""
    queue, waited = [chunk(b"x" * 20, True), chunk(b"y")], []

    async def receive():
        if len(queue) == 1:
            await asyncio.sleep(0.1)
        return queue.pop(0)

    async def turn():
        waited.append(len(queue))  # what was still unread
        await asyncio.sleep(0.3)

    assert asyncio.run(receive_body(receive, None, 100, 0.25, (10, turn))) == b"x" * 20 + b"y"
    assert waited == [1]


def test_a_body_that_gets_no_turn_is_refused_413_if_over_the_limit_else_503():
    """A body of unsaid length that gets no turn (every large write's slot busy): one over the
    body limit had got the 503 telling its client to send it again, which can never succeed."""

    async def no_turn():
        raise ApiError(503, "busy; retry shortly", headers={"Retry-After": "2"})

    def body(total: int):
        return receiving(*(chunk(b"x" * 20, more=k < total // 20 - 1) for k in range(total // 20)))

    with pytest.raises(ApiError) as over:
        asyncio.run(receive_body(body(200), None, 100, 30, (30, no_turn)))
    assert over.value.status == 413 and over.value.error == "body is over the limit of 100 bytes"
    with pytest.raises(ApiError) as within:
        asyncio.run(receive_body(body(80), None, 100, 30, (30, no_turn)))
    assert within.value.status == 503 and within.value.headers == {"Retry-After": "2"}


def test_a_body_over_the_limit_is_drained_within_bounds_before_its_413():
    """Read to its end (and dropped) up to DRAIN_BYTES past the limit and within the deadline, so
    the 413 reaches the client rather than a reset; beyond either, the connection closes."""
    from pefm.serving.http import DRAIN_BYTES

    def body(total: int, pieces: int = 8, wait: float | None = None):
        size = total // pieces
        return receiving(*[chunk(b"x" * size, i < pieces - 1) for i in range(pieces)], wait=wait)

    def refusal(receive, declared: bytes | None, timeout: float = 30) -> ApiError:
        with pytest.raises(ApiError) as refused:
            asyncio.run(receive_body(receive, declared, 100, timeout))
        assert refused.value.status == 413
        return refused.value

    assert refusal(body(8000), b"8000").headers == {}
    assert refusal(body(8000), None).headers == {}
    assert refusal(body(4 * DRAIN_BYTES, 16), None).headers == {"Connection": "close"}  # stops reading
    assert refusal(body(4 * DRAIN_BYTES), str(4 * DRAIN_BYTES).encode()).headers == {"Connection": "close"}
    assert refusal(body(8000, wait=1.0), b"8000", timeout=0.2).headers == {"Connection": "close"}
    with pytest.raises(ClientGone):
        asyncio.run(receive_body(receiving(chunk(b"x" * 200, True), {"type": "http.disconnect"}), None, 100, 30))


def test_an_answer_before_the_body_reads_the_rest_first_within_bounds(monkeypatch):
    """``RequestBody.settle``: a start message goes as it is once the body is all read (read here
    if the handler did not), and says the connection closes when the rest does not come in time."""
    monkeypatch.setattr("pefm.serving.http.SETTLE_SECONDS", 0.2)
    start = {"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"2")]}
    declared = {"headers": [(b"content-length", b"3")]}

    def settled(body: RequestBody, read: int = 0) -> dict:
        async def run():
            for _ in range(read):
                await body()
            return await body.settle(start)

        return asyncio.run(run())

    assert settled(RequestBody({"headers": []}, receiving())) == start  # no body: nothing to wait for
    assert settled(RequestBody(declared, receiving(chunk(b"ab", True), chunk(b"c"), wait=0.05))) == start
    assert settled(RequestBody(declared, receiving(chunk(b"ab", True), chunk(b"c"))), read=2) == start
    late = settled(RequestBody(declared, receiving(chunk(b"abc"), wait=1.0)))
    assert late["headers"] == [*start["headers"], (b"connection", b"close")]
    gone = settled(RequestBody(declared, receiving({"type": "http.disconnect"})))
    assert (b"connection", b"close") in gone["headers"]


def test_a_cancelled_read_is_cancelled_not_timed_out():
    async def run():
        task = asyncio.ensure_future(receive_body(receiving(chunk(b"x", True)), None, 100, 30))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())


def test_plain_metrics_are_exposed_as_prometheus_clients_own():
    metrics = ServiceMetrics("inference", "rev-1")
    registry = CollectorRegistry()
    labels = ["service", "revision", "route", "method"]
    requests = Counter("pefm_requests", "HTTP requests served", [*labels, "status"], registry=registry)
    latency = Histogram(
        "pefm_request_duration_seconds",
        "HTTP request latency",
        [*labels, "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    forecasts = Counter(
        "pefm_forecasts_served", "Series forecasts served", ["revision", "model_version", "source"], registry=registry
    )
    cache = Counter(
        "pefm_cache_requests",
        "Cache lookups by backend (redis, memory), kind (state, answer, ...) and result (hit, miss, error)",
        ["backend", "kind", "result"],
        registry=registry,
    )
    ready = Gauge("pefm_start_to_ready_seconds", "Process start to ready", ["service", "revision"], registry=registry)
    info = ["revision", "model_version", "family"]
    model = Gauge("pefm_model_info", "The model version this revision serves", info, registry=registry)
    routes = [Route("/v1/forecast", lambda r: None), Route("/metrics", lambda r: None), None]
    rnd = random.Random(7)
    metrics.serve_model("ar-1", "ar")
    for _ in range(3000):
        route, method, status = rnd.choice(routes), rnd.choice(["GET", "POST"]), rnd.choice([200, 404, 503])
        seconds = rnd.choice([0.0005, 0.001, 0.0010000001, 0.05, 2.5, 11.0, rnd.random()])
        metrics.observe_request({"method": method, **({"route": route} if route else {})}, status, seconds)
        path = route.path if route else "unmatched"
        requests.labels("inference", "rev-1", path, method, str(status)).inc()
        latency.labels("inference", "rev-1", path, method, str(status)).observe(seconds)
        source = rnd.choice(["precomputed", "model", "cache"])
        metrics.count_forecast("ar-1", source)
        forecasts.labels("rev-1", "ar-1", source).inc()
        metrics.count_forecast("ar-2", source)  # not served (yet): not counted
        lookup = rnd.choice(["memory", "redis"]), rnd.choice(["answer", "state"]), rnd.choice(["hit", "miss", "error"])
        metrics.count_cache(*lookup)
        cache.labels(*lookup).inc()
    metrics.mark_ready(time.time() - 0.25)
    ready.labels("inference", "rev-1").set(metrics._ready)
    metrics.serve_model("ar-2", "ar")  # ar-1's forecasts are no longer served: its series go
    model.labels("rev-1", "ar-2", "ar").set(1)
    for source in ("precomputed", "model", "cache"):
        forecasts.remove("rev-1", "ar-1", source)
        metrics.count_forecast("ar-2", source)
        forecasts.labels("rev-1", "ar-2", source).inc()
    metrics.count_forecast("ar-1", "model")  # a request still on the version swapped out: not counted
    ours = generate_latest(metrics.prometheus.registry).decode().splitlines()
    theirs = generate_latest(registry).decode().splitlines()
    names = ("pefm_requests", "pefm_request_duration", "pefm_forecasts", "pefm_cache", "pefm_start", "pefm_model")
    assert [line for line in ours if any(name in line for name in names)] == theirs


@pytest.mark.parametrize("role", [None, "inference"])
def test_log_rows_land_as_written_by_the_writer_process(db, role):
    """Rows put in the buffer are written by the writer process, as the values they were, in the
    role's own rights; a writer process that dies is replaced and no row put after it is lost."""
    url = role_url(db.url, role) if role else db.url
    drops: list = []
    writer = LogWriter(url, maxsize=1000, on_drop=lambda table, n: drops.append((table, n)), interval=0.05)
    writer.start()
    shared = json.dumps([{"ds": "2009-10-01T00:00:00Z", "mean": 1.5, "note": "back\\slash\ttab"}])
    other = json.dumps([{"ds": "2010-01-01T00:00:00Z", "mean": -2.0}])
    moment = datetime(2026, 12, 4, 12, tzinfo=UTC)
    as_of = datetime(1999, 1, 1, tzinfo=UTC)

    def put(i: int) -> None:
        ts = (moment + timedelta(seconds=i)).timestamp()
        text = shared if i % 3 else other
        row = (ts, f"req-{i}", "rev", "v-1", "realgdp", None if i % 2 else as_of, i % 5 == 0, i % 12 + 1, text, "level")
        writer.put("predictions", row)
        writer.put("request_log", (ts, "inference", "rev", "/v1/forecast", "POST", 200, 1.25))

    def written(n: int) -> None:  # wait until n rows of each table have landed
        deadline = time.monotonic() + 20
        with psycopg.connect(db.url) as conn:
            while conn.execute("SELECT count(*) FROM request_log").fetchone()[0] < n:
                assert time.monotonic() < deadline, "rows did not land"
                time.sleep(0.02)

    for i in range(100):
        put(i)
    written(100)
    first = writer._process
    assert first is not None and first.pid != os.getpid()
    first.kill()
    first.wait()
    for i in range(100, 200):
        put(i)
    written(200)
    assert writer._process is not first
    writer.stop()
    assert drops == []
    assert writer._process is None  # stopped with the writer
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            "SELECT ts, request_id, revision, model_version, series_id, as_of, what_if, horizon, forecast, space"
            " FROM predictions ORDER BY ts"
        ).fetchall()
        logged_requests = conn.execute(
            "SELECT ts, service, revision, route, method, status, latency_ms FROM request_log ORDER BY ts"
        ).fetchall()
    assert len(rows) == 200 and len(logged_requests) == 200
    for i, row in enumerate(rows):
        assert row == (
            moment + timedelta(seconds=i),
            f"req-{i}",
            "rev",
            "v-1",
            "realgdp",
            None if i % 2 else as_of,
            i % 5 == 0,
            i % 12 + 1,
            json.loads(shared if i % 3 else other),
            "level",
        )
    for i, row in enumerate(logged_requests):
        assert row == (moment + timedelta(seconds=i), "inference", "rev", "/v1/forecast", "POST", 200, 1.25)


class _Broken:
    """A model server whose every answer fails unexpectedly."""

    cache = None

    @property
    def version(self):
        raise RuntimeError("boom")


def test_the_hot_route_answers_errors_as_the_app_does(caplog):
    import httpx

    from pefm.config import Settings
    from pefm.serving.http import guard
    from pefm.serving.inference import create_inference_app

    metrics = ServiceMetrics("inference", "rev-1")
    app = create_inference_app(Settings.from_env({}), _Broken(), metrics, None, {"openapi": "3.1.0"})
    transport = httpx.ASGITransport(app=guard(app, on_request=metrics.observe_request))

    async def run():
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            failed = await client.post("/v1/forecast", json={"series_id": "realgdp"})
            assert failed.status_code == 500
            request_id = failed.headers["x-request-id"]
            assert failed.json() == {"error": "internal error", "details": [], "request_id": request_id}
            assert "unhandled error on POST /v1/forecast" in caplog.text
            refused = await client.post("/v1/forecast", content=b"[1]")
            assert refused.status_code == 422
            assert refused.json()["details"] == [{"field": "body", "message": "expected a JSON object"}]
            malformed = await client.post("/v1/forecast", content=b'{"a": 1, "a": 2}')
            assert malformed.status_code == 400 and malformed.json()["error"] == "malformed JSON"
            assert (await client.put("/v1/forecast")).status_code == 405
            assert (await client.get("/openapi.json")).json() == {"openapi": "3.1.0"}

    asyncio.run(run())
    text = generate_latest(metrics.prometheus.registry).decode()
    for status in (500, 422, 400, 405):
        assert f'route="/v1/forecast",service="inference",status="{status}"}} 1.0' in text


def test_a_client_gone_before_its_body_is_counted_499_and_sent_nothing(caplog):
    from pefm.config import Settings
    from pefm.serving.http import guard
    from pefm.serving.inference import create_inference_app

    metrics = ServiceMetrics("inference", "rev-1")
    app = create_inference_app(Settings.from_env({}), _Broken(), metrics, None, {})
    sent: list = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/forecast", "headers": [], "root_path": ""}
    asyncio.run(guard(app, on_request=metrics.observe_request)(scope, receiving({"type": "http.disconnect"}), send))
    assert sent == [] and "unhandled" not in caplog.text
    assert (
        'route="/v1/forecast",service="inference",status="499"} 1.0'
        in generate_latest(metrics.prometheus.registry).decode()
    )


def test_checked_bodies_are_kept_by_their_bytes_unless_they_ask_a_what_if():
    from pefm.config import Settings
    from pefm.serving.inference import InferenceService

    service = InferenceService(Settings.from_env({}), _Broken(), ServiceMetrics("inference", "rev-1"), None)
    plain = b'{"series_id": "realgdp", "horizon": 8}'
    first = asyncio.run(service._check(plain))
    assert first == (("realgdp",), 8, (80, 95), None, None, None) and service._checked[plain] is first
    what_if = b'{"series_id": "realgdp", "history": [{"ts": "2009-10-01", "value": 1.0}]}'
    asyncio.run(service._check(what_if))
    assert what_if not in service._checked
    for bad in (b'{"series_id": "realgdp", "horizon": 0}', b"[1]"):
        for _ in range(2):  # refused each time, never kept
            with pytest.raises(ApiError) as refused:
                asyncio.run(service._check(bad))
            assert refused.value.status == 422
        assert bad not in service._checked
    for n in range(5000):  # bounded, whatever bodies clients make up
        asyncio.run(service._check(b'{"series_id": "s%d"}' % n))
    assert len(service._checked) <= 4096


def test_a_hot_route_made_from_an_endpoint_answers_as_the_app_would(caplog):
    from starlette.responses import JSONResponse

    from pefm.serving.http import HotApp, HotRoute, guard, hot_route, receive_body

    async def endpoint(request):
        body = await receive_body(request.receive, None, 100, 30)
        if body == b"boom":
            raise RuntimeError("boom")
        if body == b"bad":
            raise ApiError(422, "bad body")
        return JSONResponse({})

    app = HotApp({HotRoute("POST", "/v1/things"): hot_route(endpoint)}, list)
    metrics = ServiceMetrics("ingest", "rev-1")

    def call(body, root_path=""):
        sent: list = []

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/things",
            "headers": [],
            "root_path": root_path,
            "query_string": b"",
            "http_version": "1.1",
            "scheme": "http",
            "server": ("t", 80),
        }
        messages = [{"type": "http.disconnect"}] if body is None else [chunk(body)]
        asyncio.run(guard(app, on_request=metrics.observe_request)(scope, receiving(*messages), send))
        return sent

    assert call(b"ok")[0]["status"] == 200
    assert call(b"bad")[0]["status"] == 422
    failed = call(b"boom")
    assert failed[0]["status"] == 500 and "unhandled error on POST /v1/things" in caplog.text
    assert call(None) == []  # gone before its body: nothing sent, counted 499
    text = generate_latest(metrics.prometheus.registry).decode()
    for status in (200, 422, 500, 499):
        assert f'route="/v1/things",service="ingest",status="{status}"}} 1.0' in text
    mounted = call(b"ok", root_path="/api")  # mounted under a root path: Starlette routes it
    assert mounted[0]["status"] == 200
    assert (
        'route="/v1/things",service="ingest",status="200"} 2.0' in generate_latest(metrics.prometheus.registry).decode()
    )
