"""How long the logs and drift reports are kept: ``PEFM_RETENTION_DAYS`` (90, as TimescaleDB's
policies keep the logs).

On TimescaleDB, ``request_log`` and ``predictions`` are hypertables whose retention policy (0004)
drops their chunks after 90 days. On plain PostgreSQL (the embedded default, a managed server
without the extension) nothing did, so every request ever served stayed. Drift reports, each
with its Evidently snapshot, grew without end everywhere.

``prune`` deletes what is older than the retention from the plain logs and the drift reports, in
batches of ``BATCH`` rows, each its own transaction, so a first prune of a large table holds no
lock for long. Each model version keeps its latest drift report, whatever its age: the monitor's
gauges start from the serving version's latest one, and the dashboard shows it.

``pefm db prune`` runs it; ``pefm up`` runs it at start and once a day; the monitor prunes the
drift reports (its own table) once a day.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg import sql

from pefm.storage.database import Database

BATCH = 10_000
LOGS = ("request_log", "predictions")
_LATEST_REPORTS = "SELECT max(id) FROM drift_reports GROUP BY model_version"


def prune(db: Database, days: int) -> dict[str, int]:
    """Delete the rows older than ``days`` days from the plain logs (hypertables have their
    policy) and the drift reports (each version's latest kept); the rows deleted per table."""
    if days < 1:
        raise ValueError("days must be at least 1")
    keep = timedelta(days=days)
    with db.connection() as conn:
        hypertables = _hypertables(conn)
    out = {}
    for table in LOGS:
        if table in hypertables:
            continue
        out[table] = _delete(
            db, sql.SQL("SELECT ctid FROM {} WHERE ts < now() - %s").format(sql.Identifier(table)), table, keep
        )
    out["drift_reports"] = prune_reports(db, days)
    return out


def prune_reports(db: Database, days: int) -> int:
    """Delete the drift reports older than ``days`` days but each version's latest; how many."""
    select = sql.SQL(f"SELECT ctid FROM drift_reports WHERE created_at < now() - %s AND id NOT IN ({_LATEST_REPORTS})")
    return _delete(db, select, "drift_reports", timedelta(days=days))


def _delete(db: Database, select: sql.Composable, table: str, keep: timedelta) -> int:
    statement = sql.SQL("DELETE FROM {} WHERE ctid = ANY(ARRAY({} LIMIT %s))").format(sql.Identifier(table), select)
    total = 0
    while True:
        with db.connection() as conn:
            deleted = conn.execute(statement, (keep, BATCH)).rowcount
        total += deleted
        if deleted < BATCH:
            return total


def _hypertables(conn: psycopg.Connection) -> set[str]:
    if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]:
        return set()
    rows = conn.execute(
        """SELECT hypertable_name FROM timescaledb_information.hypertables
           WHERE hypertable_schema = current_schema()"""
    ).fetchall()
    return {name for (name,) in rows}
