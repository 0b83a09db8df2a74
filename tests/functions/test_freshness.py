"""Forecasts on the latest data: an observation ingested through the ingest function reaches the
next forecast of a running inference revision within seconds, without a retrain; a revision that
starts later catches up by itself."""

import math
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import revision_alive
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from pefm.storage.observations import write_observations
from tests.conftest import fresh_schema
from tests.functions.conftest import TOKEN, start_function, stop, wait_for_model

SERIES = ["realgdp", "unemp"]


@pytest.fixture(scope="module")
def schema(server_url):
    """Data to the end of 1999, an AR model trained on them and serving."""
    with fresh_schema(server_url, "fresh") as url:
        with Database(url, max_size=1) as db, db.connection() as conn:
            migrate(conn)
            load_bundled(conn, bundled(SERIES))
            conn.execute("DELETE FROM observations WHERE ts >= '2000-01-01'")
            conn.commit()
            version, _ = train(conn, "ar", SERIES, spec=None)
            promote(conn, version.id)
        yield url


@pytest.fixture(scope="module")
def ingest(schema, tmp_path_factory):
    running = start_function("ingest", schema, tmp_path_factory.mktemp("ingest"), PEFM_INGEST_TOKEN=TOKEN)
    yield running
    stop(running)


@pytest.fixture(scope="module")
def inference(schema, tmp_path_factory):
    running = start_function("inference", schema, tmp_path_factory.mktemp("inference"), K_REVISION="pefm-fresh")
    yield running
    stop(running)


def forecast(client: httpx.Client, **body) -> dict:
    response = client.post("/v1/forecast", json={"series_id": "realgdp", "horizon": 2, **body})
    assert response.status_code == 200, response.text
    return response.json()["forecasts"][0]


def ingest_quarter(ingest, quarter: str, revised_by: float = 1.0) -> float:
    """Post realgdp's real value for ``quarter`` (times ``revised_by``) to the ingest function; the
    value."""
    value = float(bundled(["realgdp"])[0].load().loc[pd.Timestamp(quarter)]) * revised_by
    body = {"series_id": "realgdp", "observations": [{"ts": quarter, "value": value}]}
    with ingest.client() as c:
        response = c.post("/v1/observations", json=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return value


def test_an_ingested_observation_reaches_the_next_forecast_within_seconds(schema, ingest, inference, tmp_path_factory):
    with inference.client() as client:
        before = forecast(client)
        before_model = forecast(client, space="model")
        assert before["forecast"][0]["ds"] == "2000-01-01T00:00:00Z"
        # the first new data start the revision's worker process (imports, the model): within 30 s
        value = ingest_quarter(ingest, "2000-01-01")
        after = reconditioned(client, before, within=30)
        # conditioned on the new quarter, parameters unchanged: one step further, from the new level
        assert after["forecast"][0]["ds"] == "2000-04-01T00:00:00Z"
        step = forecast(client, space="model")
        assert step["data_as_of"] == after["data_as_of"]
        assert after["forecast"][0]["mean"] == pytest.approx(value * math.exp(step["forecast"][0]["mean"] / 400))
        assert step["forecast"][0]["mean"] != pytest.approx(before_model["forecast"][1]["mean"])
        # the model path (beyond the precomputed horizon) uses the same data
        longer = wait_for_model(client, {"series_id": "realgdp", "horizon": 20}).json()["forecasts"][0]
        assert longer["forecast"][0]["ds"] == "2000-04-01T00:00:00Z" and longer["data_as_of"] == after["data_as_of"]
        # the other series did not change, and no retrain happened: one version, still serving
        other = client.post("/v1/forecast", json={"series_id": "unemp", "horizon": 1}).json()["forecasts"][0]
        assert other["data_as_of"] == before["data_as_of"]
        # with the worker running, a revision of the quarter reaches the next forecast within seconds
        revised = ingest_quarter(ingest, "2000-01-01", revised_by=1.001)
        after = reconditioned(client, after, within=5)
        step = forecast(client, space="model")
        assert step["data_as_of"] == after["data_as_of"]
        assert after["forecast"][0]["mean"] == pytest.approx(revised * math.exp(step["forecast"][0]["mean"] / 400))
    with psycopg.connect(schema) as conn:
        assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == 1

    # a revision started after the data arrived catches up by itself
    late = start_function("inference", schema, tmp_path_factory.mktemp("late"), K_REVISION="pefm-late")
    try:
        with late.client() as client:
            deadline = time.monotonic() + 15
            caught = forecast(client)
            while caught["forecast"][0]["ds"] != "2000-04-01T00:00:00Z" and time.monotonic() < deadline:
                time.sleep(0.2)
                caught = forecast(client)
            assert caught["forecast"][0]["ds"] == "2000-04-01T00:00:00Z"
            assert caught["forecast"][0]["mean"] == pytest.approx(after["forecast"][0]["mean"])
        # killed outright (no shutdown runs), it leaves nothing behind: its catch-up started the
        # re-conditioning worker, which must not live on holding a database connection
        left = descendants(late.process.pid)
        assert left and all(revision_alive(pid, "pefm-late") for pid in left), "no worker process of the revision"
        late.process.send_signal(signal.SIGKILL)
        late.process.wait()
        deadline = time.monotonic() + 10
        while (running := {pid for pid in left if revision_alive(pid, "pefm-late")}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running, f"processes left behind by a killed revision: {sorted(running)}"
    finally:
        stop(late)


def reconditioned(client: httpx.Client, before: dict, within: float) -> dict:
    """The first forecast of realgdp newer than ``before``, asked for every 0.1 s; one must come
    ``within`` seconds."""
    started, after = time.monotonic(), before
    while after["data_as_of"] == before["data_as_of"] and time.monotonic() - started < within:
        time.sleep(0.1)
        after = forecast(client)
    assert after["data_as_of"] > before["data_as_of"], f"no re-conditioning within {within} s"
    return after


def descendants(pid: int) -> set[int]:
    """The processes below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_data_a_model_cannot_use_leave_its_forecasts_and_no_others(schema, ingest, inference):
    """A non-positive value under a log transform cannot be re-conditioned on: realgdp keeps what it
    had, and the listener keeps going for the other series. Ingest refuses such a value now (422):
    it is written straight to the table, as data stored before that check would be."""
    with inference.client() as client:
        gdp_before = forecast(client)
        with ingest.client() as c:
            bad = {"series_id": "realgdp", "observations": [{"ts": "2001-01-01", "value": -5.0}]}
            assert c.post("/v1/observations", json=bad, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 422
            with psycopg.connect(schema) as conn:
                frame = pd.DataFrame({"series_id": ["realgdp"], "ts": [pd.Timestamp("2001-01-01")], "value": [-5.0]})
                write_observations(conn, frame, source="test")
            good = {"series_id": "unemp", "observations": [{"ts": "2000-01-01", "value": 4.0}]}
            assert (
                c.post("/v1/observations", json=good, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
            )
        unemp_before = gdp_before["data_as_of"]
        deadline, unemp = time.monotonic() + 15, None
        while time.monotonic() < deadline:
            unemp = client.post("/v1/forecast", json={"series_id": "unemp", "horizon": 1}).json()["forecasts"][0]
            if unemp["forecast"][0]["ds"] == "2000-04-01T00:00:00Z":
                break
            time.sleep(0.2)
        assert unemp["forecast"][0]["ds"] == "2000-04-01T00:00:00Z", "unemp was not re-conditioned"
        assert unemp["data_as_of"] > unemp_before
        assert forecast(client) == gdp_before
        # a request that needs those data is a clear 422, not a 500
        time.sleep(1.1)  # as of a moment after the bad value's vintage (the write's commit time)
        now = datetime.now(UTC).isoformat()
        refused = wait_for_model(client, {"series_id": "realgdp", "as_of": now})
        assert refused.status_code == 422, refused.text
        assert "stored data of realgdp cannot be used" in refused.json()["error"]


def test_a_write_that_changes_nothing_is_not_announced(schema, ingest, inference):
    """Reloading the same value inserts nothing, so no listener is woken for it."""
    with psycopg.connect(schema, autocommit=True) as listener:
        listener.execute("LISTEN pefm_observations")
        ingest_quarter(ingest, "1999-10-01")  # stored already, same value
        assert list(listener.notifies(timeout=1.0)) == []
        ingest_quarter(ingest, "2000-04-01")  # new
        notes = list(listener.notifies(timeout=2.0, stop_after=1))
        assert [n.payload for n in notes] == ['{"series": ["realgdp"]}']


def test_a_new_unit_reaches_the_answers_of_a_running_revision(schema, ingest, inference):
    """PUT /v1/series may change a series' unit while it holds data (its frequency, transform and
    calendar are fixed then); replicas kept the unit they read at their start, and their answers
    named the old one for the rest of their life."""
    with inference.client() as client:
        unit = forecast(client)["unit"]
        with ingest.client() as c:
            meta = c.get("/v1/series/realgdp").json()
            body = {k: meta[k] for k in ("name", "frequency", "unit", "transform")}
            response = c.put(
                "/v1/series/realgdp", json={**body, "unit": "new unit"}, headers={"authorization": f"Bearer {TOKEN}"}
            )
        assert response.status_code == 200, response.text
        try:
            deadline = time.monotonic() + 15
            while (now := forecast(client)["unit"]) == unit and time.monotonic() < deadline:
                time.sleep(0.2)
            assert now == "new unit"
        finally:
            with ingest.client() as c:
                c.put("/v1/series/realgdp", json=body, headers={"authorization": f"Bearer {TOKEN}"})
