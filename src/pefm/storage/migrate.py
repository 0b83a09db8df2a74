"""Ordered SQL migrations, recorded in ``schema_migrations`` and applied under an advisory lock.

Migrations are the files ``migrations/NNNN_name.sql``, applied in version order, each in its own
transaction. A session-level advisory lock makes two processes that start at once take turns:
the second finds the work done and applies nothing. An applied migration whose file has changed
since is an error, never silently skipped, unless its recorded checksum is one of the migration's
earlier texts listed in ``migrations/superseded.toml`` with the reason it was corrected. Whether
the migrations use TimescaleDB is decided once per run (``pefm.storage.timescale``) and handed to
each migration's transaction as the ``pefm.timescaledb`` setting. After them the component roles
get their privileges (``pefm.storage.roles``).

Only the migrator migrates (``pefm db migrate``, ``pefm bootstrap``, ``pefm up``, and the ``pefm``
command on its own embedded server); every other process checks that the schema is current
(``require_migrated``) and refuses to start otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg

from pefm.storage.roles import apply_roles
from pefm.storage.timescale import SETTING, TimescalePlan, timescale_plan

log = logging.getLogger(__name__)
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


def superseded_checksums() -> dict[int, dict[str, str]]:
    """Per version, the checksums of its earlier texts that databases may have applied, with the
    reason each was corrected."""
    text = resources.files("pefm.storage").joinpath("migrations", "superseded.toml").read_text(encoding="utf-8")
    out: dict[int, dict[str, str]] = {}
    for entry in tomllib.loads(text).get("migration", []):
        out.setdefault(int(entry["version"]), {})[entry["checksum"]] = entry["reason"]
    return out


def applied_migrations(conn: psycopg.Connection) -> list[AppliedMigration]:
    """What the database has applied, oldest first (empty when it has never been migrated)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version").fetchall()
    return [AppliedMigration(*row) for row in rows]


def pending_migrations(conn: psycopg.Connection, shipped: list[Migration] | None = None) -> list[Migration]:
    """The shipped migrations the database has not applied (after checking its history)."""
    done = {m.version: m for m in applied_migrations(conn)}
    shipped = shipped or shipped_migrations()
    _check_history(shipped, done, superseded_checksums())
    return [m for m in shipped if m.version not in done]


def require_migrated(conn: psycopg.Connection) -> None:
    """Return if the schema is current; MigrationError naming the step otherwise (a component
    never migrates: it has no right to)."""
    if pending := pending_migrations(conn):
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending[:3]) + (" ..." if len(pending) > 3 else "")
        raise MigrationError(
            f"the database is not migrated ({len(pending)} pending: {names}): run `pefm db migrate` as the migrator"
        )


def migrate(conn: psycopg.Connection, passwords: Mapping[str, str] | None = None) -> list[Migration]:
    """Apply every pending migration, then grant the component roles their privileges (creating
    the missing roles where this user may; ``passwords``: by component); return the migrations
    applied by this call (possibly none)."""
    shipped = shipped_migrations()
    conn.commit()
    was_autocommit = conn.autocommit
    conn.autocommit = True  # so that each conn.transaction() below is a real transaction
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            applied = _apply_pending(conn, shipped)
            apply_roles(conn, passwords)
            return applied
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
    pending = pending_migrations(conn, shipped)
    if not pending:
        return []
    timescale = timescale_plan(conn)
    if timescale.use:
        log.info("migrations: %s", timescale.reason)
    else:  # a server that has TimescaleDB but cannot use it deserves a warning; plain PostgreSQL does not
        level = logging.WARNING if timescale.available else logging.INFO
        log.log(level, "migrations: plain PostgreSQL tables: %s", timescale.reason)
    applied = []
    for migration in pending:
        with conn.transaction():
            conn.execute("SELECT set_config(%s, %s, true)", (SETTING, "on" if timescale.use else "off"))
            try:
                conn.execute(migration.sql)
            except psycopg.errors.InsufficientPrivilege as exc:
                if migration.version == TIMESCALEDB_MIGRATION and timescale.use:
                    raise MigrationError(_may_not_create(timescale, exc)) from exc
                raise
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        applied.append(migration)
    return applied


TIMESCALEDB_MIGRATION = 2
"""The migration that creates the TimescaleDB extension, where the plan is to use it."""


def _may_not_create(timescale: TimescalePlan, exc: Exception) -> str:
    """What to do when the migrating role may not create the TimescaleDB extension the server
    preloads (plain tables instead would be for good: 0002 decides the tables' kind once)."""
    return (
        f"migration 0002: this role may not create the TimescaleDB extension ({timescale.reason}; "
        f"{' '.join(str(exc).split())}): have a role that may (a superuser, or one with CREATE on "
        "the database and on schema public) run CREATE EXTENSION timescaledb SCHEMA public, then "
        "migrate again"
    )


def _check_history(
    shipped: list[Migration], done: dict[int, AppliedMigration], superseded: dict[int, dict[str, str]]
) -> None:
    known = {m.version: m for m in shipped}
    for version, applied in done.items():
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{applied.name}, which this PEFM "
                "does not ship: it was migrated by a newer PEFM"
            )
        if applied.checksum in superseded.get(version, {}):
            log.debug("migration %04d: applied as an earlier text, since corrected", version)
            continue
        if migration.checksum != applied.checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} changed after it was applied "
                f"(checksum {applied.checksum[:12]} in the database, {migration.checksum[:12]} here)"
            )
