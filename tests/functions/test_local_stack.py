"""The single-machine stack's process handling (``pefm up``): what it refuses before starting
anything, and the revisions it watches. Real processes and a real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import typer

from pefm.cli.stack import LOCK, run_stack
from pefm.local.runtime import LocalRuntime, record_revision, serve_command, spawn
from tests.functions.conftest import ROOT


def test_a_port_another_process_holds_is_refused_before_anything_starts(tmp_path):
    """An answer from whatever held the port passed for the new process's readiness: the rollout
    API of `pefm up --port 8040` landed on the router's port + 10 and looked started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "ingest.log"
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            spawn(
                serve_command(ROOT / "functions" / "ingest"),
                cwd=ROOT / "functions" / "ingest",
                env={},
                log=log,
                ready_path="/health/liveness",
                name="ingest",
                port=port,
            )
    assert not log.exists()  # nothing was started


def test_a_revision_another_process_started_is_watched_too(db, schema_url, tmp_path):
    """Retraining's revisions (the serving one, once promoted) are started by `pefm retrain`,
    which exits: one that died went unnoticed, and the router answered 502 for good."""
    revision = "pefm-inference-elsewhere"
    replica = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], env={**os.environ, "K_REVISION": revision}
    )
    runtime = LocalRuntime(schema_url, tmp_path)
    try:
        with db.connection() as conn:
            record_revision(conn, "inference", revision, ["http://127.0.0.1:9"], pids=[replica.pid])
            record_revision(conn, "inference", "pefm-inference-registered", ["http://127.0.0.1:9"])  # no pid
        assert runtime.exited() == []
        replica.kill()
        replica.wait()
        assert runtime.exited() == [f"{revision} (pid {replica.pid})"]
        with db.connection() as conn:  # retired (forgotten) meanwhile: it stopped as asked
            conn.execute("DELETE FROM local_revisions WHERE revision = %s", (revision,))
        assert runtime.exited() == []
    finally:
        replica.kill()
        replica.wait()
        runtime.stop_all()  # its watching connection


def test_a_second_stack_on_the_database_exits_before_it_starts_anything(db):
    """A second `pefm up` took over the traffic and, stopping on its clashing ports, retired every
    recorded revision, the first stack's included."""
    with db.advisory_lock(LOCK, wait=False) as (held, _):
        assert held
        with pytest.raises(typer.Exit) as exit_:
            run_stack(db, lambda _: pytest.fail("a serving version was asked for"), port=9)
    assert exit_.value.exit_code == 1
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM local_traffic").fetchone()[0] == 0


def test_a_port_a_stopped_server_left_in_time_wait_is_free():
    """The connections a stopped server closed first stay in TIME_WAIT on its port for a minute:
    a plain bind refused the port, and a restarted `pefm up` said it was in use."""
    from pefm.local.runtime import port_free

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: its side goes to TIME_WAIT
            client.recv(1)
        assert not port_free(port)  # still listening
    assert port_free(port)
