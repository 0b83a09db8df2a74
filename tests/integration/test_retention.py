"""Retention on plain PostgreSQL: the logs and drift reports past 90 days are deleted (TimescaleDB's
policies do it for the logs' hypertables; nothing did on plain tables, nor for drift reports).
On TimescaleDB (ci.yml's job) the logs are hypertables, which ``prune`` leaves to their policy:
each test expects that of the tables that are (``_plain``)."""

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


def _plain(db: Database) -> tuple[str, ...]:
    """The logs that are plain tables here (all of them but on TimescaleDB)."""
    with db.connection() as conn:
        hypertables = retention._hypertables(conn)
    return tuple(table for table in retention.LOGS if table not in hypertables)


def test_prune_deletes_what_is_past_the_retention_in_batches_and_keeps_each_versions_latest_report(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches, one transaction each
    plain = _plain(db)
    with db.connection() as conn:
        for days in (200, 120, 95, 91, 89, 10, 0):
            _log(conn, days)
        old_v1 = [_report(conn, "v1", days) for days in (300, 200)]
        kept_v1 = [_report(conn, "v1", 5)]
        older_v2 = _report(conn, "v2", 160)
        latest_v2 = _report(conn, "v2", 150)  # v2's latest report: kept however old
    deleted = retention.prune(db, 90)
    assert deleted == {**dict.fromkeys(plain, 4), "drift_reports": 3}
    with db.connection() as conn:
        for table in retention.LOGS:  # a hypertable's rows are its policy's to drop
            assert _ages(conn, table) == ([0, 10, 89] if table in plain else [0, 10, 89, 91, 95, 120, 200])
        kept = [row[0] for row in conn.execute("SELECT id FROM drift_reports ORDER BY id")]
    assert kept == [*kept_v1, latest_v2]
    assert not {*old_v1, older_v2} & set(kept)
    assert retention.prune(db, 90) == {**dict.fromkeys(plain, 0), "drift_reports": 0}  # nothing more
    assert retention.prune(db, days=1) == {**dict.fromkeys(plain, 2), "drift_reports": 0}


def test_the_monitor_role_prunes_its_drift_reports_and_nothing_else(db: Database, schema_url: str):
    with db.connection() as conn:
        _log(conn, 100)
        _report(conn, "v1", 100)
        _report(conn, "v1", 1)
    plain = _plain(db)
    monitor = Database(role_url(schema_url, "monitor"), max_size=1)
    try:
        assert retention.prune_reports(monitor, 90) == 1
        with monitor.connection() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM request_log")  # the request log is not its to delete from
        if plain:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                retention.prune(monitor, 90)
    finally:
        monitor.close()


def test_db_prune_says_what_it_deleted(db: Database, cli_env: dict[str, str]):  # db: migrated
    with db.connection() as conn:
        _log(conn, 40)
        _log(conn, 20)
    out = run(cli_env, "db", "prune", "--days", "30")
    assert out.returncode == 0, out.stderr
    for table in retention.LOGS:
        assert (f"{table}: 1 rows deleted" in out.stdout) == (table in _plain(db)), out.stdout
    assert "drift_reports: 0 rows deleted" in out.stdout
    refused = run(cli_env, "db", "prune", "--days", "0")
    assert refused.returncode == 2 and "--days" in refused.stderr
