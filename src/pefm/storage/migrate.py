"""Ordered SQL migrations, recorded in ``schema_migrations`` and applied under an advisory lock.

Migrations are the files ``migrations/NNNN_name.sql``, applied in version order, each in its own
transaction. A session-level advisory lock makes two processes that start at once take turns:
the second finds the work done and applies nothing. An applied migration whose file has changed
since is an error, never silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg

# pg_advisory_lock key: the first 8 bytes of sha256("pefm.migrate"), as a signed bigint.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"pefm.migrate").digest()[:8], "big", signed=True)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's migration history does not match the migrations shipped with PEFM."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def shipped_migrations() -> list[Migration]:
    """The migrations in this package, in version order (versions must be unique)."""
    found: dict[int, Migration] = {}
    for entry in resources.files("pefm.storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version:04d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied_migrations(conn: psycopg.Connection) -> list[AppliedMigration]:
    """What the database has applied, oldest first (empty when it has never been migrated)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version").fetchall()
    return [AppliedMigration(*row) for row in rows]


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply every pending migration; return those applied by this call (possibly none)."""
    shipped = shipped_migrations()
    conn.commit()
    was_autocommit = conn.autocommit
    conn.autocommit = True  # so that each conn.transaction() below is a real transaction
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            return _apply_pending(conn, shipped)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.autocommit = was_autocommit


def _apply_pending(conn: psycopg.Connection, shipped: list[Migration]) -> list[Migration]:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    done = {m.version: m for m in applied_migrations(conn)}
    _check_history(shipped, done)
    applied = []
    for migration in shipped:
        if migration.version in done:
            continue
        with conn.transaction():
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        applied.append(migration)
    return applied


def _check_history(shipped: list[Migration], done: dict[int, AppliedMigration]) -> None:
    known = {m.version: m for m in shipped}
    for version, applied in done.items():
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{applied.name}, which this PEFM "
                "does not ship: it was migrated by a newer PEFM"
            )
        if migration.checksum != applied.checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} changed after it was applied "
                f"(checksum {applied.checksum[:12]} in the database, {migration.checksum[:12]} here)"
            )
