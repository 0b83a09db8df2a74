"""Least privilege: one PostgreSQL role per component, granted only what that component does.

The migrator (whoever runs ``pefm db migrate`` or ``pefm bootstrap``: the owner of PEFM's tables)
is the only one that runs DDL on them. After the migrations it creates the component roles that
are missing (it needs CREATEROLE for that; without it, ``pefm db roles --sql`` prints the one-time
step for whoever has it) and grants each role exactly ``PRIVILEGES`` on the tables of the schema it
migrated, revoking anything else. A component role owns nothing, so it can never ALTER, DROP or
TRUNCATE a table, and each writes only the tables listed for it.

Roles are created ``LOGIN`` without a password: such a role can connect only where the server
trusts the connection (the embedded server's socket) until ``PEFM_ROLE_PASSWORD_<COMPONENT>`` gives
it one, which the migrator sets (a Kubernetes Secret per component on a cluster), sending the
server its SCRAM verifier, never the password.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

_LOGS = {"request_log": "INSERT", "revision_starts": "INSERT"}  # every function logs its requests and starts
_READ = (
    "series",
    "observations",
    "intraday_observations",
    "all_observations",
    "daily_bars",
    "model_versions",
    "origin_forecasts",
)

STATUS_COLUMNS = "status, status_reason, status_changed_at"
"""What a rollout changes of a registry row (``storage.model_versions.set_status``)."""

PRIVILEGES: dict[str, dict[str, str]] = {
    # external writes: series metadata and observations, nothing else
    "ingest": {
        "schema_migrations": "SELECT",
        "series": "SELECT, INSERT, UPDATE",
        "observations": "SELECT, INSERT",
        "intraday_observations": "SELECT, INSERT",
        "all_observations": "SELECT",
        "daily_bars": "SELECT",
        **_LOGS,
    },
    # reads the registry and the data; writes its logs and the as-of forecasts it computes
    "inference": {
        "schema_migrations": "SELECT",
        **dict.fromkeys(_READ, "SELECT"),
        "origin_forecasts": "SELECT, INSERT, UPDATE",  # a forecast kept from other data is replaced
        "predictions": "INSERT",
        **_LOGS,
    },
    # reads what it draws; changes go through the rollout API
    "dashboard": {
        "schema_migrations": "SELECT",
        **dict.fromkeys(
            (
                *_READ,
                "request_log",
                "predictions",
                "revision_starts",
                "rollouts",
                "rollout_events",
                "drift_reports",
                "retrain_jobs",
                "retrain_events",
                "local_revisions",
                "local_traffic",
            ),
            "SELECT",
        ),
    },
    # drift reports from the data, the predictions and the registry
    "monitor": {
        "schema_migrations": "SELECT",
        **dict.fromkeys((*_READ, "predictions", "rollouts", "retrain_jobs"), "SELECT"),
        "drift_reports": "SELECT, INSERT, DELETE",  # and prunes them (pefm.storage.retention)
        "retrain_events": "SELECT, INSERT",  # that it asked for a retraining: the cool-down starts
        **_LOGS,
        "request_log": "SELECT, INSERT",
    },
    # the rollout API, its controller, the Flagger webhooks and the local router: rollouts, the
    # traffic table, and the registry's status when a rollout promotes or rejects
    "rollout": {
        "schema_migrations": "SELECT",
        **dict.fromkeys((*_READ, "predictions", "revision_starts"), "SELECT"),
        "model_versions": f"SELECT, UPDATE ({STATUS_COLUMNS})",  # never a gate report, an artifact or its forecasts
        "request_log": "SELECT, INSERT",
        "rollouts": "SELECT, INSERT, UPDATE",
        "rollout_events": "SELECT, INSERT",
        "local_revisions": "SELECT, INSERT, UPDATE, DELETE",
        "local_traffic": "SELECT, INSERT, UPDATE",
        "drift_reports": "SELECT",
        "retrain_jobs": "SELECT",
    },
    # training, backtests, gates and retraining, which deploys its candidate and starts its rollout
    # (the rollout role's privileges, which it is a member of)
    "trainer": {
        "schema_migrations": "SELECT",
        **dict.fromkeys((*_READ, "predictions", "drift_reports"), "SELECT"),
        "model_versions": "SELECT, INSERT, UPDATE",
        "origin_forecasts": "SELECT, INSERT, UPDATE",  # a forecast kept from other data is replaced
        "retrain_jobs": "SELECT, INSERT, UPDATE",
        "retrain_events": "SELECT, INSERT",
    },
}
EXECUTE: dict[str, tuple[str, ...]] = {
    # the owner's functions a role may call (SECURITY DEFINER: what only the owner may do, narrowed)
    "ingest": ("refresh_daily_bars",),
    "trainer": ("refresh_daily_bars",),
}
COMPONENTS = tuple(PRIVILEGES)
MEMBERSHIPS = {"trainer": ("rollout",)}


def role_name(component: str) -> str:
    if component not in PRIVILEGES:
        raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    return f"pefm_{component}"


def role_url(url: str, component: str, password: str | None = None) -> str:
    """``url`` (a URL or a conninfo string) connecting as ``component``'s role instead, with
    ``password`` (None: none, e.g. on a server that trusts the connection)."""
    params = {k: v for k, v in conninfo_to_dict(url).items() if k != "password"}
    params["user"] = role_name(component)
    if password:
        params["password"] = password
    return make_conninfo("", **params)


def password_verifiers(conn: psycopg.Connection, passwords: Mapping[str, str]) -> dict[str, str]:
    """Per component, the SCRAM-SHA-256 verifier of its password: what the server stores, made
    by libpq (``PQencryptPasswordConn``, as psql's ``\\password`` does) on this side, so that the
    password itself never travels in a statement a server may log."""
    return {
        component: conn.pgconn.encrypt_password(
            password.encode(), role_name(component).encode(), b"scram-sha-256"
        ).decode()
        for component, password in passwords.items()
    }


def role_statements(verifiers: Mapping[str, str] | None = None) -> list[sql.Composed]:
    """Create the missing roles (and set the passwords whose ``password_verifiers`` are given):
    the part that needs CREATEROLE."""
    out = []
    for component in COMPONENTS:
        role = sql.Identifier(role_name(component))
        out.append(
            sql.SQL(
                "DO $$ BEGIN CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ).format(role)
        )
        if verifier := (verifiers or {}).get(component):
            out.append(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(verifier)))
    for component, parents in MEMBERSHIPS.items():
        for parent in parents:
            member, group = sql.Identifier(role_name(component)), sql.Identifier(role_name(parent))
            out.append(sql.SQL("GRANT {} TO {}").format(group, member))
    return out


def grant_statements(conn: psycopg.Connection) -> list[sql.Composed]:
    """Each role's privileges on the tables of the current schema, and nothing more (a table a
    later migration creates gets its grants when that migration has run)."""
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    tables = {  # tables, views and materialized views
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
            " AND relkind IN ('r', 'p', 'v', 'm')"
        ).fetchall()
    }
    functions = {
        r[0] for r in conn.execute("SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace")
    }
    out = []
    for component, grants in PRIVILEGES.items():
        role = sql.Identifier(role_name(component))
        out.append(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(sql.Identifier(schema), role))
        out.append(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(sql.Identifier(schema), role))
        out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role))
        if any("INSERT" in privileges.upper() for privileges in grants.values()):  # ids for its rows; none to read
            out.append(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(sql.Identifier(schema), role))
        for table, privileges in grants.items():
            if table not in tables:
                continue
            out.append(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), sql.Identifier(schema, table), role))
        for function in EXECUTE.get(component, ()):
            if function in functions:
                name = sql.Identifier(schema, function)
                out.append(sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(name, role))
    return out


def missing_roles(conn: psycopg.Connection) -> list[str]:
    names = [role_name(c) for c in COMPONENTS]
    found = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchall()}
    return [n for n in names if n not in found]


def may_create_roles(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def apply_roles(conn: psycopg.Connection, passwords: Mapping[str, str] | None = None) -> None:
    """Create the missing roles where this session may, set the given passwords, and grant each
    role its privileges on the current schema, in one transaction. Without CREATEROLE and with
    roles missing, the grants wait for them: a warning names the one-time step."""
    with conn.transaction():
        if may_create_roles(conn):
            for statement in role_statements(password_verifiers(conn, passwords or {})):
                conn.execute(statement)
        elif missing := missing_roles(conn):
            log.warning(
                "roles %s are missing and this user may not create them: run `pefm db roles --sql` "
                "and have a user with CREATEROLE run what it prints, then `pefm db migrate` again",
                ", ".join(missing),
            )
            return
        for statement in grant_statements(conn):
            conn.execute(statement)
