"""The MLflow mirror of the registry against a real ``mlflow server`` (sqlite backend, loopback,
from its own venv: ``make`` builds .venv-mlflow; PEFM's venv has the client only): runs with the
backtest's metrics and the signed artifact, registered model versions, and aliases that follow
promotions and rollbacks, synced by hand and by the mirror that listens to the registry."""

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote, settle_rollout
from pefm.forecasting.training import train
from pefm.local.runtime import free_port
from pefm.storage.model_versions import set_gate_report
from pefm.tracking import MODEL, Mirror, run_link, sync

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
    assert "median/rmse/h1" in run.data.metrics
    artifact = Path(client.download_artifacts(run.info.run_id, "model/artifact.pkl", str(tmp_path)))
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == first.artifact_sha256
    # the dashboard's link to the run (MLflow's REST API, no MLflow client)
    link = run_link(mlflow_uri, "http://mlflow.example:5000", first.id)
    assert link.startswith("http://mlflow.example:5000/#/experiments/") and link.endswith(f"/runs/{run.info.run_id}")
    assert run_link(mlflow_uri, None, "no-such-version") is None

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
