"""Least privilege on a real PostgreSQL: each component's role can do what it needs and nothing
more; only the migrator runs DDL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import psycopg
import pytest

from pefm.config import Settings
from pefm.storage.database import Database, open_database
from pefm.storage.migrate import MigrationError, migrate
from pefm.storage.roles import (
    COMPONENTS,
    MEMBERSHIPS,
    PRIVILEGES,
    apply_roles,
    password_verifiers,
    role_name,
    role_statements,
    role_url,
)

PERMANENT = [
    "series",
    "observations",
    "model_versions",
    "request_log",
    "predictions",
    "rollouts",
    "rollout_events",
    "local_revisions",
    "local_traffic",
    "drift_reports",
    "retrain_events",
    "revision_starts",
    "retrain_jobs",
    "origin_forecasts",
    "schema_migrations",
    "intraday_observations",
    "all_observations",  # a view
    "daily_bars",  # a materialized view
]


def as_role(schema_url: str, component: str) -> psycopg.Connection:
    return psycopg.connect(role_url(schema_url, component), autocommit=True)


def refused(conn: psycopg.Connection, statement: str) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_each_role_holds_exactly_its_privileges(db: Database, schema_url: str):
    """What the server says each role may do on every table equals ``PRIVILEGES`` (with the
    roles it is a member of): nothing missing, nothing extra, no table forgotten."""
    with db.connection() as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                " AND relkind IN ('r', 'p', 'v', 'm')"
            )
        }
        assert tables == set(PERMANENT)
        for component in COMPONENTS:
            expected, on_columns = {}, {}
            for source in (component, *MEMBERSHIPS.get(component, ())):
                for table, privileges in PRIVILEGES[source].items():
                    whole, columns = _parsed(privileges)
                    expected.setdefault(table, set()).update(whole)
                    for privilege, names in columns.items():
                        on_columns.setdefault((table, privilege), set()).update(names)
            for table in PERMANENT:
                held = {
                    p
                    for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                    if conn.execute(
                        "SELECT has_table_privilege(%s, format('%%I.%%I', current_schema(), %s::text), %s)",
                        (role_name(component), table, p),
                    ).fetchone()[0]
                }
                assert held == expected.get(table, set()), (component, table)
                columns = [r[0] for r in conn.execute(_COLUMNS, (table,))]
                for privilege in ("SELECT", "INSERT", "UPDATE", "REFERENCES"):
                    if privilege in held:
                        continue  # every column, by the table's grant
                    held_on = {
                        c
                        for c in columns
                        if conn.execute(
                            "SELECT has_column_privilege(%s, format('%%I.%%I', current_schema(), %s::text), %s, %s)",
                            (role_name(component), table, c, privilege),
                        ).fetchone()[0]
                    }
                    assert held_on == on_columns.get((table, privilege), set()), (component, table, privilege)


_COLUMNS = """SELECT attname FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped
              AND attrelid = format('%%I.%%I', current_schema(), %s::text)::regclass"""


def _parsed(privileges: str) -> tuple[set[str], dict[str, set[str]]]:
    """``"SELECT, UPDATE (a, b)"`` as ({"SELECT"}, {"UPDATE": {"a", "b"}})."""
    columns = {m[1]: {c.strip() for c in m[2].split(",")} for m in re.finditer(r"(\w+)\s*\(([^)]*)\)", privileges)}
    whole = {p.strip() for p in re.sub(r"\w+\s*\([^)]*\)", "", privileges).split(",") if p.strip()}
    return whole, columns


def test_a_rollout_changes_a_versions_status_and_nothing_else_of_it(db: Database, schema_url: str):
    """The rollout API promotes and rejects (the status columns); a gate report, an artifact or its
    precomputed forecasts are the trainer's: a rollout role cannot mark a candidate passed."""
    with as_role(schema_url, "rollout") as conn:
        conn.execute("UPDATE model_versions SET status = 'serving', status_reason = 'x' WHERE false")
        assert refused(conn, "UPDATE model_versions SET gate_report = '{\"passed\": true}' WHERE false")
        assert refused(conn, "UPDATE model_versions SET precomputed = NULL WHERE false")
        assert refused(conn, "UPDATE model_versions SET artifact = '' WHERE false")


@pytest.mark.parametrize("component", COMPONENTS)
def test_no_component_can_change_the_schema(db: Database, schema_url: str, component: str):
    with as_role(schema_url, component) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role_name(component)
        assert refused(conn, "DROP TABLE observations")
        assert refused(conn, "ALTER TABLE observations ADD COLUMN evil text")
        assert refused(conn, "ALTER TABLE model_versions DROP CONSTRAINT model_versions_signed_whole")
        assert refused(conn, "TRUNCATE request_log")
        assert refused(conn, "CREATE TABLE evil (x int)")  # nor create one next to them
        assert refused(conn, "CREATE INDEX evil ON series (name)")


def test_only_the_writers_of_data_refresh_the_daily_bars_and_only_through_the_function(db: Database, schema_url: str):
    for component in COMPONENTS:
        with as_role(schema_url, component) as conn:
            assert refused(conn, "REFRESH MATERIALIZED VIEW daily_bars")
            allowed = not refused(conn, "SELECT refresh_daily_bars()")
            assert allowed == (component in ("ingest", "trainer")), component


def test_ingest_writes_data_and_nothing_else(db: Database, schema_url: str):
    with as_role(schema_url, "ingest") as conn:
        conn.execute("INSERT INTO series (id, name, frequency) VALUES ('x', 'x', 'Q')")
        conn.execute("INSERT INTO observations (series_id, ts, vintage, value) VALUES ('x', '2000-01-01', now(), 1.0)")
        assert refused(conn, "DELETE FROM observations")
        assert refused(conn, "UPDATE observations SET value = 2")  # revisions are new vintages, never edits
        assert refused(conn, "UPDATE model_versions SET status = 'serving'")
        assert refused(conn, "DELETE FROM rollouts")
        assert refused(conn, "SELECT * FROM drift_reports")
        assert refused(conn, "SELECT id FROM model_versions")  # artifacts and gate reports: none of its business


def test_inference_reads_and_logs_but_cannot_write_data_or_the_registry(db: Database, schema_url: str):
    with db.connection() as conn:
        conn.execute("INSERT INTO series (id, name, frequency) VALUES ('x', 'x', 'Q')")
    with as_role(schema_url, "inference") as conn:
        assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 1
        assert refused(
            conn, "INSERT INTO observations (series_id, ts, vintage, value) VALUES ('x', '2000-01-01', now(), 1.0)"
        )
        assert refused(conn, "UPDATE series SET name = 'y'")
        assert refused(conn, "DELETE FROM observations")
        assert refused(conn, "UPDATE model_versions SET artifact = 'x'")
        assert refused(conn, "INSERT INTO local_traffic (service, traffic) VALUES ('inference', '[]')")
        conn.execute("INSERT INTO revision_starts (service, revision, start_to_ready_s) VALUES ('inference', 'r', 1)")


def test_the_dashboard_only_reads(db: Database, schema_url: str):
    with as_role(schema_url, "dashboard") as conn:
        conn.execute("SELECT count(*) FROM rollouts").fetchone()
        columns = "service, revision, route, method, status, latency_ms"
        assert refused(conn, f"INSERT INTO request_log ({columns}) VALUES ('d', 'r', '/', 'GET', 200, 1)")
        assert refused(conn, "UPDATE rollouts SET phase = 'Succeeded'")
        assert refused(conn, "SELECT nextval('rollouts_id_seq')")  # it inserts nothing: no ids to take


def test_a_component_refuses_an_unmigrated_schema_and_never_migrates(schema_url: str):
    """Every process but the migrator opens the database as 'current': pending migrations are an
    error naming the migrator's step, and the schema stays empty."""
    with pytest.raises(MigrationError, match="pefm db migrate"):
        open_database(Settings(database_url=schema_url), embedded_ok=False).close()
    with psycopg.connect(schema_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0] == 0
    migrator = open_database(Settings(database_url=schema_url), schema="migrate")
    with migrator, migrator.connection() as conn:
        assert conn.execute("SELECT to_regclass('observations') IS NOT NULL").fetchone()[0]
    open_database(Settings(database_url=schema_url), embedded_ok=False).close()  # now current


def test_a_migrator_without_createrole_grants_to_roles_made_by_someone_else(server_url: str, schema_url: str):
    """A managed database: the migrator owns the tables but may not create roles. The roles come
    from the one-time SQL (`pefm db roles --sql`), run by a user who may; the migrator's grants
    then apply."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        schema = schema_url.rsplit("search_path%3D", 1)[1]
        admin.execute("DROP ROLE IF EXISTS pefm_test_owner")
        admin.execute("CREATE ROLE pefm_test_owner LOGIN NOCREATEROLE")
        admin.execute(f"ALTER SCHEMA {schema} OWNER TO pefm_test_owner")
        for statement in role_statements():  # what `pefm db roles --sql` prints, run by an admin
            admin.execute(statement)
    owner_url = psycopg.conninfo.make_conninfo(schema_url, user="pefm_test_owner")
    try:
        with psycopg.connect(owner_url) as conn:
            migrate(conn)
        with as_role(schema_url, "inference") as conn:
            assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == 0
            assert refused(
                conn, "INSERT INTO observations (series_id, ts, vintage, value) VALUES ('x', '2000-01-01', now(), 1)"
            )
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.execute(f"CREATE SCHEMA {schema}")  # the fixture drops it again
            admin.execute("DROP ROLE pefm_test_owner")


def test_a_role_password_reaches_the_server_as_its_scram_verifier_never_in_clear(server_url: str, db: Database):
    """The migrator sets ``PEFM_ROLE_PASSWORD_<COMPONENT>`` by sending the server the password's
    SCRAM-SHA-256 verifier (made by libpq on this side), so a server logging every statement, or
    `pefm db roles --sql`'s output, never holds the password. The stored verifier is checked
    against the password by RFC 5802's own derivation."""
    password = "correct horse battery staple"
    with db.connection() as conn:
        statements = [s.as_string(conn) for s in role_statements(password_verifiers(conn, {"ingest": password}))]
        apply_roles(conn, {"ingest": password})
    assert not any(password in s for s in statements)
    assert any(s.startswith('ALTER ROLE "pefm_ingest" PASSWORD \'SCRAM-SHA-256$') for s in statements), statements
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'pefm_ingest'").fetchone()[0]
        method, rest = stored.split("$", 1)
        params, keys = rest.split("$")
        iterations, salt = params.split(":")
        stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        assert method == "SCRAM-SHA-256" and password not in stored
        assert hashlib.sha256(client_key).digest() == stored_key
        assert hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("ALTER ROLE pefm_ingest PASSWORD NULL")  # the roles are the server's, shared by the tests


def test_the_monitor_sees_a_lock_another_session_holds_without_taking_it(db: Database, schema_url: str):
    """The local monitor asks, as its own role, whether a retraining holds the retraining lock
    (``Database.lock_held``, read from pg_locks, where the old probe took the lock for an instant).
    Both halves of the bigint key are compared: names hashing to negative keys and to positive
    ones, each told from the others and from keys differing from its own in one half only."""
    names = [f"pefm.test.lock-{i}" for i in range(8)]
    with db.connection() as conn:
        signs = {conn.execute("SELECT sign(hashtextextended(%s, 0))", (name,)).fetchone()[0] for name in names}
    assert signs == {-1, 1}
    monitor = Database(role_url(schema_url, "monitor"), max_size=1)
    try:
        for name in names:
            assert not monitor.lock_held(name)
            with db.advisory_lock(name, wait=False) as (held, _):
                assert held and monitor.lock_held(name)
                assert not any(monitor.lock_held(other) for other in names if other != name)
            assert not monitor.lock_held(name)
            for other in ("1::int8 << 32", "1::int8"):  # the high half differs, then the low half
                with db.connection() as conn:
                    conn.execute(f"SELECT pg_advisory_xact_lock(hashtextextended(%s, 0) # ({other}))", (name,))
                    assert not monitor.lock_held(name)
    finally:
        monitor.close()
