import subprocess
import sys

import psycopg
import pytest

from pefm.storage import migrate as migrate_module
from pefm.storage.database import Database
from pefm.storage.migrate import Migration, MigrationError, migrate, shipped_migrations


def versions(conn: psycopg.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_migrating_twice_applies_everything_once(schema_url: str):
    with Database(schema_url, max_size=1) as db, db.connection() as conn:
        first = migrate(conn)
        second = migrate(conn)
        assert [m.version for m in first] == [m.version for m in shipped_migrations()]
        assert second == []
        assert versions(conn) == [m.version for m in shipped_migrations()]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        }
        assert {"series", "observations", "schema_migrations"} <= tables


def test_two_processes_migrating_at_once_take_turns(schema_url: str, cli_env: dict[str, str]):
    cmd = [sys.executable, "-m", "pefm.cli", "db", "migrate"]
    procs = [
        subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    stdout = [out for out, _ in outputs]
    # exactly one process applied the migrations; the others found them done
    assert sum("applied 0001_series_observations" in out for out in stdout) == 1
    assert sum("up to date" in out for out in stdout) == 2
    with psycopg.connect(schema_url) as conn:
        assert versions(conn) == [m.version for m in shipped_migrations()]


def test_an_applied_migration_that_changed_is_an_error(db: Database, monkeypatch):
    changed = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in shipped_migrations()]
    monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: changed)
    with db.connection() as conn, pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(conn)


def test_a_database_from_a_newer_pefm_is_an_error(db: Database, monkeypatch):
    monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: shipped_migrations()[:1])
    with db.connection() as conn, pytest.raises(MigrationError, match="newer PEFM"):
        migrate(conn)


def test_a_failing_migration_leaves_no_trace(schema_url: str, monkeypatch):
    broken = [*shipped_migrations(), Migration(9999, "broken", "CREATE TABLE half (x int); SELECT 1/0;")]
    monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: broken)
    with Database(schema_url, max_size=1) as db, db.connection() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn)
        conn.rollback()
        assert 9999 not in versions(conn)
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        # the earlier migrations did land, each in its own transaction
        assert versions(conn) == [m.version for m in shipped_migrations()]
