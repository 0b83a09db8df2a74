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


# --- TimescaleDB: qualified calls, a decision from what the server really has, corrected texts ------

TIMESCALE_FUNCTIONS = ("create_hypertable", "by_range", "add_compression_policy", "add_retention_policy")


def test_every_timescaledb_call_is_qualified_and_gated_by_the_runners_decision():
    """No TimescaleDB server here: the recorded SQL text is checked. Every call of an extension
    function is qualified by the extension's schema (``%1$I.`` in a format() string), and every block
    that calls one returns early unless the runner set pefm.timescaledb to on."""
    import re

    calls = 0
    for migration in shipped_migrations():
        for name in TIMESCALE_FUNCTIONS:
            for match in re.finditer(rf"(\S*){name}\(", migration.sql):
                calls += 1
                assert match.group(1).endswith("%1$I."), f"{migration.version:04d}: unqualified {match.group(0)}"
        if any(f"{name}(" in migration.sql for name in TIMESCALE_FUNCTIONS):
            assert "current_setting('pefm.timescaledb', true) IS DISTINCT FROM 'on'" in migration.sql
            assert "pg_available_extensions" not in migration.sql  # the runner decides, not the file
    assert calls == 14  # 0002: 3, 0004: 8, 0014: 3 (every call, not just the first of each file)


def test_migrations_run_where_the_search_path_leaves_out_public(schema_url: str):
    """The test schemas' search_path holds only themselves (as a deployment with its own schema)."""
    with Database(schema_url, max_size=1) as db, db.connection() as conn:
        assert conn.execute("SHOW search_path").fetchone()[0].startswith("t_")
        migrate(conn)
        assert versions(conn) == [m.version for m in shipped_migrations()]


def test_the_decision_reads_the_servers_preload_setting(db: Database):
    """Here plain PostgreSQL (no TimescaleDB: plain tables, nothing of the extension touched); in
    ci.yml's TimescaleDB job, a preloaded TimescaleDB (observations a hypertable)."""
    from pefm.storage.timescale import preloads_timescaledb, timescale_plan

    with db.connection() as conn:
        setting = conn.execute("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'").fetchone()[0]
        assert setting == conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        plan = timescale_plan(conn)
        hypertables = None
        if conn.execute("SELECT to_regclass('timescaledb_information.hypertables')").fetchone()[0]:
            hypertables = conn.execute(
                """SELECT count(*) FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = current_schema() AND hypertable_name = 'observations'"""
            ).fetchone()[0]
    assert plan.available is bool(available)
    if plan.use:
        assert preloads_timescaledb(setting) and hypertables == 1
    else:
        assert not hypertables


@pytest.mark.parametrize(("version", "old"), [(2, "8a820d959dd8e2fe"), (4, "7f33407be1ec411a")])
def test_a_database_that_applied_a_corrected_migrations_first_text_keeps_working(db: Database, version, old):
    from pefm.storage.migrate import superseded_checksums

    [checksum] = [c for c in superseded_checksums()[version] if c.startswith(old)]
    with db.connection() as conn:
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s", (checksum, version))
        conn.commit()
        assert migrate(conn) == []
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s", ("0" * 64, version))
        conn.commit()
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn)


def test_a_database_stuck_after_0001_moves_on_through_the_corrected_0002(schema_url: str, monkeypatch):
    with Database(schema_url, max_size=1) as db, db.connection() as conn:
        first = shipped_migrations()[:1]
        monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: first)
        migrate(conn)
        monkeypatch.undo()
        assert versions(conn) == [1]
        applied = migrate(conn)
        assert [m.version for m in applied][:1] == [2] and versions(conn) == [m.version for m in shipped_migrations()]


def test_a_plain_database_keeps_plain_tables_once_its_server_preloads_timescaledb(schema_url: str, monkeypatch):
    """0014 would look up the extension's schema in a database 0002 made without it. No server
    here has TimescaleDB: the server's facts are patched to one that has since gained it
    preloaded; the database's own (its plain tables, no extension) are read for real."""
    from pefm.storage import timescale

    real = timescale.plan
    with Database(schema_url, max_size=1) as db, db.connection() as conn:
        first = [m for m in shipped_migrations() if m.version < 14]
        monkeypatch.setattr(migrate_module, "shipped_migrations", lambda: first)
        migrate(conn)
        monkeypatch.undo()
        monkeypatch.setattr(
            timescale, "plan", lambda **facts: real(**facts | {"available": "2.17.2", "preload": "timescaledb"})
        )
        decided = timescale.timescale_plan(conn)
        assert not decided.use and "before TimescaleDB was usable" in decided.reason
        migrate(conn)
        assert versions(conn) == [m.version for m in shipped_migrations()]
        # one stopped after 0001 has decided nothing yet: 0002 may still make hypertables
        conn.execute("DELETE FROM schema_migrations WHERE version > 1")
        assert timescale.timescale_plan(conn).use


def test_the_qualified_calls_reach_the_extensions_schema_off_the_search_path(db: Database):
    """Each TimescaleDB statement of the migrations, formatted as the migration formats it, runs
    against stand-ins of the extension's functions in a schema the session's search_path leaves
    out (no TimescaleDB server here: the stand-ins record their calls)."""
    import re

    stand_ins = {
        "by_range(text, interval) RETURNS text": "SELECT $1 || ' by ' || $2",
        "create_hypertable(regclass, text, migrate_data boolean DEFAULT false) RETURNS void": (
            "INSERT INTO tsdb_stand_in.calls VALUES ('hypertable ' || $1::text || ' ' || $2)"
        ),
        "add_compression_policy(regclass, compress_after interval) RETURNS void": (
            "INSERT INTO tsdb_stand_in.calls VALUES ('compress ' || $1::text || ' after ' || $2)"
        ),
        "add_retention_policy(regclass, drop_after interval) RETURNS void": (
            "INSERT INTO tsdb_stand_in.calls VALUES ('retain ' || $1::text || ' for ' || $2)"
        ),
    }
    with db.connection() as conn:
        conn.execute("CREATE SCHEMA tsdb_stand_in")
        try:
            conn.execute("CREATE TABLE tsdb_stand_in.calls (call text)")
            for signature, body in stand_ins.items():
                conn.execute(f"CREATE FUNCTION tsdb_stand_in.{signature} LANGUAGE sql AS $f${body}$f$")
            for migration in shipped_migrations():
                for template in re.findall(r"EXECUTE format\((\$q\$.*?\$q\$),\s*ts\)", migration.sql, re.S):
                    statement = conn.execute(f"SELECT format({template}, 'tsdb_stand_in')").fetchone()[0]
                    conn.execute(statement)
            calls = [r[0] for r in conn.execute("SELECT call FROM tsdb_stand_in.calls")]
        finally:
            conn.rollback()
        assert conn.execute("SELECT to_regnamespace('tsdb_stand_in')").fetchone()[0] is None  # nothing left
    assert calls == [
        "hypertable observations ts by 3650 days",
        "compress observations after 730 days",
        "hypertable request_log ts by 1 day",
        "hypertable predictions ts by 1 day",
        "compress request_log after 7 days",
        "compress predictions after 7 days",
        "retain request_log for 90 days",
        "retain predictions for 90 days",
        "hypertable intraday_observations ts by 1 day",
        "compress intraday_observations after 7 days",
    ]


REFUSED = """DO $$ BEGIN
    RAISE insufficient_privilege USING MESSAGE = 'permission denied to create extension "timescaledb"';
END $$"""
"""The server's refusal of CREATE EXTENSION to a role that may not (SQLSTATE 42501), raised as it
raises it: no package installs TimescaleDB here, so no role can be refused it for real."""


@pytest.mark.parametrize("use", [True, False])
def test_a_migrator_refused_the_timescaledb_extension_is_told_what_to_do(schema_url, monkeypatch, use):
    """A migrating role that may not create the extension the server preloads failed at 0002 with
    PostgreSQL's bare "permission denied"; it is now told what to do. A refusal elsewhere, or with
    no plan to use TimescaleDB, is the server's own error."""
    from pefm.storage.timescale import TimescalePlan

    monkeypatch.setattr(
        migrate_module, "timescale_plan", lambda conn: TimescalePlan(use, "TimescaleDB 2.17.2, preloaded")
    )
    with psycopg.connect(schema_url) as conn:
        if use:
            with pytest.raises(MigrationError, match="CREATE EXTENSION timescaledb SCHEMA public, then migrate again"):
                migrate_module._apply_pending(conn, [Migration(2, "timescaledb", REFUSED)])
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                migrate_module._apply_pending(conn, [Migration(2, "timescaledb", REFUSED)])
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # not 0002's
            migrate_module._apply_pending(conn, [Migration(3, "other", REFUSED)])
