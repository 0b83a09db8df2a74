"""Inference replicas sharing a real Redis (``PEFM_REDIS_URL``): a second replica starts from the
first one's state and answers, an answer changed in Redis without the key is refused, new data
announced on Redis reach every replica and retire their answers, a replica starts and answers from
a warm Redis while PostgreSQL is stopped, and Redis killed under load costs no request."""

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.serving.cache import OBSERVATIONS, PREFIX
from pefm.storage.database import Database, open_database
from pefm.storage.embedded import EmbeddedPostgres
from pefm.storage.migrate import migrate
from tests.conftest import fresh_schema
from tests.functions.conftest import TOKEN, start_function, stop, wait_for_model
from tests.redis_server import RedisServer

SERIES = ["realgdp", "unemp"]
CACHE_KEY = "c" * 32
"""PEFM_CACHE_KEY, shared by the replicas (ingest has none)."""
WHAT_IF = {"series_id": "realgdp", "horizon": 2, "history": [{"ts": "2008-10-01", "value": 13000.0}]}


def sample(process, name: str, **labels: str) -> float:
    """The value of one sample in the process's /metrics (0 when it has none yet)."""
    text = httpx.get(f"{process.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def cache_count(process, kind: str, result: str) -> float:
    return sample(process, "pefm_cache_requests_total", backend="redis", kind=kind, result=result)


def served(process, source: str) -> float:
    return sample(process, "pefm_forecasts_served_total", source=source)


def eventually(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def load_and_train(conn) -> str:
    """The series to the end of 2008 and an AR model trained on them, serving; its id."""
    load_bundled(conn, bundled(SERIES))
    conn.execute("DELETE FROM observations WHERE ts >= '2009-01-01'")
    conn.commit()
    version, _ = train(conn, "ar", SERIES, spec=None)
    promote(conn, version.id)
    return version.id


@pytest.fixture(scope="module")
def schema(server_url):
    with fresh_schema(server_url, "cache") as url:
        with Database(url, max_size=1) as db, db.connection() as conn:
            migrate(conn)
            version = load_and_train(conn)
        yield url, version


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    running = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield running
    running.kill()


@pytest.fixture(scope="module")
def replicas(schema, redis_server, tmp_path_factory):
    """Two replicas of one revision, started one after the other (each loads its model when a
    request first needs it: the first from the registry, keeping it in Redis for the second)."""
    url, version = schema
    env = {
        "PEFM_REDIS_URL": redis_server.url,
        "PEFM_CACHE_KEY": CACHE_KEY,
        "PEFM_MODEL_VERSION": version,
        "K_REVISION": "pefm-cache",
    }
    first = start_function("inference", url, tmp_path_factory.mktemp("first"), **env)
    second = start_function("inference", url, tmp_path_factory.mktemp("second"), **env)
    yield first, second
    stop(first)
    stop(second)


def test_a_second_replica_starts_from_the_cache_and_reuses_the_first_ones_answers(replicas):
    first, second = replicas
    assert cache_count(first, "state", "miss") == 1 and cache_count(first, "state", "hit") == 0
    assert cache_count(second, "state", "hit") == 1  # its registry row and precomputed forecasts
    with first.client() as a, second.client() as b:
        assert (
            a.get("/v1/forecast", params={"series_id": "unemp"}).json()["forecasts"]
            == (b.get("/v1/forecast", params={"series_id": "unemp"}).json()["forecasts"])
        )
        computed = wait_for_model(a, WHAT_IF)
        assert computed.status_code == 200, computed.text
        assert served(first, "model") == 1
        reused = b.post("/v1/forecast", json=WHAT_IF)
        assert reused.status_code == 200, reused.text
        assert reused.json()["forecasts"] == computed.json()["forecasts"]
        assert served(second, "cache") == 1 and served(second, "model") == 0
        # and the other way round, for a level the precomputed table lacks
        other = {"series_id": "unemp", "horizon": 3, "levels": [50]}
        assert wait_for_model(b, other).status_code == 200 and served(second, "model") == 1
        assert (
            a.post("/v1/forecast", json=other).json()["forecasts"]
            == b.post("/v1/forecast", json=other).json()["forecasts"]
        )
        assert served(first, "cache") == 1
    # the second replica's model came from the cache too, its bytes checked against the signed sha256
    assert cache_count(second, "artifact", "hit") == 1 and cache_count(first, "artifact", "miss") == 1


def test_an_answer_changed_in_redis_by_someone_without_the_key_is_not_served(replicas, redis_server):
    """Whoever reaches Redis (its password) but lacks PEFM_CACHE_KEY writes a what-if answer of
    their own over the one the replicas keep: the replica refuses it, counts it, and computes the
    answer again."""
    first, second = replicas
    with first.client() as a:
        computed = wait_for_model(a, WHAT_IF)
    assert computed.status_code == 200, computed.text
    direct = redis_server.client()
    answers = list(direct.scan_iter(PREFIX + "answer:*"))
    assert answers
    forged = computed.content.replace(b'"mean":', b'"mean":1e9,"was":', 1)
    for key in answers:
        direct.set(key, forged)
    model, refused = served(second, "model"), cache_count(second, "answer", "refused")
    with second.client() as b:
        again = b.post("/v1/forecast", json=WHAT_IF)
    assert again.status_code == 200 and again.json()["forecasts"] == computed.json()["forecasts"]
    assert served(second, "model") == model + 1 and cache_count(second, "answer", "refused") == refused + 1


def test_new_data_announced_on_redis_reach_every_replica_and_retire_their_answers(
    schema, redis_server, replicas, tmp_path
):
    url, _ = schema
    first, second = replicas

    def data_as_of(process) -> str:
        with process.client() as c:
            return c.get("/v1/forecast", params={"series_id": "realgdp"}).json()["forecasts"][0]["data_as_of"]

    before = {p.url: data_as_of(p) for p in replicas}
    # an announcement on Redis alone (PostgreSQL's channel says nothing): both replicas re-condition
    redis_server.client().publish(OBSERVATIONS, '{"series": ["realgdp"]}')
    assert eventually(lambda: all(data_as_of(p) > before[p.url] for p in replicas))
    with first.client() as a:
        old = wait_for_model(a, WHAT_IF).json()["forecasts"][0]
    assert old["forecast"][0]["ds"] == "2009-01-01T00:00:00Z"
    # a new quarter through ingest: every replica forecasts from it, and no answer from before is reused
    ingest = start_function("ingest", url, tmp_path, PEFM_INGEST_TOKEN=TOKEN, PEFM_REDIS_URL=redis_server.url)
    try:
        body = {"series_id": "realgdp", "observations": [{"ts": "2009-01-01", "value": 12925.4}]}
        with ingest.client() as c:
            response = c.post("/v1/observations", json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
    finally:
        stop(ingest)

    def first_date(process) -> str:
        with process.client() as c:
            return c.get("/v1/forecast", params={"series_id": "realgdp"}).json()["forecasts"][0]["forecast"][0]["ds"]

    assert eventually(lambda: all(first_date(p) == "2009-04-01T00:00:00Z" for p in replicas))
    computed_before, panels_read = served(second, "model"), cache_count(second, "panel", "miss")
    with second.client() as b:
        new = b.post("/v1/forecast", json=WHAT_IF).json()["forecasts"][0]
    assert new["forecast"][0]["ds"] == "2009-04-01T00:00:00Z" and new["data_as_of"] > old["data_as_of"]
    assert served(second, "model") == computed_before + 1
    # the history it started from is the one its re-conditioning read and kept: not read again
    assert cache_count(second, "panel", "miss") == panels_read


def test_a_replica_starts_and_answers_from_a_warm_cache_while_postgresql_is_stopped(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg", database="pefm_cache_down")
    url = server.start()
    with open_database(Settings(database_url=url), schema="migrate") as db, db.connection() as conn:
        version = load_and_train(conn)
    redis = RedisServer(tmp_path / "redis").start()
    env = {
        "PEFM_REDIS_URL": redis.url,
        "PEFM_CACHE_KEY": CACHE_KEY,
        "PEFM_MODEL_VERSION": version,
        "PEFM_PREDICTION_LOG_QUEUE": "2",
    }
    first = start_function("inference", url, tmp_path / "first", **env)
    second = None
    try:
        with first.client() as a:
            plain = a.get("/v1/forecast", params={"series_id": "unemp"}).json()["forecasts"]
            warm = wait_for_model(a, WHAT_IF)
            assert warm.status_code == 200, warm.text
        server.stop()  # the last handle: PostgreSQL shuts down
        second = start_function("inference", url, tmp_path / "second", **env)  # ready without it
        with second.client() as b:
            assert b.get("/v1/forecast", params={"series_id": "unemp"}).json()["forecasts"] == plain
            again = b.post("/v1/forecast", json=WHAT_IF)
            assert again.status_code == 200 and again.json()["forecasts"] == warm.json()["forecasts"]
            # a what-if no replica has answered: the model and the history both come from Redis
            other = {**WHAT_IF, "history": [{"ts": "2008-10-01", "value": 12000.0}]}
            computed = wait_for_model(b, other)
            assert computed.status_code == 200, computed.text
            assert (
                computed.json()["forecasts"][0]["forecast"][0]["mean"]
                < warm.json()["forecasts"][0]["forecast"][0]["mean"]
            )
            for _ in range(8):  # spaced out: the log writer is busy reconnecting; a queue of 2 overflows
                assert b.get("/v1/forecast", params={"series_id": "realgdp"}).status_code == 200
                time.sleep(0.3)
        assert cache_count(second, "state", "hit") == 1 and cache_count(second, "artifact", "hit") == 1
        assert cache_count(second, "panel", "hit") >= 1
        assert served(second, "cache") == 1 and served(second, "model") == 1
        assert eventually(lambda: sample(second, "pefm_log_rows_dropped_total", table="predictions") > 0, 15)
    finally:
        stop(first)
        if second is not None:
            stop(second)
        redis.kill()


def test_redis_killed_under_load_costs_no_request_and_the_cache_comes_back(schema, tmp_path):
    url, version = schema
    redis = RedisServer(tmp_path / "redis").start()
    replica = start_function(
        "inference",
        url,
        tmp_path,
        PEFM_REDIS_URL=redis.url,
        PEFM_CACHE_KEY=CACHE_KEY,
        PEFM_MODEL_VERSION=version,
        K_REVISION="pefm-kill",
    )
    statuses: list[int] = []
    done = threading.Event()

    def traffic() -> None:
        with replica.client() as c:
            while not done.is_set():
                statuses.append(c.get("/v1/forecast", params={"series_id": "unemp"}).status_code)
                statuses.append(c.post("/v1/forecast", json=WHAT_IF).status_code)
                time.sleep(0.02)

    try:
        with replica.client() as c:
            assert wait_for_model(c, WHAT_IF).status_code == 200
        hits_before = cache_count(replica, "answer", "hit")
        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(1.5)
        redis.kill()
        time.sleep(3.0)
        errors_while_down = cache_count(replica, "answer", "error")
        redis.start()  # the same port, empty
        time.sleep(3.0)
        done.set()
        worker.join(30)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert errors_while_down > 0  # each lookup while it was away: counted, then served without it
        with replica.client() as c:  # back by itself: answers are kept and found again
            assert eventually(
                lambda: (
                    c.post("/v1/forecast", json=WHAT_IF).status_code == 200
                    and cache_count(replica, "answer", "hit") > hits_before + 1
                )
            )
        assert redis.client().dbsize() > 0
    finally:
        done.set()
        stop(replica)
        redis.kill()


def test_a_rate_limit_is_one_budget_per_caller_across_replicas(schema, redis_server, tmp_path):
    """Inference verifies no token, so a caller is its address: a made-up bearer token with every
    request must not buy a fresh budget (it did, when an unverified token named the caller)."""
    url, version = schema
    env = {
        "PEFM_REDIS_URL": redis_server.url,
        "PEFM_CACHE_KEY": CACHE_KEY,
        "PEFM_MODEL_VERSION": version,
        "PEFM_RATE_LIMIT": "5/3600",
    }
    replicas = [start_function("inference", url, tmp_path / name, **env) for name in ("a", "b")]
    if time.time() % 3600 > 3540:  # not across a window's end
        time.sleep(3600 - time.time() % 3600 + 1)
    # two callers by address: both loopback, the second connecting from 127.0.0.2
    alice, bob = httpx.Client(), httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        query = {"series_id": "unemp"}
        statuses = [
            alice.get(
                f"{replicas[i % 2].url}/v1/forecast", params=query, headers={"authorization": f"Bearer made-up-{i}"}
            ).status_code
            for i in range(6)
        ]
        assert statuses == [200] * 5 + [429]  # five in all, on either replica, whatever the tokens
        refused = alice.post(f"{replicas[0].url}/v1/forecast", json=query, headers={"authorization": "Bearer other"})
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 3600
        assert "5 requests per 3600 s" in refused.json()["error"]
        assert bob.get(f"{replicas[1].url}/v1/forecast", params=query).status_code == 200
    finally:
        alice.close()
        bob.close()
        for running in replicas:
            stop(running)


def test_a_replica_started_from_the_cache_after_a_unit_change_answers_with_the_new_unit(schema, redis_server, tmp_path):
    """The state a replica starts from (Redis, for a week) holds the units of when it was kept: one
    started after a PUT /v1/series changed a unit named the old one until its series' next data."""
    from pefm.storage.series import get_series, upsert_series

    url, version = schema
    env = {"PEFM_REDIS_URL": redis_server.url, "PEFM_CACHE_KEY": CACHE_KEY, "PEFM_MODEL_VERSION": version}
    first = start_function("inference", url, tmp_path / "first", **env)  # keeps the state, if not kept yet
    with Database(url, max_size=1) as db, db.connection() as conn:
        old = get_series(conn, "unemp")
        upsert_series(conn, old.__class__(**{**old.__dict__, "unit": "a new unit"}))
        conn.commit()
    later = start_function("inference", url, tmp_path / "later", **env)
    try:
        assert cache_count(later, "state", "hit") == 1  # started from the state kept before the change
        with later.client() as client:
            assert eventually(
                lambda: (
                    client.get("/v1/forecast", params={"series_id": "unemp"}).json()["forecasts"][0]["unit"]
                    == "a new unit"
                )
            )
    finally:
        stop(first)
        stop(later)
        with Database(url, max_size=1) as db, db.connection() as conn:
            upsert_series(conn, old)
            conn.commit()
