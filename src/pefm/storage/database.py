"""Connections: resolve the database URL (external or embedded) and hand out pooled connections."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from typing import Literal

import psycopg
from psycopg_pool import ConnectionPool

from pefm.config import Settings, get_settings
from pefm.storage.embedded import EmbeddedPostgres
from pefm.storage.migrate import migrate as apply_migrations
from pefm.storage.migrate import require_migrated

log = logging.getLogger(__name__)
RECONNECT_WINDOW = 2.0
"""Seconds one reconnection attempt of the pool keeps retrying (immediately, then about once a
second) before it gives up; psycopg_pool's own default, 5 minutes with a doubling delay, leaves
a restarted database unused for up to half a minute."""


class LockBusy(RuntimeError):
    """An advisory lock was not free within the lock timeout."""


class Database:
    """A connection pool on one PostgreSQL database, plus the embedded server if it started one."""

    def __init__(
        self, url: str, *, max_size: int = 10, embedded: EmbeddedPostgres | None = None, timeout: float = 30.0
    ):
        self.url = url
        self.embedded = embedded
        self._sweeping = threading.Lock()
        # check: a connection broken by a database restart is replaced, not handed out
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=True,
            name="pefm",
            timeout=timeout,
            configure=_configure,
            check=self._check,
            reconnect_timeout=RECONNECT_WINDOW,
            reconnect_failed=self._reconnect_failed,
            kwargs={"connect_timeout": max(2, int(timeout))},
        )

    def _check(self, conn: psycopg.Connection) -> None:
        """The pool's check before it hands a connection out. One broken connection means the
        database went away: every connection idle since then is broken too, so all of them are
        checked (and replaced) at once, in the background, instead of one per step of the pool's
        1-2-4 s backoff, which outlasts a request's wait for a connection."""
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            self._sweep()
            raise

    def _reconnect_failed(self, pool: ConnectionPool) -> None:
        """A reconnection attempt gave up (RECONNECT_WINDOW): start another at once if a request
        waits for a connection; otherwise the next request starts one."""
        if pool.get_stats().get("requests_waiting"):
            self._sweep()

    def _sweep(self) -> None:
        if not self._sweeping.acquire(blocking=False):
            return  # one is under way

        def run() -> None:
            try:
                self.pool.check()  # also grows the pool when it has no connection
            except Exception as exc:  # the pool is closing, or the database is still away
                log.info("pool check failed: %s", exc)
            finally:
                self._sweeping.release()

        threading.Thread(target=run, name="pefm-pool-check", daemon=True).start()

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
                    # at least 1 ms: 0 would wait for ever
                    conn.execute(f"SET lock_timeout = '{max(1, math.ceil(timeout * 1000))}ms'")
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

    def lock_held(self, name: str) -> bool:
        """Whether a session holds the advisory lock ``name`` (as ``advisory_lock`` takes it), read
        from ``pg_locks`` without taking it: a probe that took it, even for an instant, would make
        a process trying it then stand aside."""
        with self.connection() as conn:
            return conn.execute(
                """SELECT EXISTS (
                       SELECT 1 FROM pg_locks
                       WHERE locktype = 'advisory' AND objsubid = 1 AND granted
                         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND (classid::int8 << 32 | objid::int8) = hashtextextended(%s, 0)
                   )""",
                (name,),
            ).fetchone()[0]

    def close(self) -> None:
        """Close the pool and release the embedded server, if any."""
        self.pool.close()
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def statements_alone(conn: psycopg.Connection) -> Iterator[None]:
    """Each statement on ``conn`` a transaction of its own meanwhile (autocommit), what it held
    before committed first: a reader that computes for minutes between its reads (training, a
    backtest) keeps no transaction open, which would hold its tables' locks (a migration, and
    every query behind it, would wait for it; TimescaleDB's chunk jobs too) and meet a server's
    ``idle_in_transaction_session_timeout``. Reads by vintage need no snapshot of their own."""
    if conn.autocommit:
        yield
        return
    conn.commit()
    conn.autocommit = True
    try:
        yield
    finally:
        if not conn.closed:
            conn.autocommit = False


def _configure(conn: psycopg.Connection) -> None:
    """Every session speaks UTC, so timestamps never depend on the server's or client's zone."""
    conn.execute("SET TimeZone TO 'UTC'")
    conn.commit()


def open_database(
    settings: Settings | None = None,
    *,
    schema: Literal["migrate", "current", "unchecked"] = "current",
    embedded_ok: bool = True,
    pool_timeout: float = 30.0,
) -> Database:
    """Open the configured database (embedded when no URL is set and ``embedded_ok``). ``schema``:
    ``migrate`` applies pending migrations and the roles' grants (the migrator's part); ``current``
    raises MigrationError unless they are applied (everyone else); ``unchecked`` looks at neither
    and does not wait for a connection: the pool connects in the background (``pefm db status``;
    a function, which checks the schema itself once its modules are loaded). ``pool_timeout``
    bounds the wait for a connection."""
    settings = settings or get_settings()
    embedded = None
    url = settings.database_url
    if url is None and not embedded_ok:
        raise ValueError("PEFM_DATABASE_URL is not set")
    if url is None:
        embedded = EmbeddedPostgres(settings.embedded_pgdata)
        url = embedded.start()
    db = Database(url, max_size=settings.pool_max_size, embedded=embedded, timeout=pool_timeout)
    if schema == "unchecked":
        return db
    try:
        with db.connection() as conn:
            if schema == "migrate":
                apply_migrations(conn, settings.role_passwords)
            else:
                require_migrated(conn)
    except BaseException:
        db.close()
        raise
    return db
