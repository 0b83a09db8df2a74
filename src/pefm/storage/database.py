"""Connections: resolve the database URL (external or embedded) and hand out pooled connections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg_pool import ConnectionPool

from pefm.config import Settings, get_settings
from pefm.storage.embedded import EmbeddedPostgres
from pefm.storage.migrate import migrate as apply_migrations


class LockBusy(RuntimeError):
    """An advisory lock was not free within the lock timeout."""


class Database:
    """A connection pool on one PostgreSQL database, plus the embedded server if it started one."""

    def __init__(
        self, url: str, *, max_size: int = 10, embedded: EmbeddedPostgres | None = None, timeout: float = 30.0
    ):
        self.url = url
        self.embedded = embedded
        # check: a connection broken by a database restart is replaced, not handed out
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=True,
            name="pefm",
            timeout=timeout,
            configure=_configure,
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": max(2, int(timeout))},
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; committed on normal exit, rolled back on an exception."""
        with self.pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def advisory_lock(
        self, name: str, *, wait: bool, timeout: float = 30.0
    ) -> Iterator[tuple[bool, psycopg.Connection]]:
        """A session advisory lock on ``name``, on a pooled connection of its own that stays in
        autocommit mode while held: yields (held, connection). ``wait``: block up to ``timeout``
        seconds (LockBusy after); else only try (held is False when another session has it)."""
        with self.connection() as conn:
            conn.autocommit = True
            try:
                if wait:
                    conn.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
                    try:
                        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (name,))
                    except psycopg.errors.LockNotAvailable:
                        raise LockBusy(f"{name}: busy for over {timeout:g} s; try again") from None
                    finally:
                        conn.execute("RESET lock_timeout")
                    held = True
                else:
                    held = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)).fetchone()[0]
                try:
                    yield held, conn
                finally:
                    if held:
                        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))
            finally:
                conn.autocommit = False

    def close(self) -> None:
        """Close the pool and release the embedded server, if any."""
        self.pool.close()
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _configure(conn: psycopg.Connection) -> None:
    """Every session speaks UTC, so timestamps never depend on the server's or client's zone."""
    conn.execute("SET TimeZone TO 'UTC'")
    conn.commit()


def open_database(
    settings: Settings | None = None, *, migrate: bool = True, embedded_ok: bool = True, pool_timeout: float = 30.0
) -> Database:
    """Open the configured database (embedded when no URL is set and ``embedded_ok``), migrated
    unless told not to; ``pool_timeout`` bounds the wait for a connection."""
    settings = settings or get_settings()
    embedded = None
    url = settings.database_url
    if url is None and not embedded_ok:
        raise ValueError("PEFM_DATABASE_URL is not set")
    if url is None:
        embedded = EmbeddedPostgres(settings.embedded_pgdata)
        url = embedded.start()
    db = Database(url, max_size=settings.pool_max_size, embedded=embedded, timeout=pool_timeout)
    if migrate:
        try:
            with db.connection() as conn:
                apply_migrations(conn)
        except BaseException:
            db.close()
            raise
    return db
