"""The embedded default database stops when its last holder exits, even after a holder was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

HOLD = """
import sys, time
from pathlib import Path
from pefm.storage.embedded import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1])).start()
print("started", flush=True)
sys.stdin.read()  # hold the server until the test closes stdin (or kills this process)
"""


def _holder(pgdata: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(pgdata)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    return proc


def _postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def _kill(*holders: subprocess.Popen, server: int) -> None:
    """Whatever a failed test left running."""
    for proc in holders:
        if proc.poll() is None:
            proc.kill()
    if psutil.pid_exists(server):
        psutil.Process(server).kill()


def test_the_server_stops_with_its_last_holder_though_another_was_killed(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    first = _holder(pgdata)
    killed = _holder(pgdata)
    server = _postmaster(pgdata)
    try:
        assert sorted(json.loads((pgdata / ".handle_pids.json").read_text())) == sorted([first.pid, killed.pid])
        os.kill(killed.pid, signal.SIGKILL)  # no atexit: it never lets go of the server
        killed.wait()
        assert psutil.pid_exists(server), "the server must outlive a killed holder while another holds it"

        first.stdin.close()  # the last live holder exits cleanly
        assert first.wait(timeout=30) == 0
        assert _gone(server, within=15), "the embedded PostgreSQL outlived its last holder"
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    finally:
        _kill(first, killed, server=server)


def test_a_new_holder_forgets_the_killed_ones(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    killed = _holder(pgdata)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    server = _postmaster(pgdata)  # left running: nobody let go of it
    later = _holder(pgdata)  # joins the running server
    try:
        assert _postmaster(pgdata) == server
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == [later.pid]
        later.stdin.close()
        assert later.wait(timeout=30) == 0
        assert _gone(server, within=15)
    finally:
        _kill(killed, later, server=server)
