"""The inference function at the edges of what it serves, as a real process under func-python:
values near the largest double, bodies far over any valid request, a write that holds its
series, a request that fails after some of its series were answered."""

import json
import math
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from pefm.serving.inference import MAX_BODY_BYTES
from pefm.serving.whatif import WRITE_WAIT_SECONDS
from pefm.storage.channels import OBSERVATIONS_CHANNEL
from tests.functions.conftest import conditioned_on_latest, register_model, start_function, stop, wait_for_model

SERIES = ["realgdp", "unemp", "infl"]
HUGE = 1e308  # finite, and stored as such; the level it grows to is not
PLANTED = "test: near the largest double"  # the rows the tests add, by source


@pytest.fixture(scope="module")
def version(module_schema):
    return register_model(module_schema, "ar", SERIES)


@pytest.fixture(scope="module")
def inference(module_schema, version, tmp_path_factory):
    running = start_function(
        "inference", module_schema, tmp_path_factory.mktemp("inference"), PEFM_MODEL_VERSION=version
    )
    conditioned_on_latest(running.url, SERIES)  # caught up on the data to 2009, as a running revision is
    yield running
    stop(running)


@pytest.fixture
def client(inference):
    with inference.client() as c:
        yield c


@pytest.fixture
def huge_then(module_schema):
    """realgdp's 2009Q4 at 1e308, known from 2010-03-01 (an admin's backdated write): a forecast
    as of 2010-06-01 starts its levels from it."""
    with psycopg.connect(module_schema) as conn:
        conn.execute(
            """INSERT INTO observations (series_id, ts, vintage, value, source)
               VALUES ('realgdp', '2009-10-01', '2010-03-01', %s, %s)""",
            (HUGE, PLANTED),
        )
    yield "2010-06-01"
    with psycopg.connect(module_schema) as conn:
        conn.execute("DELETE FROM observations WHERE source = %s", (PLANTED,))


def forecast(client, series_id: str) -> dict:
    """The series' default forecast (its entry in the answer)."""
    response = client.post("/v1/forecast", json={"series_id": series_id})
    assert response.status_code == 200, response.text
    return response.json()["forecasts"][0]


def served(client) -> float:
    """Series forecasts counted in pefm_forecasts_served, all sources."""
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("pefm_forecasts_served_total{"))


def test_a_value_near_the_largest_double_leaves_the_forecasts_as_they_were(client, module_schema):
    """realgdp at 1e308, stored and announced as ingest does: re-conditioned on it, every default
    forecast of realgdp (and any request naming it) was a 500, its level forecast infinite. Its
    forecasts stay those of the data before, with a warning; unemp, announced with it, moves on."""
    before = {s: forecast(client, s) for s in SERIES}
    try:
        with psycopg.connect(module_schema) as conn:
            conn.execute(
                """INSERT INTO observations (series_id, ts, vintage, value, source)
                   VALUES ('realgdp', '2009-10-01', now(), %s, %s), ('unemp', '2009-10-01', now(), 10.0, %s)""",
                (HUGE, PLANTED, PLANTED),
            )
            announced = json.dumps({"series": ["realgdp", "unemp"]})
            conn.execute("SELECT pg_notify(%s, %s)", (OBSERVATIONS_CHANNEL, announced))
        deadline = time.monotonic() + 30
        while (unemp := forecast(client, "unemp"))["data_as_of"] == before["unemp"]["data_as_of"]:
            assert time.monotonic() < deadline, "unemp was not re-conditioned"  # nor realgdp, with it
            time.sleep(0.1)
        assert unemp["forecast"][0]["ds"] == "2010-01-01T00:00:00Z"
        for body in ({"series_id": "realgdp"}, {"series_ids": SERIES, "horizon": 1}):
            response = client.post("/v1/forecast", json=body)
            assert response.status_code == 200, response.text
        assert forecast(client, "realgdp") == before["realgdp"]
    finally:
        with psycopg.connect(module_schema) as conn:
            conn.execute("DELETE FROM observations WHERE source = %s", (PLANTED,))


def test_an_as_of_forecast_that_overflows_is_a_422_and_is_not_kept(client, module_schema, version, huge_then):
    """Its level forecast is infinite: it was stored (jsonb refuses Infinity) before the answer
    was checked, a 500. Now a 422 naming as_of, as the model path answers; the model-space
    forecast, finite, is answered and kept, the level one is not."""
    body = {"series_id": "realgdp", "horizon": 2, "as_of": huge_then}
    level = wait_for_model(client, body)
    assert level.status_code == 422, level.text
    assert level.json()["error"] == "no finite forecast" and level.json()["details"][0]["field"] == "as_of"
    model = client.post("/v1/forecast", json={**body, "space": "model"})
    assert model.status_code == 200, model.text
    assert all(math.isfinite(r["mean"]) for r in model.json()["forecasts"][0]["forecast"])
    with psycopg.connect(module_schema) as conn:
        kept = conn.execute(
            """SELECT space FROM origin_forecasts
               WHERE model_version = %s AND series_id = 'realgdp' AND cutoff = '2009-10-01'""",
            (version,),
        ).fetchall()
    assert kept == [("model",)]


def test_a_request_that_fails_logs_and_counts_none_of_its_series(client, module_schema, huge_then):
    """unemp answered, then realgdp's 422: unemp's prediction had been logged, and counted as served,
    for an answer nobody got."""
    wait_for_model(client, {"series_id": "unemp", "as_of": huge_then})  # the model is loaded
    counted = served(client)
    failed = client.post("/v1/forecast", json={"series_ids": ["unemp", "realgdp"], "horizon": 3, "as_of": huge_then})
    assert failed.status_code == 422, failed.text
    assert served(client) == counted
    after = client.post("/v1/forecast", json={"series_id": "unemp", "horizon": 2, "as_of": huge_then})
    assert after.status_code == 200 and served(client) == counted + 1
    with psycopg.connect(module_schema, autocommit=True) as conn:
        logged = "SELECT count(*) FROM predictions WHERE series_id = 'unemp' AND as_of = %s AND horizon = %s"
        deadline = time.monotonic() + 10
        moment = datetime.fromisoformat(huge_then).replace(tzinfo=UTC)
        while conn.execute(logged, (moment, 2)).fetchone()[0] == 0:  # the writer keeps the order put
            assert time.monotonic() < deadline, "the prediction log was not written"
            time.sleep(0.1)
        assert conn.execute(logged, (moment, 3)).fetchone()[0] == 0


def test_a_body_over_the_inference_limit_is_413_at_once(client):
    """A forecast body took the functions' 20 MB limit and was parsed whole before its history
    (10,000 items at most) was counted. The largest valid request fits the limit; more is a 413
    without being read."""
    item = {"ts": "2000-01-01T00:00:00.000000+00:00", "value": -2.2250738585072014e-308}
    largest = json.dumps({"series_id": "unemp", "history": [item] * 10_000}).encode()
    assert len(largest) < MAX_BODY_BYTES
    read = client.post("/v1/forecast", content=largest, headers={"content-type": "application/json"})
    assert read.status_code == 422 and read.json()["error"] == "invalid history"  # read and checked
    over = json.dumps({"series_id": "unemp", "history": [item] * 30_000}).encode()
    for body in (over, iter([over[i : i + 65536] for i in range(0, len(over), 65536)])):  # declared, chunked
        refused = client.post("/v1/forecast", content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 413, refused.text
        assert f"over the limit of {MAX_BODY_BYTES} bytes" in refused.json()["error"]


def test_a_model_path_read_waits_for_a_write_under_way_only_so_long(client, module_schema):
    """A session holding unemp's writers' lock held an as-of request (and its model slot) as long
    as it liked; it waits WRITE_WAIT_SECONDS, then a 503 with Retry-After saying why."""
    wait_for_model(client, {"series_id": "unemp", "as_of": "2001-01-01"})  # the model is loaded
    as_of = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # a moment not asked before
    body = {"series_id": "unemp", "horizon": 1, "as_of": as_of}
    answers = []
    with psycopg.connect(module_schema, autocommit=True) as writer:
        writer.execute("SELECT pg_advisory_lock(hashtextextended('pefm.observations:unemp', 0))")
        started = time.monotonic()
        asking = threading.Thread(target=lambda: answers.append(client.post("/v1/forecast", json=body)))
        asking.start()
        asking.join(WRITE_WAIT_SECONDS + 5)
        waited = time.monotonic() - started
        writer.execute("SELECT pg_advisory_unlock(hashtextextended('pefm.observations:unemp', 0))")
    asking.join(30)
    [refused] = answers
    assert refused.status_code == 503 and WRITE_WAIT_SECONDS <= waited < WRITE_WAIT_SECONDS + 5, refused.text
    assert refused.headers["retry-after"] == f"{WRITE_WAIT_SECONDS:.0f}"
    assert "a write to unemp has been under way" in refused.json()["error"]
    assert client.post("/v1/forecast", json=body).status_code == 200  # the write done
