"""The MLflow mirror of the registry against a real ``mlflow server`` (sqlite backend, loopback,
from its own venv: ``make`` builds .venv-mlflow; PEFM's venv has the client only): runs with the
backtest's metrics and the signed artifact, registered model versions, and aliases that follow
promotions and rollbacks, synced by hand and by the mirror that listens to the registry."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote, settle_rollout
from pefm.forecasting.training import train
from pefm.local.runtime import free_port
from pefm.storage import model_versions
from pefm.storage.model_versions import set_backtest, set_gate_report
from pefm.tracking import (
    HTTP_DEFAULTS,
    MODEL,
    PROBE_TIMEOUT,
    Mirror,
    TrackingUnavailable,
    _metrics,
    log_backtest,
    run_link,
    sync,
)

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("PEFM_MLFLOW_SERVER") or ROOT / ".venv-mlflow" / "bin" / "mlflow").absolute()
SERIES = ["realgdp", "unemp"]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    if not SERVER.exists():
        pytest.fail(f"the MLflow server is missing at {SERVER}: build it with `make .venv-mlflow/.installed`")
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [str(SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "art")]
    log = (folder / "server.log").open("ab")
    process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    process.terminate()
    process.wait(30)


def alias(client: MlflowClient, name: str) -> str | None:
    """The PEFM version an alias points at (None: no alias)."""
    try:
        return client.get_model_version_by_alias(MODEL, name).tags["pefm.version_id"]
    except MlflowException:
        return None


def start_rollout(conn, candidate: str) -> int:
    return conn.execute(
        """INSERT INTO rollouts (service, blue_revision, green_revision, green_model_version, spec, phase, step, weight)
           VALUES ('inference', 'blue', 'green', %s, '{}', 'Progressing', 1, 10) RETURNING id""",
        (candidate,),
    ).fetchone()[0]


def end_rollout(conn, rollout: int, candidate: str, previous: str, succeeded: bool) -> None:
    with conn.transaction():
        phase = "Succeeded" if succeeded else "RolledBack"
        conn.execute("UPDATE rollouts SET phase = %s WHERE id = %s", (phase, rollout))
        settle_rollout(conn, candidate=candidate, previous=previous, succeeded=succeeded, reason="test")


def test_runs_versions_and_aliases_follow_promotions_and_rollbacks(conn, schema_url, mlflow_uri, tmp_path):
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    load_bundled(conn, bundled(SERIES))
    first, _ = train(conn, "ar", SERIES, spec=BacktestSpec(h=2, windows=4))
    conn.commit()
    report = sync(conn, mlflow_uri)
    assert report.runs_created == [first.id] and report.versions_created == [first.id]
    assert (report.champion, report.challenger) == (None, None)
    [run] = client.search_runs([client.get_experiment_by_name("pefm").experiment_id])
    assert run.data.tags["pefm.version_id"] == first.id and run.data.params["family"] == "ar"
    assert run.data.metrics["realgdp/rmse/h2"] == pytest.approx(first.backtest["metrics"]["realgdp"]["rmse@h2"])
    assert run.data.metrics["realgdp/rmse/all"] == pytest.approx(first.backtest["metrics"]["realgdp"]["rmse"])
    assert "_median/rmse/h1" in run.data.metrics and "_median/rmse/all" in run.data.metrics
    artifact = Path(client.download_artifacts(run.info.run_id, "model/artifact.pkl", str(tmp_path)))
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == first.artifact_sha256
    # the dashboard's link to the run (MLflow's REST API, no MLflow client)
    link = run_link(mlflow_uri, "http://mlflow.example:5000", first.id)
    assert link.startswith("http://mlflow.example:5000/#/experiments/") and link.endswith(f"/runs/{run.info.run_id}")
    assert run_link(mlflow_uri, None, "no-such-version") is None
    # a tracking URI with credentials (the server here takes any): they stay out of the browser's link
    with_password = mlflow_uri.replace("://", "://mirror:s3cret@", 1)
    link = run_link(with_password, None, first.id)
    assert link.startswith(mlflow_uri.rstrip("/") + "/#/experiments/") and "s3cret" not in link
    assert "s3cret" not in repr(Settings(mlflow_tracking_uri=with_password))

    # a gate report made later reaches the same run
    set_gate_report(conn, first.id, {"passed": True, "checks": [], "failures": []})
    promote(conn, first.id)
    conn.commit()
    assert sync(conn, mlflow_uri).runs_created == []  # nothing twice
    gated = client.get_run(run.info.run_id)
    assert gated.data.metrics["gate/passed"] == 1.0
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model", "backtest.json", "gate_report.json"}
    assert alias(client, "champion") == first.id

    # a candidate under rollout is the challenger; rolled back, it is rejected and the champion stays
    second, _ = train(conn, "naive", SERIES, spec=None)
    rollout = start_rollout(conn, second.id)
    conn.commit()
    sync(conn, mlflow_uri)
    assert (alias(client, "champion"), alias(client, "challenger")) == (first.id, second.id)
    end_rollout(conn, rollout, second.id, first.id, succeeded=False)
    sync(conn, mlflow_uri)
    assert (alias(client, "champion"), alias(client, "challenger")) == (first.id, None)
    [mv] = client.search_model_versions(f"name = '{MODEL}' and tag.`pefm.version_id` = '{second.id}'")
    assert mv.tags["pefm.status"] == "rejected"

    # the mirror, listening to the registry, moves champion on a promoting rollout by itself
    stopping = threading.Event()
    mirror = Mirror(schema_url, mlflow_uri, stopping, settle=0.2)
    mirror.start()
    try:
        assert mirror.synced.wait(30)
        third, _ = train(conn, "naive", ["unemp"], spec=None)
        rollout = start_rollout(conn, third.id)
        conn.commit()
        deadline = time.monotonic() + 30
        while alias(client, "challenger") != third.id and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alias(client, "challenger") == third.id
        end_rollout(conn, rollout, third.id, first.id, succeeded=True)
        while alias(client, "champion") != third.id and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (alias(client, "champion"), alias(client, "challenger")) == (third.id, None)
    finally:
        stopping.set()
    statuses = {
        mv.tags["pefm.version_id"]: mv.tags["pefm.status"] for mv in client.search_model_versions(f"name = '{MODEL}'")
    }
    assert statuses == {first.id: "retired", second.id: "rejected", third.id: "serving"}


def test_a_run_a_failed_sync_left_unfinished_is_logged_again(conn, mlflow_uri, tmp_path):
    """A sync that failed after creating a version's run (its artifacts, say) left it RUNNING and
    empty; the next sync took it for mirrored and registered a model version on it, for good."""
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    load_bundled(conn, bundled(["unemp"]))
    version, _ = train(conn, "naive", ["unemp"], spec=None)
    conn.commit()
    experiment = client.get_experiment_by_name("pefm")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("pefm")
    partial = client.create_run(experiment_id, tags={"pefm.version_id": version.id}).info.run_id
    report = sync(conn, mlflow_uri)
    assert version.id in report.runs_created and version.id in report.versions_created
    assert client.get_run(partial).info.lifecycle_stage == "deleted"
    [run] = [
        r
        for r in client.search_runs([experiment_id], filter_string=f"tags.`pefm.version_id` = '{version.id}'")
        if r.info.lifecycle_stage == "active"
    ]
    assert run.info.status == "FINISHED" and run.info.run_id != partial
    artifact = Path(client.download_artifacts(run.info.run_id, "model/artifact.pkl", str(tmp_path)))
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == version.artifact_sha256
    [mirrored] = [
        mv for mv in client.search_model_versions(f"name = '{MODEL}'") if mv.tags.get("pefm.version_id") == version.id
    ]
    assert mirrored.run_id == run.info.run_id
    assert sync(conn, mlflow_uri).runs_created == []  # and once mirrored, it stays


def test_mirrors_syncing_at_once_make_one_run_and_one_model_version(db, mlflow_uri):
    """Two processes' mirrors syncing together: each would log the new version's run (and the one
    finding the other's run still unfinished would take it for a failed sync's and delete it)."""
    with db.connection() as conn:
        load_bundled(conn, bundled(["infl"]))
        version, _ = train(conn, "naive", ["infl"], spec=None)
    barrier, reports = threading.Barrier(2), []

    def mirror() -> None:
        with db.connection() as conn:
            barrier.wait()
            reports.append(sync(conn, mlflow_uri))

    threads = [threading.Thread(target=mirror) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(version.id in r.runs_created for r in reports) == [False, True]
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    experiment_id = client.get_experiment_by_name("pefm").experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`pefm.version_id` = '{version.id}'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    versions = [
        mv for mv in client.search_model_versions(f"name = '{MODEL}'") if mv.tags.get("pefm.version_id") == version.id
    ]
    assert len(versions) == 1


def test_a_backtest_that_registers_nothing_is_a_run_of_its_own(cli_env, db, mlflow_uri):
    with db.connection() as c:
        load_bundled(c, bundled(["unemp"]))
    env = {**cli_env, "PEFM_MLFLOW_TRACKING_URI": mlflow_uri}
    done = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "backtest", "--model", "naive", "--series", "unemp", "--windows", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "logged to MLflow" in done.stdout
    client = MlflowClient(tracking_uri=mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name("pefm-backtests").experiment_id])
    assert run.data.params["family"] == "naive" and run.data.params["spec.windows"] == "4"
    assert "unemp/rmse/h1" in run.data.metrics


def pefm(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``pefm args`` in a process of its own, stopped (``TimeoutExpired``) after ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "pefm.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_mlflow_away_fails_in_seconds_with_one_clear_line(cli_env, db):
    """MLflow's own retries (7, with backoff) made the first call to a server that is away take
    about four minutes: ``pefm tracking sync`` hung (holding the mirror's lock) and then printed
    a traceback, ``pefm backtest`` hung after its scores. The probe of ``/health`` (``PROBE_TIMEOUT``)
    stops both before MLflow's client is asked; only the probe says "unreachable"."""
    with db.connection() as c:
        load_bundled(c, bundled(["unemp"]))
        train(c, "naive", ["unemp"], spec=None)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**cli_env, "PEFM_MLFLOW_TRACKING_URI": closed.replace("://", "://mirror:s3cret@")}  # never shown
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        env.pop(name, None)
    done = pefm(env, "tracking", "sync", timeout=120)  # MLflow's retries: about 246 s, then TimeoutExpired
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: MLflow at " + closed) and "unreachable" in line and "s3cret" not in line
    # the sync failed before taking the mirrors' lock: another one is not kept waiting
    with db.connection() as c:
        began = time.monotonic()
        with pytest.raises(TrackingUnavailable, match="unreachable"):
            sync(c, closed)
        assert time.monotonic() - began < PROBE_TIMEOUT + 5  # the probe's bound (a refused connection: at once)
        assert c.execute("SELECT pg_try_advisory_lock(hashtextextended('pefm.tracking.sync', 0))").fetchone() == (True,)
        c.execute("SELECT pg_advisory_unlock(hashtextextended('pefm.tracking.sync', 0))")
    # the backtest itself takes seconds; MLflow's retries took 246 s more, then TimeoutExpired
    done = pefm(env, "backtest", "--model", "naive", "--series", "unemp", "--windows", "4", timeout=180)
    assert done.returncode == 0, done.stderr
    assert "not logged to MLflow: MLflow at " + closed in done.stderr and "unreachable" in done.stderr
    assert "s3cret" not in done.stderr
    began = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        log_backtest(closed, "naive", {}, ["unemp"], {"spec": {}, "metrics": {}})
    assert time.monotonic() - began < PROBE_TIMEOUT + 5  # the probe's bound (a refused connection: at once)


def test_a_backtest_whose_logging_fails_past_the_probe_never_shows_the_password(cli_env, db):
    """Past the probe, MLflow's own error quotes the URI it was given, password and all, and
    ``pefm backtest`` printed it. A stand-in server, since a real MLflow server cannot be made to
    fail between the probe and the first call: ``/health`` answers 200, and every other request
    has its connection closed unanswered."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class UpThenGone(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.rstrip("/") != "/health":
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    with db.connection() as c:
        load_bundled(c, bundled(["unemp"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), UpThenGone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://mirror:s3cret@127.0.0.1:{server.server_port}"
        env = {**cli_env, "PEFM_MLFLOW_TRACKING_URI": uri}
        done = pefm(env, "backtest", "--model", "naive", "--series", "unemp", "--windows", "2", timeout=180)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert "not logged to MLflow" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "s3cret" not in done.stderr and f"http://127.0.0.1:{server.server_port}" in done.stderr, done.stderr


def test_without_mlflow_installed_tracking_sync_names_the_extra(cli_env, db):
    env = {**cli_env, "PEFM_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    hidden = "import runpy, sys; sys.modules['mlflow'] = None; runpy.run_module('pefm.cli', run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", hidden, "tracking", "sync"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the MLflow client is not installed") and "`tracking` extra" in line


def test_sync_every_must_be_a_second_or_more(cli_env, db):
    """``--every 0`` made the mirror sync in a tight loop."""
    env = {**cli_env, "PEFM_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    for every in ("0", "-5", "0.5"):
        done = pefm(env, "tracking", "sync", "--follow", "--every", every, timeout=60)
        assert done.returncode == 2 and "--every" in done.stderr, done.stderr


def test_a_backtest_stored_later_is_announced(conn, schema_url):
    """Migration 0013 announced status and gate report changes only: ``pefm backtest --version``
    reached the mirror at its periodic sync, five minutes later."""
    load_bundled(conn, bundled(["unemp"]))
    version, _ = train(conn, "naive", ["unemp"], spec=None)
    conn.commit()
    with psycopg.connect(schema_url, autocommit=True) as listener:
        listener.execute("LISTEN pefm_registry")
        for _ in listener.notifies(timeout=0.5):  # what training announced
            pass
        set_backtest(conn, version.id, {"spec": {"h": 1}, "metrics": {"unemp": {"rmse": 1.0, "rmse@h1": 1.0}}})
        conn.commit()
        heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == ["model_versions"]


def test_an_error_message_never_carries_the_tracking_password():
    """MLflow's and httpx's messages may quote the URL they were given; every message PEFM prints
    or logs of them goes through ``scrubbed``."""
    from pefm.tracking import scrubbed

    uri = "http://mirror:p%40ss@mlflow.internal:5000"
    text = f"API request to {uri}/api/2.0/mlflow/runs/create failed (credentials p@ss refused)"
    said = scrubbed(text, uri)
    assert "p@ss" not in said and "p%40ss" not in said and "mirror:" not in said
    assert said.startswith("API request to http://mlflow.internal:5000/api/2.0/") and "credentials *** refused" in said
    assert scrubbed("nothing secret", "http://mlflow.internal:5000") == "nothing secret"


def test_metric_keys_never_prefix_one_another():
    """A pooled ``unemp/rmse`` was the prefix of ``unemp/rmse/h1`` (a file store keeps the first
    as a file, so the second failed, and every sync with it), and a series named ``median``
    collided with the medians."""
    backtest = {
        "metrics": {
            "unemp": {"rmse": 2.0, "rmse@h1": 1.0, "rmse@h2": 3.0, "coverage-80": 0.8},
            "median": {"rmse": 4.0, "rmse@h1": 5.0, "rmse@h2": 6.0, "coverage-80": 0.9},
        }
    }
    keys = _metrics(backtest)
    assert keys["unemp/rmse/all"] == 2.0 and keys["unemp/rmse/h1"] == 1.0 and keys["median/rmse/h2"] == 6.0
    assert keys["_median/rmse/all"] == 3.0 and keys["_median/coverage-80/all"] == pytest.approx(0.85)
    assert len(keys) == 12  # 4 per series and 4 medians: none lost to a collision
    assert not [(a, b) for a in keys for b in keys if b.startswith(a + "/")]


def test_a_file_store_mirrors_and_only_logging_reads_the_forecasts(conn, tmp_path, monkeypatch):
    """On MLflow's file store every sync failed (``Not a directory: .../metrics/unemp/rmse/h1``); a
    sync read every version's backtest with its forecasts from every origin (a megabyte for the
    bundle) to hash it, each time, where only a run that logs them needs them."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    reads = []
    listed = model_versions.list_versions

    def spying(*args, **kwargs):
        reads.append(kwargs.get("forecasts", True))
        return listed(*args, **kwargs)

    monkeypatch.setattr(model_versions, "list_versions", spying)
    load_bundled(conn, bundled(SERIES))
    version, _ = train(conn, "naive", SERIES, spec=BacktestSpec(h=2, windows=3))
    conn.commit()
    assert sync(conn, uri).runs_created == [version.id]
    assert reads == [False]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("pefm").experiment_id])
    metrics = run.data.metrics
    assert metrics["unemp/rmse/all"] == pytest.approx(version.backtest["metrics"]["unemp"]["rmse"])
    assert metrics["unemp/rmse/h1"] == pytest.approx(version.backtest["metrics"]["unemp"]["rmse@h1"])
    assert "_median/rmse/h2" in metrics
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "backtest.json", str(tmp_path))).read_text())
    assert logged["forecasts"] == json.loads(json.dumps(version.backtest["forecasts"], default=str))
    # a backtest stored later is logged to the same run; an unchanged one is not logged again
    stored = {**version.backtest, "metrics": {"unemp": {"rmse": 9.0, "rmse@h1": 9.0}}}
    set_backtest(conn, version.id, stored)
    conn.commit()
    assert sync(conn, uri).runs_created == []
    assert client.get_run(run.info.run_id).data.metrics["unemp/rmse/all"] == 9.0
    tag = client.get_run(run.info.run_id).data.tags["pefm.record"]
    sync(conn, uri)
    assert client.get_run(run.info.run_id).data.tags["pefm.record"] == tag
    assert len(client.get_metric_history(run.info.run_id, "unemp/rmse/all")) == 2


def test_mlflow_going_away_part_way_through_fails_in_seconds(conn, monkeypatch):
    """A server that answers the probe and then is gone: MLflow's retries, bounded by PEFM where
    the environment leaves them unset, end the sync in seconds, and its lock is let go."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "-")  # recorded, so that deleting it is undone afterwards
        monkeypatch.delenv(name)
    # A stand-in for the probe alone (check_reachable's httpx.get; MLflow's client uses requests):
    # it answers 200 as a server that is up does, and nothing listens at the port, so every call of
    # MLflow's after it fails as on a server gone between the probe and the sync. A real server
    # cannot be stopped at that moment from here: the sync runs the probe and its first call at once.
    monkeypatch.setattr(httpx, "get", lambda url, **_: httpx.Response(200, text="OK"))
    began = time.monotonic()
    with pytest.raises(MlflowException):
        sync(conn, f"http://127.0.0.1:{free_port()}")
    # bounded by PEFM's defaults (2 retries), not MLflow's (7 with backoff: about four minutes);
    # the bound leaves a loaded machine a wide margin over the seconds the 2 retries take
    assert {name: os.environ[name] for name in HTTP_DEFAULTS} == HTTP_DEFAULTS
    assert time.monotonic() - began < 60
    assert conn.execute("SELECT pg_try_advisory_lock(hashtextextended('pefm.tracking.sync', 0))").fetchone() == (True,)
    conn.execute("SELECT pg_advisory_unlock(hashtextextended('pefm.tracking.sync', 0))")
