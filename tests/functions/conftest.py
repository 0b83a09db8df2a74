"""Functions under test run as real processes: func-python's serve(new) on loopback, started from
the function's own folder exactly as the kn func Python runtime starts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.fields import parse_timestamp
from pefm.data.loading import load_bundled
from pefm.forecasting.panel import MACRO_PANEL
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import Process, free_port, serve_command, spawn
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from pefm.storage.model_versions import ModelVersion
from pefm.storage.roles import role_url
from tests.conftest import VERIFY_KEYS, fresh_schema

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-ingest-token"
ADMIN_TOKEN = "test-admin-token"  # backdated vintages (history replayed as known back then) need it
TRAINED_AS_OF = datetime(2000, 1, 1, tzinfo=UTC)  # register_model's models: the data as known then


def start_function(
    name: str, database_url: str, tmp: Path, *, ready_path: str = "/health/readiness", **env: str
) -> Process:
    """Start functions/<name> under func-python, connected as its own role (``database_url``'s
    server and schema) and trusting this run's signing key, and wait until ``ready_path`` answers
    200 (``/health/liveness`` for a function not expected to become ready)."""
    port = free_port()
    environment = {
        "PEFM_DATABASE_URL": role_url(database_url, name),
        "PEFM_VERIFY_KEYS": VERIFY_KEYS,
        "PYTHONPATH": str(ROOT / "functions" / name),
        **env,
    }
    return spawn(
        serve_command(ROOT / "functions" / name),
        cwd=ROOT / "functions" / name,
        env=environment,
        log=tmp / f"{name}-{port}.log",
        ready_path=ready_path,
        name=name,
        port=port,
    )


def wait_for_model(client, body):
    """Requests that need the model itself get 503 until it has loaded in the background."""
    deadline = time.monotonic() + 60
    while True:
        response = client.post("/v1/forecast", json=body)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        assert response.headers["retry-after"]
        time.sleep(0.2)


def conditioned_on_latest(url: str, series: list[str], timeout: float = 30, since: datetime | None = None) -> None:
    """Wait until the inference revision at ``url``, serving a ``register_model`` model, forecasts
    ``series`` from the data as known now (or read ``since`` a moment): a revision starts from its
    training data and catches up on the rest a moment later (``serving.freshness``), as any that
    has run for a while has."""
    deadline, pending = time.monotonic() + timeout, set(series)
    first = since or TRAINED_AS_OF + timedelta(microseconds=1)
    while True:
        for series_id in sorted(pending):
            answer = httpx.post(f"{url}/v1/forecast", json={"series_id": series_id, "horizon": 1}, timeout=10)
            if answer.status_code == 200 and parse_timestamp(answer.json()["forecasts"][0]["data_as_of"]) >= first:
                pending.discard(series_id)
        if not pending:
            return
        assert time.monotonic() < deadline, f"{url} did not catch up on {sorted(pending)}"
        time.sleep(0.1)


def stop(running: Process) -> None:
    running.stop()


@pytest.fixture(scope="module")
def module_schema(server_url: str) -> Iterator[str]:
    """One schema for the module's functions: migrated, with three bundled series loaded."""
    with fresh_schema(server_url, "f") as url:
        with Database(url, max_size=2) as db, db.connection() as conn:
            migrate(conn)
            load_bundled(conn, bundled(["realgdp", "unemp", "infl"]))
        yield url


def register_model(url: str, family: str, series: list[str], **params) -> str:
    """Train, register and promote a model on data as of 2000-01-01; its version id."""
    with Database(url, max_size=1) as db, db.connection() as conn:
        version, _ = train(conn, family, series, as_of=TRAINED_AS_OF, spec=None, params=params)
        promote(conn, version.id)
    return version.id


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def replay_start(db: Database, spec) -> tuple[dict[str, pd.Series], ModelVersion]:
    """The 2000s replay's starting point: the macro panel as known at the end of 1999 (the 2000s
    arrive later, through ingest), and an AR model trained on it with ``spec``, serving."""
    items = bundled(list(MACRO_PANEL))
    with db.connection() as conn:
        migrate(conn)
        load_bundled(conn, items)
        conn.execute("DELETE FROM observations WHERE ts >= '2000-01-01'")
        conn.commit()
        serving, _ = train(conn, "ar", list(MACRO_PANEL), spec=spec)
        promote(conn, serving.id)
    return {b.meta.id: b.load() for b in items}, serving


def replay_quarters(full: dict[str, pd.Series]) -> list[pd.Timestamp]:
    return sorted({ts for s in full.values() for ts in s.index if ts.year >= 2000})


def ingest_quarter(ingest_url: str, full: dict[str, pd.Series], quarter: pd.Timestamp) -> str:
    """Post one quarter of the panel to the ingest function, known from the quarter's end (as the
    bundled history is, so later backtests see the 2000s as known at each cutoff); its label."""
    body = {
        "series": [
            {"series_id": s, "observations": [{"ts": f"{quarter:%Y-%m-%d}", "value": float(full[s].loc[quarter])}]}
            for s in MACRO_PANEL
            if quarter in full[s].index
        ],
        "vintage": (quarter + pd.offsets.QuarterBegin(startingMonth=1)).strftime("%Y-%m-%dT00:00:00Z"),
    }
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}  # a vintage in the past: an admin's backdated write
    response = httpx.post(f"{ingest_url}/v1/observations?backdate=1", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return f"{quarter.year}Q{(quarter.month - 1) // 3 + 1}"


class Load:
    """Clients sending forecasts through a router all along, as production traffic would; the
    status of every answer (0: no answer)."""

    def __init__(self, url: str, series: list[str]):
        self.url, self.series, self.stop, self.statuses = url, series, threading.Event(), []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                body = {"series_id": self.series[i % len(self.series)], "horizon": 4}
                try:
                    self.statuses.append(client.post(f"{self.url}/v1/forecast", json=body).status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)
                i += 1
                time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def tick_at_barrier(url: str, timeout: float = 60) -> None:
    """Until a controller's tick waits on a lock inside its metrics query (the request log's
    percentile): the barrier a race test holds with ``LOCK TABLE request_log``."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND query LIKE '%percentile_cont%'"""
            ).fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no controller tick reached the barrier")
