"""Functions under test run as real processes: func-python's serve(new) on loopback, started from
the function's own folder exactly as the kn func Python runtime starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.storage.database import Database
from pefm.storage.migrate import migrate
from tests.conftest import with_schema

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-ingest-token"
SERVE = "from function import new; from func_python.http import serve; serve(new)"


@dataclass
class Running:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_function(name: str, database_url: str, tmp: Path, **env: str) -> Running:
    """Start functions/<name> under func-python and wait until it answers its readiness probe."""
    port = free_port()
    log = tmp / f"{name}-{port}.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PEFM_")}
    environment.update(
        PEFM_DATABASE_URL=database_url,
        LISTEN_ADDRESS=f"127.0.0.1:{port}",
        PYTHONPATH=str(ROOT / "functions" / name),
        **env,
    )
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        cwd=ROOT / "functions" / name,
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health/readiness", timeout=2).status_code == 200:
                return Running(url, process, log)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} not ready in 60 s: {log.read_text()[-3000:]}")


def stop(running: Running) -> None:
    running.process.terminate()
    try:
        running.process.wait(10)
    except subprocess.TimeoutExpired:
        running.process.kill()


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
