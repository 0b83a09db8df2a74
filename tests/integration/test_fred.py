"""The FRED/ALFRED connector against a local HTTP server that answers as the FRED API does (no
network here): the bodies below follow FRED's documented JSON for ``fred/series`` and
``fred/series/observations`` (including ALFRED real-time periods, ``.`` for a missing value and
its error bodies); the values are illustrative excerpts, not current data."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from pefm.data.fred import FredClient, FredError
from pefm.data.frequency import Frequency
from pefm.data.loading import load_fred
from pefm.storage.observations import read_series, write_observations
from pefm.storage.series import get_series

KEY = "abcdefghijklmnopqrstuvwxyz123456"
SERIES = {
    "GDPC1": {
        "id": "GDPC1",
        "realtime_start": "2026-12-02",
        "realtime_end": "2026-12-02",
        "title": "Real Gross Domestic Product",
        "observation_start": "1947-01-01",
        "observation_end": "2019-07-01",
        "frequency": "Quarterly",
        "frequency_short": "Q",
        "units": "Billions of Chained 2012 Dollars",
        "units_short": "Bil. of Chn. 2012 $",
        "seasonal_adjustment": "Seasonally Adjusted Annual Rate",
        "seasonal_adjustment_short": "SAAR",
        "last_updated": "2019-10-30 07:51:02-05",
        "popularity": 91,
        "notes": "BEA Account Code: A191RX",
    },
    "DCOILWTICO": {
        "id": "DCOILWTICO",
        "title": "Crude Oil Prices: West Texas Intermediate (WTI) - Cushing, Oklahoma",
        "frequency": "Daily",
        "frequency_short": "D",
        "units": "Dollars per Barrel",
        "seasonal_adjustment_short": "NSA",
        "notes": "",
    },
    "WEEKLYSA": {"id": "WEEKLYSA", "title": "Semiannual thing", "frequency": "Semiannual", "frequency_short": "SA"},
    "GDPPOT": {
        "id": "GDPPOT",
        "title": "Real Potential Gross Domestic Product",
        "frequency": "Quarterly",
        "frequency_short": "Q",
        "units": "Billions of Chained 2017 Dollars",
        "seasonal_adjustment_short": "NSA",
        "notes": "",
    },
}


def _obs(date: str, value: str, start: str = "2026-12-02", end: str = "2026-12-02") -> dict[str, str]:
    return {"realtime_start": start, "realtime_end": end, "date": date, "value": value}


CURRENT = {
    "GDPC1": [
        _obs("2019-01-01", "18927.281"),
        _obs("2019-04-01", "19021.860"),
        _obs("2019-07-01", "."),  # not published yet at this vintage
    ],
    "DCOILWTICO": [_obs("2019-01-02", "46.31"), _obs("2019-01-03", "47.09"), _obs("2019-01-04", "47.96")],
    "GDPPOT": [_obs("2026-01-01", "23900.1"), _obs("2034-10-01", "26800.5")],  # CBO's projection, to 2034
}
ALFRED = {  # GDPC1 2019Q1 as first published, then twice revised; 2019Q2 once
    "GDPC1": [
        _obs("2019-01-01", "18912.326", "2019-04-26", "2019-05-29"),
        _obs("2019-01-01", "18907.517", "2019-05-30", "2019-06-26"),
        _obs("2019-01-01", "18927.281", "2019-06-27", "9999-12-31"),
        _obs("2019-04-01", ".", "2019-04-26", "2019-07-25"),
        _obs("2019-04-01", "19023.820", "2019-07-26", "9999-12-31"),
    ]
}


class FakeFred(BaseHTTPRequestHandler):
    """Answers like api.stlouisfed.org/fred; ``script`` holds canned failures served first."""

    page_size = 2  # small pages, so the client must follow them
    script: ClassVar[list[tuple[int, dict]]] = []
    requests: ClassVar[list[dict]] = []

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        FakeFred.requests.append({"path": url.path, **query})
        if FakeFred.script:
            status, headers = FakeFred.script.pop(0)
            return self._send(status, {"error_code": status, "error_message": "Too Many Requests."}, headers)
        if query.get("api_key") != KEY:
            message = (
                "Bad Request.  The value for variable api_key is not registered.  Read "
                "https://fred.stlouisfed.org/docs/api/api_key.html for more information."
            )
            return self._send(400, {"error_code": 400, "error_message": message})
        fred_id = query.get("series_id", "")
        if url.path.endswith("/series"):
            if fred_id not in SERIES:
                return self._send(400, {"error_code": 400, "error_message": "Bad Request.  The series does not exist."})
            return self._send(
                200, {"realtime_start": "2026-12-02", "realtime_end": "2026-12-02", "seriess": [SERIES[fred_id]]}
            )
        every = (ALFRED if query.get("realtime_start") == "1776-07-04" else CURRENT).get(fred_id, [])
        offset = int(query.get("offset", 0))
        page = every[offset : offset + FakeFred.page_size]
        return self._send(
            200, {"count": len(every), "offset": offset, "limit": int(query["limit"]), "observations": page}
        )

    def _send(self, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def fred():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeFred)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeFred.script, FakeFred.requests = [], []
    yield f"http://127.0.0.1:{server.server_port}/fred"
    server.shutdown()


def client(url: str, key: str = KEY) -> FredClient:
    return FredClient(key, url, backoff=0.0, sleep=lambda seconds: None)


def test_metadata_and_observations_create_the_series_and_a_refetch_changes_nothing(db, fred):
    with db.connection() as conn:
        meta, fetched, result = load_fred(conn, client(fred), "GDPC1")
        assert (meta.id, meta.frequency, meta.source) == ("gdpc1", Frequency.QUARTERLY, "fred:GDPC1")
        assert meta.unit == "Billions of Chained 2012 Dollars, SAAR" and meta.name == "Real Gross Domestic Product"
        assert get_series(conn, "gdpc1") == meta
        assert (result.inserted, fetched.missing) == (2, 1)
        assert read_series(conn, "gdpc1").tolist() == [18927.281, 19021.86]
        _, _, again = load_fred(conn, client(fred), "GDPC1")
        assert (again.inserted, again.revised, again.unchanged) == (0, 0, 2)
    assert {r["file_type"] for r in FakeFred.requests} == {"json"}


def test_vintages_store_every_value_at_the_date_it_became_known(db, fred):
    with db.connection() as conn:
        _, fetched, result = load_fred(conn, client(fred), "GDPC1", vintages=True)
        assert (result.inserted, result.revised) == (2, 2)  # two dates, 2019Q1 revised twice
        assert fetched.missing == 1 and fetched.values["vintage"].nunique() == 4
        first = read_series(conn, "gdpc1", as_of="2019-05-01")
        assert first.tolist() == [18912.326]  # 2019Q2 was not yet published (".")
        assert read_series(conn, "gdpc1", as_of="2019-06-01").tolist() == [18907.517]
        assert read_series(conn, "gdpc1").tolist() == [18927.281, 19023.82]
        assert read_series(conn, "gdpc1", as_of="2019-04-25").empty  # before the first release
        # ALFRED's dates are days in US Central time: a release is known once its day has ended
        # there, not from midnight UTC, the evening before (08:30 ET is 12:30 UTC on the day)
        assert read_series(conn, "gdpc1", as_of="2019-04-26T20:00:00Z").empty
        assert read_series(conn, "gdpc1", as_of="2019-04-27T05:00:00Z").tolist() == [18912.326]
    pages = [r for r in FakeFred.requests if r["path"].endswith("/observations")]
    assert [int(r["offset"]) for r in pages] == [0, 2, 4]  # every page followed
    assert {(r["realtime_start"], r["realtime_end"]) for r in pages} == {("1776-07-04", "9999-12-31")}


def test_a_value_released_today_is_known_from_the_fetch_not_from_tomorrow(db, fred, monkeypatch):
    """The end of today in US Central time is still ahead: stored there, the release would hide a
    correction written now (counted as an insert, missing from the latest data until tomorrow)."""
    today = pd.Timestamp.now(tz="America/Chicago").strftime("%Y-%m-%d")
    monkeypatch.setitem(SERIES, "TODAY", {**SERIES["GDPC1"], "id": "TODAY"})
    released = [_obs("2019-01-01", "100.0", "2019-04-26"), _obs("2019-04-01", "101.0", today)]
    monkeypatch.setitem(ALFRED, "TODAY", released)
    with db.connection() as conn:
        before = datetime.now(UTC)
        _, fetched, _ = load_fred(conn, client(fred), "TODAY", vintages=True)
        vintages = fetched.values["vintage"]
        assert vintages.max() <= pd.Timestamp.now(tz="UTC") and vintages.max() >= pd.Timestamp(before)
        correction = pd.DataFrame({"series_id": ["today"], "ts": [pd.Timestamp("2019-04-01")], "value": [101.5]})
        assert write_observations(conn, correction).revised == 1
        assert read_series(conn, "today").tolist() == [100.0, 101.5]


def test_values_dated_after_they_became_known_are_refused_and_nothing_is_written(db, fred):
    """A projection stored as known now would be read as data: every forecast would start after 2034."""
    from pefm.data.validation import ValidationError

    with db.connection() as conn:
        with pytest.raises(ValidationError, match="after the moment they became known") as refused:
            load_fred(conn, client(fred), "GDPPOT")
        [issue] = refused.value.details  # 2026Q1 is known; 2034Q4, the second date, is not
        assert (issue.field, issue.index) == ("ts", 1) and "is after the vintage" in issue.message
        conn.rollback()
        assert get_series(conn, "gdppot") is None


def test_rate_limits_and_server_errors_are_retried_then_reported(db, fred):
    FakeFred.script = [(429, {"Retry-After": "0"}), (503, {})]
    assert client(fred).series("GDPC1")["id"] == "GDPC1"  # after a 429 and a 503
    FakeFred.script = [(503, {})] * 6
    with pytest.raises(FredError, match="FRED answered 503") as failed:
        client(fred).series("GDPC1")
    assert failed.value.status == 503 and len(FakeFred.requests) == 3 + 6


def test_a_bad_key_or_an_unknown_series_is_a_clear_error_and_writes_nothing(db, fred):
    with pytest.raises(FredError, match="api_key is not registered") as refused:
        client(fred, key="not-a-key").series("GDPC1")
    assert refused.value.status == 400
    with db.connection() as conn:
        with pytest.raises(FredError, match="series does not exist"):
            load_fred(conn, client(fred), "NOPE")
        with pytest.raises(FredError, match="PEFM stores D, W, M, Q and A"):
            load_fred(conn, client(fred), "WEEKLYSA")
        assert get_series(conn, "nope") is None and get_series(conn, "weeklysa") is None
    with pytest.raises(FredError, match="PEFM_FRED_API_KEY"):
        FredClient("", fred)


def test_a_daily_series_of_weekdays_is_business_daily(db, fred):
    with db.connection() as conn:
        meta, _, result = load_fred(conn, client(fred), "DCOILWTICO", series_id="wti_fred")
    assert (meta.id, meta.frequency, meta.unit, result.inserted) == (
        "wti_fred",
        Frequency.BUSINESS_DAILY,
        "Dollars per Barrel",
        3,
    )


def test_the_command_fetches_and_reports(db, cli_env, fred):  # db: the schema, migrated
    env = {**cli_env, "PEFM_FRED_URL": fred, "PEFM_FRED_API_KEY": KEY, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "data", "fetch", "fred", "GDPC1", "--vintages"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = "gdpc1 (quarterly, Billions of Chained 2012 Dollars, SAAR): 4 values in 4 vintage(s)"
    assert f"{summary}; 2 inserted, 2 revised" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "data", "fetch", "fred", "GDPC1"],
        env={**env, "PEFM_FRED_API_KEY": "wrong"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "api_key is not registered" in refused.stderr
