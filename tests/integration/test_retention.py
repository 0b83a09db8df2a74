"""Retention on plain PostgreSQL: the logs and drift reports past 90 days are deleted (TimescaleDB's
policies do it for the logs' hypertables; nothing did on plain tables, nor for drift reports)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pefm.storage import retention
from pefm.storage.database import Database
from pefm.storage.roles import role_url
from tests.integration.test_cli import run


def _age(conn: psycopg.Connection, days: int) -> str:
    return conn.execute("SELECT (now() - %s * interval '1 day')::text", (days,)).fetchone()[0]


def _log(conn: psycopg.Connection, days: int) -> None:
    ts = _age(conn, days)
    conn.execute(
        "INSERT INTO request_log (ts, service, revision, route, method, status, latency_ms)"
        " VALUES (%s, 'inference', 'r1', '/v1/forecast', 'POST', 200, 1.0)",
        (ts,),
    )
    conn.execute(
        "INSERT INTO predictions (ts, request_id, revision, model_version, series_id, horizon, forecast)"
        " VALUES (%s, 'q', 'r1', 'v1', 's', 1, '{}')",
        (ts,),
    )


def _report(conn: psycopg.Connection, version: str, days: int) -> int:
    return conn.execute(
        """INSERT INTO drift_reports (created_at, model_version, data_as_of, series, drifted_series, breach, evidently)
           VALUES (%s, %s, now(), %s, '{}', false, %s) RETURNING id""",
        (_age(conn, days), version, Jsonb({}), Jsonb({})),
    ).fetchone()[0]


def _ages(conn: psycopg.Connection, table: str) -> list[int]:
    """The rows' ages in days, youngest first."""
    query = f"SELECT round(extract(epoch FROM now() - ts) / 86400)::int FROM {table} ORDER BY ts DESC"
    return [row[0] for row in conn.execute(query)]


def test_prune_deletes_what_is_past_the_retention_in_batches_and_keeps_each_versions_latest_report(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches, one transaction each
    with db.connection() as conn:
        for days in (200, 120, 95, 91, 89, 10, 0):
            _log(conn, days)
        old_v1 = [_report(conn, "v1", days) for days in (300, 200)]
        kept_v1 = [_report(conn, "v1", 5)]
        older_v2 = _report(conn, "v2", 160)
        latest_v2 = _report(conn, "v2", 150)  # v2's latest report: kept however old
    deleted = retention.prune(db, 90)
    assert deleted == {"request_log": 4, "predictions": 4, "drift_reports": 3}
    with db.connection() as conn:
        assert _ages(conn, "request_log") == _ages(conn, "predictions") == [0, 10, 89]
        kept = [row[0] for row in conn.execute("SELECT id FROM drift_reports ORDER BY id")]
    assert kept == [*kept_v1, latest_v2]
    assert not {*old_v1, older_v2} & set(kept)
    assert retention.prune(db, 90) == {"request_log": 0, "predictions": 0, "drift_reports": 0}  # nothing more
    assert retention.prune(db, days=1) == {"request_log": 2, "predictions": 2, "drift_reports": 0}


def test_the_monitor_role_prunes_its_drift_reports_and_nothing_else(db: Database, schema_url: str):
    with db.connection() as conn:
        _log(conn, 100)
        _report(conn, "v1", 100)
        _report(conn, "v1", 1)
    monitor = Database(role_url(schema_url, "monitor"), max_size=1)
    try:
        assert retention.prune_reports(monitor, 90) == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            retention.prune(monitor, 90)  # the request log is not its to delete from
    finally:
        monitor.close()


def test_db_prune_says_what_it_deleted(db: Database, cli_env: dict[str, str]):  # db: migrated
    with db.connection() as conn:
        _log(conn, 40)
        _log(conn, 20)
    out = run(cli_env, "db", "prune", "--days", "30")
    assert out.returncode == 0, out.stderr
    assert "request_log: 1 rows deleted" in out.stdout and "predictions: 1 rows deleted" in out.stdout
    assert "drift_reports: 0 rows deleted" in out.stdout
    refused = run(cli_env, "db", "prune", "--days", "0")
    assert refused.returncode == 2 and "--days" in refused.stderr
