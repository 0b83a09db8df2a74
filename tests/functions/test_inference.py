"""The inference function as a real process under func-python: forecasts, what-if, as-of, errors."""

import json
import time
from datetime import UTC, datetime

import pytest

from pefm.serving.http import sign_shadow
from tests.functions.conftest import ROOT, count, register_model, start_function, stop, wait_for_model

SERIES = ["realgdp", "unemp", "infl"]


@pytest.fixture(scope="module")
def version(module_schema):
    return register_model(module_schema, "ar", SERIES)


SHADOW_KEY = "shadow-key-shared-with-the-prober"


@pytest.fixture(scope="module")
def inference(module_schema, version, tmp_path_factory):
    running = start_function(
        "inference",
        module_schema,
        tmp_path_factory.mktemp("inference"),
        PEFM_MODEL_VERSION=version,
        K_REVISION="pefm-inference-blue",
        PEFM_RECONDITION="off",  # serve exactly the registered forecasts (trained as of 2000; data to 2009)
        PEFM_SHADOW_KEY=SHADOW_KEY,
    )
    yield running
    stop(running)


@pytest.fixture
def client(inference):
    with inference.client() as c:
        yield c


def test_forecast_names_model_and_revision(client, version):
    response = client.post("/v1/forecast", json={"series_id": "realgdp", "horizon": 4})
    assert response.status_code == 200, response.text
    assert response.headers["x-pefm-model-version"] == version
    assert response.headers["x-pefm-revision"] == "pefm-inference-blue"
    body = response.json()
    assert body["model_version"] == version and body["family"] == "ar"
    [forecast] = body["forecasts"]
    assert forecast["series_id"] == "realgdp" and forecast["transform"] == "log_diff_ann"
    rows = forecast["forecast"]
    assert [r["ds"] for r in rows] == [
        "2000-01-01T00:00:00Z",
        "2000-04-01T00:00:00Z",
        "2000-07-01T00:00:00Z",
        "2000-10-01T00:00:00Z",
    ]  # the model was trained on data as of 2000
    for r in rows:
        assert r["lo-95"] <= r["lo-80"] <= r["mean"] <= r["hi-80"] <= r["hi-95"]


def test_get_form_and_many_series(client):
    got = client.get("/v1/forecast", params={"series_id": "unemp", "horizon": 2, "levels": "80"})
    assert got.status_code == 200
    assert set(got.json()["forecasts"][0]["forecast"][0]) == {"ds", "mean", "lo-80", "hi-80"}
    many = client.post("/v1/forecast", json={"series_ids": ["unemp", "infl"], "horizon": 1})
    assert [f["series_id"] for f in many.json()["forecasts"]] == ["unemp", "infl"]
    twice = client.get("/v1/forecast", params=[("series_id", "realgdp"), ("series_id", "unemp")])
    assert twice.status_code == 422 and twice.json()["details"][0]["field"] == "series_id"  # not one dropped


def test_other_levels_and_horizons_come_from_the_model(client):
    response = wait_for_model(client, {"series_id": "unemp", "horizon": 20, "levels": [50, 99]})
    assert response.status_code == 200, response.text
    rows = response.json()["forecasts"][0]["forecast"]
    assert len(rows) == 20
    assert all(r["lo-99"] < r["lo-50"] < r["hi-50"] < r["hi-99"] for r in rows)


def test_as_of_forecasts_from_the_data_known_then(client):
    response = wait_for_model(client, {"series_id": "unemp", "horizon": 1, "as_of": "1990-01-01"})
    assert response.status_code == 200, response.text
    assert response.json()["forecasts"][0]["forecast"][0]["ds"] == "1990-01-01T00:00:00Z"


def test_as_of_is_the_family_estimated_on_the_data_known_then_and_later_vintages_cannot_reach_it(
    client, version, module_schema
):
    """The forecast "as of D" is the version's family and parameters estimated on the data known
    at D (compared with a fit made here on that panel); a value revised later (planted with a later
    vintage) changes nothing; a D before the data begins is a 422."""
    import pandas as pd

    from pefm.forecasting.panel import load_panel
    from pefm.forecasting.training import estimator
    from pefm.storage.database import Database
    from pefm.storage.model_versions import get_version
    from pefm.storage.observations import write_observations

    as_of = datetime(1990, 3, 1, tzinfo=UTC)
    with Database(module_schema, max_size=1) as db, db.connection() as conn:
        served = get_version(conn, version)
        panel = load_panel(conn, served.series_ids, as_of=as_of)
        expected = estimator(served.family, served.params).fit(panel).predict(4, (80, 95))
        revised = pd.DataFrame({"series_id": ["infl"], "ts": [pd.Timestamp("1985-01-01")], "value": [55.0]})
        write_observations(conn, revised, vintage=datetime(2005, 1, 1, tzinfo=UTC))  # known only in 2005
    body = {"series_id": "infl", "horizon": 4, "as_of": "1990-03-01"}
    response = wait_for_model(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["estimated_as_of"] == "1990-03-01T00:00:00.000000Z"
    got = response.json()["forecasts"][0]["forecast"]
    want = expected[expected["series_id"] == "infl"]
    assert [r["mean"] for r in got] == pytest.approx(want["mean"].tolist(), rel=1e-9)
    assert [r["hi-95"] for r in got] == pytest.approx(want["hi-95"].tolist(), rel=1e-9)
    too_early = client.post("/v1/forecast", json={"series_id": "infl", "as_of": "1959-02-01"})
    assert too_early.status_code == 422 and "as_of 1959-02-01" in too_early.json()["error"]
    assert too_early.json()["details"][0]["field"] == "as_of"
    # with a history too, the field at fault is still as_of (it had been named history)
    history = [{"ts": "1959-04-01", "value": 1.0}]
    both = client.post("/v1/forecast", json={"series_id": "infl", "as_of": "1959-02-01", "history": history})
    assert both.status_code == 422 and both.json()["details"][0]["field"] == "as_of", both.text


def test_as_of_in_level_space_starts_from_the_level_known_then(client, module_schema):
    """realgdp (annualized log growth) as of 1990-03-01: the model-space step applied to the last
    level known then (1989Q4), in the stored unit; in model space, the derived unit."""
    import math

    import psycopg

    with psycopg.connect(module_schema) as conn:
        known = conn.execute(
            """SELECT value FROM observations WHERE series_id = 'realgdp' AND vintage <= '1990-03-01'
               ORDER BY ts DESC, vintage DESC LIMIT 1"""
        ).fetchone()[0]
    body = {"series_id": "realgdp", "horizon": 2, "as_of": "1990-03-01"}
    level = wait_for_model(client, body).json()["forecasts"][0]
    model = wait_for_model(client, {**body, "space": "model"}).json()["forecasts"][0]
    assert (level["space"], model["space"]) == ("level", "model")
    assert level["unit"] == "billions of chained 2005 US$, SAAR"
    assert model["unit"] == "percent, annualized log growth"
    step = model["forecast"][0]["mean"]
    assert level["forecast"][0]["mean"] == pytest.approx(known * math.exp(step / 400), rel=1e-9)
    assert level["forecast"][0]["ds"] == model["forecast"][0]["ds"] == "1990-01-01T00:00:00Z"


def test_an_as_of_forecast_is_kept_with_the_registry_and_served_from_it(client, version, module_schema):
    """The first request for an origin estimates and stores the forecast (both spaces, the
    precomputed shape); later ones, here or on any replica, are answered from the registry."""
    import psycopg

    body = {"series_id": "unemp", "horizon": 2, "as_of": "1995-06-15", "space": "model"}
    first = wait_for_model(client, body).json()["forecasts"][0]["forecast"]
    with psycopg.connect(module_schema) as conn:
        kept = conn.execute(
            """SELECT space, cutoff::date::text, jsonb_array_length(rows), levels FROM origin_forecasts
               WHERE model_version = %s AND series_id = 'unemp' ORDER BY space""",
            (version,),
        ).fetchall()
        assert ("model", "1995-01-01", 12, [80, 95]) in kept and ("level", "1995-01-01", 12, [80, 95]) in kept
        assert first[0]["mean"] == pytest.approx(
            conn.execute(
                """SELECT (rows->0->>'mean')::float FROM origin_forecasts
                   WHERE model_version = %s AND series_id = 'unemp' AND space = 'model' AND cutoff = '1995-01-01'""",
                (version,),
            ).fetchone()[0]
        )
        conn.execute(  # mark the stored forecast: the next answer must come from it
            """UPDATE origin_forecasts SET rows = jsonb_set(rows, '{0,mean}', '123.5')
               WHERE model_version = %s AND series_id = 'unemp' AND space = 'model' AND cutoff = '1995-01-01'""",
            (version,),
        )
    again = client.post("/v1/forecast", json={**body, "as_of": "1995-05-01"}).json()["forecasts"][0]
    assert again["forecast"][0]["mean"] == 123.5 and again["data_as_of"] == "1995-05-01T00:00:00.000000Z"


def test_a_kept_as_of_forecast_gives_way_to_a_backdated_write(client, module_schema):
    """A vintage backdated after an as-of forecast was kept changes what was known then: the kept
    forecast was still served, for moments nobody had asked before too; and the same request
    again was answered from the replica's caches (answers, panels, estimates at past moments)."""
    import psycopg

    body = {"series_id": "unemp", "horizon": 2, "as_of": "1993-06-15", "space": "model"}
    before = wait_for_model(client, body).json()["forecasts"][0]["forecast"]
    try:
        with psycopg.connect(module_schema) as conn:  # as `POST /v1/observations?backdate=1` would
            conn.execute(
                """INSERT INTO observations (series_id, ts, vintage, value, source)
                   VALUES ('unemp', '1990-01-01', '1992-01-01', 15.0, 'test: backdated')"""
            )
        again = client.post("/v1/forecast", json=body).json()["forecasts"][0]["forecast"]
        assert again[0]["ds"] == before[0]["ds"] and again[0]["mean"] != pytest.approx(before[0]["mean"])
        after = client.post("/v1/forecast", json={**body, "as_of": "1993-06-20"}).json()["forecasts"][0]["forecast"]
        assert after == again  # the same data known at both moments: the forecast kept after the write
        with psycopg.connect(module_schema) as conn:  # kept in place of the old one
            kept = conn.execute(
                """SELECT known_at::date::text, (rows->0->>'mean')::float FROM origin_forecasts
                   WHERE series_id = 'unemp' AND cutoff = '1993-01-01' AND space = 'model'"""
            ).fetchone()
        assert kept[0] == "1993-06-15" and kept[1] == pytest.approx(after[0]["mean"])
    finally:
        with psycopg.connect(module_schema) as conn:
            conn.execute("DELETE FROM observations WHERE source = 'test: backdated'")
            conn.execute("DELETE FROM origin_forecasts WHERE series_id = 'unemp' AND cutoff = '1993-01-01'")


def test_what_if_history_changes_the_forecast(client):
    base = wait_for_model(client, {"series_id": "unemp", "horizon": 2}).json()["forecasts"][0]["forecast"]
    shocked = wait_for_model(
        client,
        {
            "series_id": "unemp",
            "horizon": 2,
            "history": [{"ts": "2000-01-01", "value": 9.0}, {"ts": "2000-04-01", "value": 10.0}],
        },
    )
    assert shocked.status_code == 200, shocked.text
    rows = shocked.json()["forecasts"][0]["forecast"]
    assert rows[0]["ds"] == "2000-07-01T00:00:00Z"  # the history extended the series by two quarters
    assert rows[0]["mean"] > base[0]["mean"] + 3  # an AR on unemployment follows a jump to 10%
    off = client.post("/v1/forecast", json={"series_id": "unemp", "history": [{"ts": "2000-02-01", "value": 9.0}]})
    assert off.status_code == 422 and off.json()["details"][0]["field"] == "history[0].ts"
    # history must join the series period by period: a gap would be read as one step
    for history, message in (
        ([{"ts": "2000-07-01", "value": 9.0}], "leaves 2000-01-01 missing"),
        ([{"ts": "2000-01-01", "value": 9.0}, {"ts": "2000-07-01", "value": 9.0}], "leaves 2000-04-01 missing"),
        ([{"ts": "1900-01-01", "value": 9.0}], "before the series' first value"),
    ):
        refused = client.post("/v1/forecast", json={"series_id": "unemp", "history": history})
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["details"]
        assert detail["field"].startswith("history[") and message in detail["message"], detail
    # 300 problems: the first 100 named, the rest counted, as ingest answers (the count was dropped)
    months = [f"{1980 + m // 12}-{m % 12 + 1:02d}-15" for m in range(300)]
    for history, error in (
        ([{"ts": ts, "value": 9.0} for ts in months], "history timestamps are off the series frequency"),
        ([{"ts": f"x{i}", "value": 9.0} for i in range(300)], "invalid history"),  # no timestamp at all
    ):
        body = client.post("/v1/forecast", json={"series_id": "unemp", "history": history}).json()
        assert (len(body["details"]), body["truncated"], body["more"]) == (100, True, 200), body
        assert body["error"] == error and body["details"][-1]["field"] == "history[99].ts"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"series_id": "nope"}, 404, None),
        ({"series_id": "unemp", "horizon": 0}, 422, "horizon"),
        ({"series_id": "unemp", "horizon": 61}, 422, "horizon"),
        ({"series_id": "unemp", "horizon": "8"}, 422, "horizon"),
        ({"series_id": "unemp", "levels": [100]}, 422, "levels"),
        ({"series_id": "unemp", "levels": []}, 422, "levels"),
        ({"series_id": "unemp", "as_of": "soon"}, 422, "as_of"),
        ({"series_id": "unemp", "extra": 1}, 422, "extra"),
        ({"series_id": "unemp", "series_ids": ["infl"]}, 422, "series_id"),
        ({"series_id": "unemp", "space": "log"}, 422, "space"),
        ({"series_id": "unemp", "as_of": "2999-01-01"}, 422, "as_of"),
        ({"series_ids": ["unemp", "infl"], "history": [{"ts": "2000-01-01", "value": 1}]}, 422, "history"),
    ],
)
def test_bad_requests(client, body, status, field):
    response = client.post("/v1/forecast", json=body)
    assert response.status_code == status, response.text
    if field:
        assert field in {d["field"] for d in response.json()["details"]}


def test_a_series_the_model_does_not_cover_is_409_and_malformed_json_400(client, module_schema):
    import psycopg

    with psycopg.connect(module_schema) as conn:
        conn.execute("INSERT INTO series (id, name, frequency) VALUES ('cpi_x', 'CPI', 'Q') ON CONFLICT DO NOTHING")
    response = client.post("/v1/forecast", json={"series_id": "cpi_x"})
    assert response.status_code == 409, response.text
    assert response.json()["error"].endswith(
        "does not forecast: cpi_x; cpi_x: not one of the series this ar model was trained on"
    )
    assert client.post("/v1/forecast", content=b"{nope").status_code == 400


def test_predictions_are_logged_and_metrics_exposed(client, module_schema, version):
    before = count(module_schema, "predictions")
    client.post("/v1/forecast", json={"series_id": "infl", "horizon": 3})
    deadline = time.monotonic() + 5
    while count(module_schema, "predictions") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(module_schema, "predictions") > before
    text = client.get("/metrics").text
    assert f'pefm_forecasts_served_total{{model_version="{version}",revision="pefm-inference-blue",' in text
    assert f'pefm_model_info{{family="ar",model_version="{version}",revision="pefm-inference-blue"}} 1.0' in text
    committed = json.loads((ROOT / "src/pefm/serving/openapi/inference.json").read_text())
    assert client.get("/openapi.json").json() == committed


def test_only_signed_shadow_requests_are_left_out_of_metrics_and_logs(client, module_schema):
    """A rollout's probe signs its request with the key the revisions share (PEFM_SHADOW_KEY):
    answered, not counted. A bare or forged header from anyone else changes nothing."""

    def served():  # requests, and series forecasts
        lines = client.get("/metrics").text.splitlines()
        counted = (("pefm_requests_total{", 'route="/v1/forecast"'), ("pefm_forecasts_served_total{", ""))
        return tuple(
            sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix) and match in line)
            for prefix, match in counted
        )

    def post(shadow: str) -> None:
        response = client.post("/v1/forecast", content=body, headers={"content-type": "application/json", **shadow})
        assert response.status_code == 200
        time.sleep(0.6)  # let the prediction-log write land

    body = json.dumps({"series_id": "unemp", "horizon": 2}).encode()
    time.sleep(0.6)  # let earlier prediction-log writes land
    before, logged = served(), count(module_schema, "predictions")
    post({"x-pefm-shadow": sign_shadow(SHADOW_KEY, "/v1/forecast", body)})
    assert (served(), count(module_schema, "predictions")) == (before, logged)
    refused = [
        "1",  # what any client could send before
        sign_shadow("not-the-key", "/v1/forecast", body),
        sign_shadow(SHADOW_KEY, "/v1/forecast", body, now=time.time() - 3600),  # an old one, replayed
        sign_shadow(SHADOW_KEY, "/v1/forecast", body + b" "),  # signed for another body
        "t=" + "9" * 5000 + ",sig=0",  # a timestamp int() cannot read
    ]
    for value in refused:
        post({"x-pefm-shadow": value})
    assert served() == (before[0] + len(refused), before[1] + len(refused))
    assert count(module_schema, "predictions") == logged + len(refused)


def test_the_dashboard_asks_the_api_for_an_as_of_forecast_then_reads_the_kept_one(
    client, inference, version, module_schema, monkeypatch
):
    """The Forecasts page's as-of view (dashboard.data.origin_forecast, then answered): a forecast
    the registry has not kept yet comes from the inference API (which estimates and keeps it); the
    next view of the same origin reads it from the registry, identical."""
    import psycopg

    from dashboard.data import answered, ask_deadline, origin_forecast
    from pefm.config import get_settings

    def forecast_at(conn, version_id: str, series_id: str, at: datetime, horizon: int, space: str):
        made = origin_forecast(conn, version_id, series_id, at, horizon, space, version_id)  # it serves
        return answered(made, version_id, ask_deadline())

    wait_for_model(client, {"series_id": "realgdp", "horizon": 1, "as_of": "1990-01-01"})  # the model is loaded
    monkeypatch.setenv("PEFM_ROUTER_URL", inference.url)
    get_settings.cache_clear()
    as_of = datetime(1996, 6, 15, tzinfo=UTC)
    try:
        with psycopg.connect(module_schema) as conn:
            asked = forecast_at(conn, version, "realgdp", as_of, 4, "level")
            kept = forecast_at(conn, version, "realgdp", as_of, 4, "level")
    finally:
        get_settings.cache_clear()
    assert asked.note == "computed by the inference API" and kept.note == "kept by the registry"
    assert f"{asked.origin:%Y-%m-%d}" == "1996-01-01" and len(asked.rows) == 4
    assert asked.rows.equals(kept.rows)
    assert asked.rows["mean"].iloc[0] > 1000  # level space: billions of dollars


COLD_START = """
import asyncio, json, os, sys
import httpx
from function import new

function = new()
function.start(dict(os.environ))
LAZY = {"starlette", "prometheus_client", "torch", "statsmodels"}

async def main():
    transport = httpx.ASGITransport(app=function.handle)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.post("/v1/forecast", json={"series_id": "realgdp", "horizon": 4})
        loaded = sorted(LAZY & {name.split(".")[0] for name in sys.modules})
        scraped = await client.get("/metrics")
        return first.status_code, loaded, scraped.status_code, scraped.text

print(json.dumps(asyncio.run(main())))
function.stop()
"""


def test_a_cold_start_answers_its_first_forecast_before_importing_what_it_does_not_need(module_schema, version):
    """Issue 20's cold start: start() and the first precomputed forecast import neither Starlette
    nor prometheus-client (nor the model's torch and statsmodels); the first scrape brings
    prometheus-client and Starlette, and counts that forecast. (The function is driven in-process
    through its ASGI entry point, so its sys.modules can be read.)"""
    import os
    import subprocess
    import sys

    from pefm.storage.roles import role_url
    from tests.conftest import VERIFY_KEYS

    env = {
        **os.environ,
        "PEFM_DATABASE_URL": role_url(module_schema, "inference"),
        "PEFM_VERIFY_KEYS": VERIFY_KEYS,
        "PEFM_MODEL_VERSION": version,
        "PEFM_RECONDITION": "off",
        "PYTHONPATH": str(ROOT / "functions" / "inference"),
    }
    cwd = ROOT / "functions" / "inference"
    run = subprocess.run([sys.executable, "-c", COLD_START], cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    status, loaded, scraped, metrics = json.loads(run.stdout.strip().splitlines()[-1])
    assert status == 200 and loaded == []
    assert scraped == 200
    assert 'pefm_requests_total{method="POST",revision=' in metrics and 'route="/v1/forecast"' in metrics
    assert f'pefm_model_info{{family="ar",model_version="{version}"' in metrics
    assert "pefm_start_to_ready_seconds{" in metrics


def test_an_as_of_read_of_a_recent_moment_waits_for_a_write_under_way(client, module_schema):
    """A write's vintage is stamped before it commits: an as-of read of a moment after the stamp,
    made before the commit, missed the write and kept that answer for good (origin_forecasts)."""
    import threading
    from datetime import timedelta

    import pandas as pd
    import psycopg

    from pefm.storage.observations import write_observations

    answers = []
    wait_for_model(client, {"series_id": "unemp", "horizon": 1, "as_of": "2001-01-01"})  # loaded and warm
    try:
        with psycopg.connect(module_schema) as conn:
            with conn.transaction():
                row = pd.DataFrame({"series_id": ["unemp"], "ts": [pd.Timestamp("2009-10-01")], "value": [12.5]})
                stamped = write_observations(conn, row).vintage
                time.sleep(1.2)  # the as-of moment below is in the past
                as_of = (stamped + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                body = {"series_id": "unemp", "horizon": 1, "as_of": as_of, "space": "model"}
                asking = threading.Thread(target=lambda: answers.append(client.post("/v1/forecast", json=body)))
                asking.start()
                time.sleep(2)  # ample for an answer (a warm as-of forecast takes some 0.1 s)
                assert answers == []  # waiting for the write to commit
            asking.join(60)
        [answer] = answers
        assert answer.status_code == 200, answer.text
        assert answer.json()["forecasts"][0]["forecast"][0]["ds"].startswith("2010-01-01")  # from the new point
    finally:
        with psycopg.connect(module_schema) as conn:
            conn.execute("DELETE FROM observations WHERE series_id = 'unemp' AND ts = '2009-10-01'")


def test_a_body_that_fails_to_parse_counts_against_the_rate_limit(module_schema, version, tmp_path):
    """The limit was checked after the body was parsed and checked: a caller over it was still
    read, and its malformed bodies never counted (400 after 400, then a 200). A rollout's signed
    probe is still never limited."""
    if time.time() % 86400 > 86340:  # not across a window's end (midnight UTC)
        time.sleep(86400 - time.time() % 86400 + 1)
    env = {"PEFM_MODEL_VERSION": version, "PEFM_RATE_LIMIT": "3/86400", "PEFM_SHADOW_KEY": SHADOW_KEY}
    running = start_function("inference", module_schema, tmp_path, **env)
    try:
        with running.client() as c:
            headers = {"content-type": "application/json"}
            statuses = [c.post("/v1/forecast", content=b"{" * 10, headers=headers).status_code for _ in range(5)]
            assert statuses == [400, 400, 400, 429, 429]
            assert c.post("/v1/forecast", json={"series_id": "unemp"}).status_code == 429
            body = json.dumps({"series_id": "unemp"}).encode()
            probe = {**headers, "x-pefm-shadow": sign_shadow(SHADOW_KEY, "/v1/forecast", body)}
            assert c.post("/v1/forecast", content=body, headers=probe).status_code == 200
    finally:
        stop(running)
