"""Market series through the ingest function (a real process under func-python, a real
PostgreSQL): a minute-bar series created, streamed and uploaded into its own table, bars off
their minute refused by position, ticks at any microsecond; a business-daily series on an
exchange calendar, whose holidays are refused."""

import pandas as pd
import psycopg
import pytest

from tests.functions.conftest import ADMIN_TOKEN, TOKEN, start_function, stop

AUTH = {"authorization": f"Bearer {TOKEN}"}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}  # backdated vintages


@pytest.fixture(scope="module")
def ingest(module_schema, tmp_path_factory):
    running = start_function(
        "ingest",
        module_schema,
        tmp_path_factory.mktemp("market"),
        PEFM_INGEST_TOKEN=TOKEN,
        PEFM_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    yield running
    stop(running)


def stored(url: str, table: str, series: str) -> list[tuple[str, float]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), value FROM {table}"
            " WHERE series_id = %s ORDER BY ts",
            (series,),
        ).fetchall()
    return [tuple(r) for r in rows]


def test_a_minute_series_is_streamed_and_uploaded_into_the_intraday_table(ingest, module_schema):
    with ingest.client() as client:
        body = {"name": "ES one-minute closes", "frequency": "1min", "unit": "index points"}
        assert client.put("/v1/series/es.1min", json=body, headers=AUTH).status_code == 201
        assert client.get("/v1/series/es.1min").json()["frequency"] == "1min"
        event = {"series_id": "es.1min", "observations": [{"ts": "2026-03-02T14:31:00Z", "value": 5800.25}]}
        assert client.post("/v1/observations", json=event, headers=AUTH).json()["inserted"] == 1
        # a day's upload, over STREAM_ROWS: written on its own by COPY, into the same table
        stamps = pd.date_range("2026-03-02 14:32", periods=1200, freq="1min")
        day = [{"ts": f"{ts:%Y-%m-%dT%H:%M}Z", "value": 5800.5 + i / 4} for i, ts in enumerate(stamps)]
        answer = client.post("/v1/observations", json={"series_id": "es.1min", "observations": day}, headers=AUTH)
        assert answer.status_code == 200 and answer.json()["inserted"] == 1200
        off = [{"ts": "2026-03-05T14:34:00Z", "value": 1.0}, {"ts": "2026-03-05T14:34:30Z", "value": 2.0}]
        refused = client.post("/v1/observations", json={"series_id": "es.1min", "observations": off}, headers=AUTH)
        assert refused.status_code == 422
        [detail] = refused.json()["details"]
        assert detail["message"] == "2026-03-05 14:34 is not a minute period start" and "[1]" in detail["field"]
    values = [v for _, v in stored(module_schema, "intraday_observations", "es.1min")]
    assert values == [5800.25] + [5800.5 + i / 4 for i in range(1200)]
    assert stored(module_schema, "observations", "es.1min") == []


def test_ticks_keep_their_microseconds(ingest, module_schema):
    with ingest.client() as client:
        body = {"name": "EUR/USD trades", "frequency": "tick"}
        assert client.put("/v1/series/eurusd.ticks", json=body, headers=AUTH).status_code == 201
        ticks = [
            {"ts": "2026-03-02T14:31:07.123456Z", "value": 1.0841},
            {"ts": "2026-03-02T14:31:07.5Z", "value": 1.0842},
        ]
        answer = client.post(
            "/v1/observations", json={"series_id": "eurusd.ticks", "observations": ticks}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
    assert stored(module_schema, "intraday_observations", "eurusd.ticks") == [
        ("2026-03-02 14:31:07.123456", 1.0841),
        ("2026-03-02 14:31:07.500000", 1.0842),
    ]


def test_a_tick_after_its_vintage_is_refused_where_a_daily_value_of_a_day_begun_ahead_of_utc_is_not(ingest):
    """A tick's stamp is an instant: one after the moment its values were known (the vintage) is
    refused, but for the clocks' skew. A day begins up to 14 hours ahead of UTC somewhere (UTC+14),
    so a daily value dated the next UTC day, known 4 hours before it began in UTC, is taken."""
    vintage = "2026-03-01T20:00:00Z"
    with ingest.client() as client:
        for series, frequency in (("nzd.ticks", "tick"), ("nzx.daily", "D")):
            body = {"name": series, "frequency": frequency}
            assert client.put(f"/v1/series/{series}", json=body, headers=AUTH).status_code == 201
        tick = {"series_id": "nzd.ticks", "observations": [{"ts": "2026-03-02T00:00:00Z", "value": 0.6}]}
        refused = client.post("/v1/observations?backdate=1", json={**tick, "vintage": vintage}, headers=ADMIN)
        assert refused.status_code == 422, refused.text
        assert "is after the vintage (2026-03-01 20:00:00 UTC)" in refused.json()["details"][0]["message"]
        daily = {"series_id": "nzx.daily", "observations": [{"ts": "2026-03-02", "value": 12000.0}]}
        taken = client.post("/v1/observations?backdate=1", json={**daily, "vintage": vintage}, headers=ADMIN)
        assert taken.status_code == 200, taken.text


def test_a_series_on_an_exchange_calendar_refuses_its_holidays(ingest, module_schema):
    with ingest.client() as client:
        body = {"name": "S&P 500 futures settle", "frequency": "B", "calendar": "XNYS"}
        assert client.put("/v1/series/es.settle", json=body, headers=AUTH).status_code == 201
        assert client.get("/v1/series/es.settle").json()["calendar"] == "XNYS"
        days = [{"ts": "2018-12-31", "value": 2507.0}, {"ts": "2019-01-01", "value": 2510.0}]
        refused = client.post("/v1/observations", json={"series_id": "es.settle", "observations": days}, headers=AUTH)
        assert refused.status_code == 422
        [detail] = refused.json()["details"]
        assert detail["message"] == "2019-01-01 00:00 is not a XNYS session" and "[1]" in detail["field"]
        days[1]["ts"] = "2019-01-02"
        assert (
            client.post("/v1/observations", json={"series_id": "es.settle", "observations": days}, headers=AUTH).json()[
                "inserted"
            ]
            == 2
        )
        for bad, message in (
            ({"calendar": "XXXX"}, "unknown exchange calendar 'XXXX'"),
            ({"calendar": "XNYS", "frequency": "Q"}, "only a business-daily (B) series has an exchange calendar"),
        ):
            answer = client.put("/v1/series/es.other", json={**body, **bad}, headers=AUTH)
            assert answer.status_code == 422 and answer.json()["details"][0]["field"] == "calendar"
            assert message in answer.json()["details"][0]["message"]
    assert [v for _, v in stored(module_schema, "observations", "es.settle")] == [2507.0, 2510.0]
