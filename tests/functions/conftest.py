"""Functions under test run as real processes: func-python's serve(new) on loopback, started from
the function's own folder exactly as the kn func Python runtime starts it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import SERVE, Process, free_port, spawn
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import with_schema

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-ingest-token"


def start_function(name: str, database_url: str, tmp: Path, **env: str) -> Process:
    """Start functions/<name> under func-python and wait until it answers its readiness probe."""
    port = free_port()
    environment = {"PEFM_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT / "functions" / name), **env}
    return spawn(
        [sys.executable, "-c", SERVE],
        cwd=ROOT / "functions" / name,
        env=environment,
        log=tmp / f"{name}-{port}.log",
        ready_path="/health/readiness",
        name=name,
        port=port,
    )


def stop(running: Process) -> None:
    running.stop()


@pytest.fixture(scope="module")
def module_schema(server_url: str) -> Iterator[str]:
    """One schema for the module's functions: migrated, with three bundled series loaded."""
    schema = f"f_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_schema(server_url, schema)
    with Database(url, max_size=2) as db, db.connection() as conn:
        migrate(conn)
        load_bundled(conn, bundled(["realgdp", "unemp", "infl"]))
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def register_model(url: str, family: str, series: list[str], **params) -> str:
    """Train, register and promote a model on data as of 2000-01-01; its version id."""
    with Database(url, max_size=1) as db, db.connection() as conn:
        version, _ = train(conn, family, series, as_of=datetime(2000, 1, 1, tzinfo=UTC), spec=None, params=params)
        promote(conn, version.id)
    return version.id


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
