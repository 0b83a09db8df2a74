"""How long what `pefm` starts lives: a `pefm up` killed outright takes its stack with it, a command
stopped by SIGTERM or SIGHUP lets go of the embedded PostgreSQL as Ctrl-C does, and a stack that
could not serve is refused before it starts. Real processes on the embedded database."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pefm.local.runtime import STACK, port_free, process_identity
from pefm.storage.embedded import EmbeddedPostgres
from tests.conftest import port_below_ephemeral

PEFM = [sys.executable, "-m", "pefm.cli"]


def embedded_env(home: Path) -> dict[str, str]:
    """A user's environment with no PEFM setting but ``PEFM_HOME``: the embedded database there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEFM_", "MLFLOW_"))}
    return {**env, "PEFM_HOME": str(home), "COLUMNS": "200"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PEFM, *args], env=env, capture_output=True, text=True, timeout=300)


def server_running(home: Path) -> bool:
    return (home / "postgres" / "postmaster.pid").exists()


def stop_server(home: Path) -> None:
    """What a test left of the embedded server (the old behaviour's), stopped: joined and let go."""
    if server_running(home):
        server = EmbeddedPostgres(home / "postgres")
        server.start()
        server.stop()


def members(pid: int) -> list[int]:
    """The live processes of the stack of the `pefm up` that ran as ``pid`` (``STACK`` in their
    environment names it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            pairs = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(p.startswith(f"{STACK}={pid}:".encode()) for p in pairs) and process_identity(int(environ.parent.name)):
            found.append(int(environ.parent.name))
    return found


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory) -> Path:
    """A PEFM_HOME whose embedded database holds realgdp and a small model that serves: `pefm up`
    there starts its processes without minutes of training."""
    home = tmp_path_factory.mktemp("stack") / "home"
    env = embedded_env(home)
    loaded = run(env, "data", "load", "realgdp")
    assert loaded.returncode == 0, loaded.stderr
    trained = run(env, "train", "--model", "mean", "--series", "realgdp", "--windows", "0")
    assert trained.returncode == 0, trained.stderr
    version = re.search(r"registered (mean-\S+)", trained.stdout).group(1)
    promoted = run(env, "models", "promote", version)
    assert promoted.returncode == 0, promoted.stderr
    assert not server_running(home)
    return home


def test_redis_without_a_cache_key_is_refused_before_the_stack_starts(trained_home):
    """It had started the monitor and ingest, then waited a minute for an inference replica that
    refused the setting, and printed its JSON traceback."""
    env = {**embedded_env(trained_home), "PEFM_REDIS_URL": "redis://127.0.0.1:9/0"}  # never connected to
    port = port_below_ephemeral(10)
    started = time.monotonic()
    done = run(env, "up", "--port", str(port), "--dashboard-port", str(port_below_ephemeral()))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: PEFM_REDIS_URL is set without PEFM_CACHE_KEY, the key its entries are tagged with"
    ], done.stderr
    assert time.monotonic() - started < 45
    assert not (trained_home / "logs" / "pefm-monitor-local.log").exists()  # nothing was started
    assert not server_running(trained_home)


def as_from_a_terminal() -> None:
    """A child's SIGHUP at its default, as a command started from a terminal has it: a run under
    ``nohup`` (CI's, say) passes SIG_IGN on, which `pefm` keeps, rightly."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_stack(home: Path, **env: str) -> tuple[subprocess.Popen, tuple[int, int, int]]:
    """`pefm up` on ``home``, once it has printed its tour; the process and its three ports (the
    router's, the rollout API's, the dashboard's)."""
    port, dashboard_port = port_below_ephemeral(10), port_below_ephemeral()
    process = subprocess.Popen(
        [*PEFM, "up", "--port", str(port), "--dashboard-port", str(dashboard_port)],
        env={**embedded_env(home), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines.append(process.stdout.readline())
        if lines[-1].startswith("tour:") or process.poll() is not None:
            break
    if not lines[-1].startswith("tour:"):
        process.kill()
        raise AssertionError("".join(lines) + process.communicate(timeout=30)[0])
    return process, (port, port + 10, dashboard_port)


def environment_listening_on(port: int) -> dict[str, str]:
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            pairs = dict(item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item)
            if pairs.get("LISTEN_ADDRESS") == f"127.0.0.1:{port}":
                return pairs
    raise AssertionError(f"no process listens on {port}")


def test_sighup_stops_the_stack_as_ctrl_c_does_and_only_the_api_and_dashboard_get_mlflows_variables(trained_home):
    """A closed terminal had left the stack running; MLflow's credentials had reached every process."""
    mlflow = {"PEFM_MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_TRACKING_PASSWORD": "mlflow-password"}
    process, (port, api_port, dashboard_port) = start_stack(trained_home, **mlflow)
    try:
        started = members(process.pid)
        assert len(started) >= 6, started
        listening = [port, api_port, dashboard_port]
        for pid in started:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            address = next((e[len(b"LISTEN_ADDRESS=") :] for e in environ if e.startswith(b"LISTEN_ADDRESS=")), b"")
            given = b"MLFLOW_TRACKING_PASSWORD=mlflow-password" in environ
            assert given == (address in (f"127.0.0.1:{api_port}".encode(), f"127.0.0.1:{dashboard_port}".encode()))
        assert environment_listening_on(api_port)["MLFLOW_TRACKING_PASSWORD"] == "mlflow-password"
        process.send_signal(signal.SIGHUP)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "local stack stopped" in rest and "stopped unexpectedly" not in rest
        assert members(process.pid) == [] and all(port_free(p) for p in listening)
        assert not server_running(trained_home)
    finally:
        process.kill()
        process.wait(10)
        for pid in members(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_server(trained_home)


def test_a_killed_pefm_up_takes_every_process_it_started_with_it(trained_home):
    """SIGKILL (or the OOM killer) had left the revisions, the router, the rollout API running its
    controller, the dashboard and the embedded PostgreSQL running, beside the next `pefm up`."""
    process, ports = start_stack(trained_home)
    try:
        started = members(process.pid)
        # the monitor, ingest, inference's replica(s), the router, the rollout API, the dashboard
        assert len(started) >= 6, started
        assert not any(port_free(p) for p in ports)
        process.kill()
        process.wait(10)
        deadline = time.monotonic() + 60
        while (members(process.pid) or server_running(trained_home)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert members(process.pid) == []
        assert all(port_free(p) for p in ports)
        assert not server_running(trained_home)  # let go on its behalf, once the rest had ended
    finally:
        process.kill()
        process.wait(10)
        for pid in members(process.pid):  # the old behaviour's orphans
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_server(trained_home)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_command_stopped_by_sigterm_or_sighup_stops_the_embedded_database(tmp_path, signum):
    """Python's default for either ended the process at once, without its `with` blocks and atexit
    handlers: the embedded server it had started ran on. Here `pefm up --no-serve` on a fresh home,
    stopped while it loads the bundled data (the training would follow)."""
    home = tmp_path / "home"
    process = subprocess.Popen(
        [*PEFM, "up", "--no-serve"],
        env=embedded_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        lines = []
        while not (line := process.stdout.readline()).startswith("database: embedded PostgreSQL"):
            assert line, "".join(lines)  # it ended first
            lines.append(line)
        assert server_running(home)
        process.send_signal(signum)
        rest, _ = process.communicate(timeout=60)
        assert not server_running(home), rest
        assert process.returncode == 128 + signum, rest
    finally:
        process.kill()
        process.wait(10)
        stop_server(home)


def test_the_environment_a_started_process_inherits_has_no_mlflow_variable(monkeypatch):
    """MLflow's own variables are its credentials: they reach the rollout API and the dashboard
    with MLflow's URL, not every process `pefm up` starts. The stack a process belongs to is passed on."""
    from pefm.local.runtime import inherited_environment, mlflow_environment

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "mlflow-password")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlflow-token")
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    monkeypatch.setenv(STACK, "1:2")
    environment = inherited_environment()
    assert not [k for k in environment if k.startswith("MLFLOW_")]
    assert environment[STACK] == "1:2"
    assert mlflow_environment() == {
        "MLFLOW_TRACKING_PASSWORD": "mlflow-password",
        "MLFLOW_TRACKING_TOKEN": "mlflow-token",
        "MLFLOW_TRACKING_INSECURE_TLS": "true",
    }


def test_a_started_process_has_a_process_group_of_its_own(tmp_path):
    """A terminal's Ctrl-C or hang-up goes to its foreground process group: with the functions in
    it, they died outright (the router, the dashboard and func-python take no SIGHUP) instead of
    being stopped in order by `pefm up`."""
    from pefm.local.runtime import free_port, spawn

    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    log = tmp_path / "server.log"
    started = spawn(command, cwd=tmp_path, env={}, log=log, ready_path="/", name="server", port=port)
    try:
        assert os.getpgid(started.process.pid) == started.process.pid != os.getpgid(0)
    finally:
        started.stop()
