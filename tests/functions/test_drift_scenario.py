"""Drift on the real data: a model trained on macrodata up to 1999Q4 serves while the 2000s arrive
quarter by quarter through the ingest function; the 2008 break is flagged; retraining yields a
candidate that is recorded but not deployed when it fails the gates, and a green revision with a
rollout when it passes."""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from pefm.drift.monitor import check, due_for_retraining
from pefm.drift.policy import DriftPolicy
from pefm.drift.retrain import LocalDeployer, retrain
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.runtime import LocalRuntime, record_revision
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.probes import HttpProber
from pefm.rollout.providers import DatabaseProvider
from pefm.rollout.router import TrafficTarget, revision_name, sole
from pefm.rollout.spec import RolloutSpec
from pefm.storage import retrain_events
from pefm.storage.database import Database
from pefm.storage.model_versions import get_version
from pefm.storage.roles import role_url
from tests.conftest import cli_environment, fresh_schema
from tests.functions.conftest import (
    ADMIN_TOKEN,
    TOKEN,
    ingest_quarter,
    replay_quarters,
    replay_start,
    start_function,
    stop,
)

SPEC = BacktestSpec(h=1, windows=20)
# An operator's permissive policy, for the resumption tests: what they test is where a job resumes
LENIENT = Path(__file__).with_name("permissive_gates.toml")
CRISIS = {"realgdp", "realinv", "unemp"}


@pytest.fixture(scope="module")
def replay(server_url, tmp_path_factory):
    with fresh_schema(server_url, "d") as url, Database(url, max_size=4) as db:
        full, serving = replay_start(db, SPEC)
        ingest = start_function(
            "ingest", url, tmp_path_factory.mktemp("drift"), PEFM_INGEST_TOKEN=TOKEN, PEFM_ADMIN_TOKEN=ADMIN_TOKEN
        )
        policy = DriftPolicy.load()
        reports = {}
        for quarter in replay_quarters(full):
            label = ingest_quarter(ingest.url, full, quarter)
            with db.connection() as conn:
                reports[label] = check(conn, policy)
        stop(ingest)
        yield db, url, serving, reports, policy


def test_the_2008_break_is_flagged_and_named(replay):
    _, _, serving, reports, _ = replay
    assert len(reports) == 39  # 2000Q1 .. 2009Q3
    assert all(not reports[q]["drifted_series"] for q in ("2000Q1", "2000Q2", "2000Q3", "2000Q4"))
    crisis = set().union(*(reports[q]["drifted_series"] for q in ("2008Q4", "2009Q1", "2009Q2", "2009Q3")))
    assert crisis >= CRISIS, crisis
    last = reports["2009Q2"]
    assert last["breach"] and last["model_version"] == serving.id
    assert last["tests"] == 32  # 8 series x (value, volatility, one-step forecasts, accuracy)
    gdp = last["series"]["realgdp"]
    assert {f["feature"] for f in gdp["input"]} == {"value", "volatility"}
    assert all(f["method"] == "wasserstein" and 0 < f["p_value"] <= 1 for f in gdp["input"])
    signals = [*gdp["input"], gdp["prediction"], gdp["accuracy"]]
    flagged = [s for s in signals if s["drifted"]]
    assert flagged and all(s["p_value"] <= s["alpha"] for s in flagged)
    assert gdp["accuracy"]["ratio"] > 1.5 and gdp["accuracy"]["method"] == "permutation"


def test_the_report_is_stored_with_the_evidently_snapshot(replay):
    db, _, _, reports, policy = replay
    with db.connection() as conn:
        row = conn.execute(
            "SELECT drifted_series, evidently FROM drift_reports WHERE id = %s", (reports["2009Q2"]["id"],)
        ).fetchone()
        due, why = due_for_retraining(conn, reports["2009Q2"], policy)
    assert set(row[0]) >= CRISIS
    assert row[1]["realgdp"]["metrics"][0]["config"]["method"] == "wasserstein"
    assert due and "for 2 checks" in why


def test_the_monitors_request_is_answered_once_by_retrain_if_requested(replay, tmp_path):
    """The cluster's drift-triggered loop, without the cluster: the monitor function as
    knative/base/monitor.yaml runs it (PEFM_RETRAIN=request) records a request on a breach and
    starts nothing; `pefm retrain --if-requested` (the pefm-retrain-on-drift CronJob's command), as
    the trainer, does nothing and records nothing while no request is pending, answers the request
    (its start says so), and then has nothing to answer again."""
    db, url, _, _, _ = replay
    with db.connection() as conn:  # whatever ran before (in another order) is out of the cool-down
        conn.execute("UPDATE retrain_events SET ts = ts - interval '25 hours'")
    env = {**cli_environment(role_url(url, "trainer"), tmp_path / "home"), "COLUMNS": "200"}
    command = [sys.executable, "-m", "pefm.cli", "retrain", "--if-requested", "--no-deploy"]
    # a job no other test of this module runs, and one the gates fail (the historical mean against the
    # serving AR): a candidate that passed with --no-deploy would leave the request pending
    command += ["--model", "mean", "--windows", "8", "--h", "1"]

    def events() -> list[tuple[str, str]]:
        with db.connection() as conn:
            return conn.execute("SELECT step, reason FROM retrain_events ORDER BY id").fetchall()

    before = events()
    idle = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert idle.returncode == 0 and "retrain: not requested" in idle.stdout, idle.stdout + idle.stderr
    assert events() == before

    monitor = start_function("monitor", url, tmp_path, PEFM_ADMIN_TOKEN=ADMIN_TOKEN, PEFM_RETRAIN="request")
    try:
        with monitor.client() as client:
            checked = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
            again = client.post("/v1/drift/check", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    finally:
        stop(monitor)
    assert checked["breach"] and checked["retrain"]["due"], checked["retrain"]
    assert checked["retrain"]["requested"] and not checked["retrain"]["started"]
    assert again["retrain"]["reason"].startswith("cool-down") and not again["retrain"]["requested"]
    [requested] = events()[len(before) :]
    assert requested[0] == "requested" and checked["retrain"]["reason"] in requested[1]

    answered = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    ended = re.search(r"^retrain [0-9a-f]{12}: gates-failed$", answered.stdout, re.MULTILINE)
    assert ended and answered.returncode == 1, answered.stdout + answered.stderr
    start = [reason for step, reason in events()[len(before) + 1 :] if step == "start"]
    assert len(start) == 1 and "answering the request of" in start[0] and requested[1] in start[0], start
    assert "retraining mean on" in start[0]
    after = events()
    idle = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert idle.returncode == 0 and "retrain: not requested" in idle.stdout, idle.stdout + idle.stderr
    assert events() == after


def test_a_candidate_failing_the_gates_is_recorded_and_not_deployed(replay):
    db, _, serving, _, _ = replay
    outcome = retrain(db, model="mean", spec=SPEC, deployer=LocalDeployer(None), reason="drift in the 2000s")
    # the historical mean against the serving AR on the same 20 windows of the 2000s: far worse
    assert outcome["status"] == "gates-failed" and outcome["failures"]
    with db.connection() as conn:
        status, report = conn.execute(
            "SELECT status, gate_report FROM model_versions WHERE id = %s", (outcome["candidate"],)
        ).fetchone()
        steps = [
            r[0]
            for r in conn.execute("SELECT step FROM retrain_events WHERE run_id = %s ORDER BY id", (outcome["run_id"],))
        ]
    assert status == "candidate" and report["passed"] is False and report["serving"] == serving.id
    assert report["windows"]["serving_backtest"] == "re-run on the candidate's windows"
    assert len(report["windows"]["cutoffs"]) == 20 and report["windows"]["cutoffs"][-1] == "2009-04-01"
    failed = [c for c in report["checks"] if not c["passed"]]
    assert any(c["test"] == "diebold-mariano" for c in failed)
    assert all(c["test"] in ("diebold-mariano", "interval-score") and c["p_adjusted"] <= 0.05 for c in failed)
    assert steps == ["start", "trained", "gates-failed"]
    again = retrain(db, model="mean", spec=SPEC, reason="again")
    assert again["status"] == "up-to-date" and again["candidate"] == outcome["candidate"]  # idempotent


def test_retraining_what_serves_on_the_same_windows_passes_the_default_gates(replay, tmp_path):
    """The serving AR retrained on the 2000s: both scored on the candidate's windows of the crisis,
    so the crisis is in both backtests and the shipped policy passes it (no lenient policy)."""
    db, url, serving, _, _ = replay
    runtime = LocalRuntime(url, tmp_path / "logs")
    try:
        blue = runtime.start_revision("inference", "pefm-inference-drift-blue", model_version=serving.id)
        router_process = runtime.start_router("inference")
        router = LocalRouter(db, {"inference": router_process.url})
        router.set_traffic("inference", [TrafficTarget(blue.name, 100, "blue")])
        controller = RolloutController(db, router, DatabaseProvider(db), HttpProber(db))
        spec = RolloutSpec(steps=(50, 100), interval_seconds=0.5, min_requests=5)
        outcome = retrain(
            db,
            spec=SPEC,
            deployer=LocalDeployer(runtime),
            start_rollout=lambda revision, version: controller.start("inference", revision, spec, version.id),
        )
        assert outcome["status"] == "deployed", outcome.get("failures")
        with db.connection() as conn:
            candidate = get_version(conn, outcome["candidate"])
        assert candidate.family == serving.family and candidate.params == serving.params
        assert candidate.parent_id == serving.id  # the lineage: what it was trained to replace
        assert candidate.gate_report["passed"] and candidate.gate_report["serving"] == serving.id
        rollout = controller.get(outcome["rollout"])
        assert rollout.green_revision == outcome["revision"] and rollout.state.weight == 0
        assert rollout.blue_model_version == serving.id and rollout.green_model_version == candidate.id
        assert {t.tag: (t.revision, t.percent) for t in router.traffic("inference")}["green"] == (
            outcome["revision"],
            0,
        )
        health = httpx.get(f"{runtime.processes[outcome['revision']].url}/health/readiness", timeout=10)
        assert health.status_code == 200
        controller.rollback(outcome["rollout"], "end of the test")
    finally:
        runtime.stop_all()


def test_two_retrains_at_once_yield_one_candidate(replay):
    db, _, _, _, _ = replay
    with db.connection() as conn:
        before = conn.execute("SELECT count(*) FROM model_versions WHERE family = 'drift'").fetchone()[0]
    outcomes = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(retrain(db, model="drift", spec=SPEC))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    statuses = sorted(o["status"] for o in outcomes)
    assert statuses in (
        ["gates-failed", "skipped"],
        ["gates-passed", "skipped"],
        ["gates-failed", "up-to-date"],
        ["gates-passed", "gates-passed"],  # the second resumed the first's job: nothing trained twice
    ), statuses
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM model_versions WHERE family = 'drift'").fetchone()[0] == before + 1


def test_a_crash_mid_registration_leaves_no_half_registered_model(replay, monkeypatch):
    db, _, _, _, _ = replay
    from pefm.storage import model_versions

    def crash(*args, **kwargs):
        raise RuntimeError("power cut while registering")

    monkeypatch.setattr(model_versions, "insert_version", crash)
    counts = "SELECT (SELECT count(*) FROM model_versions), (SELECT count(*) FROM retrain_jobs)"
    with db.connection() as conn:
        before = conn.execute(counts).fetchone()
    with pytest.raises(RuntimeError, match="power cut"):
        retrain(db, model="naive", spec=SPEC)
    with db.connection() as conn:
        assert conn.execute(counts).fetchone() == before  # no candidate, no job step
        [run] = conn.execute("SELECT run_id FROM retrain_events ORDER BY id DESC LIMIT 1").fetchone()
        steps = retrain_events.run_steps(conn, run)
    # (an earlier test's job, of another model, left gated, is superseded before the training)
    assert [step for step, _ in steps if step != "superseded"] == ["start", "failed"]
    assert steps[-1][1] == "RuntimeError: power cut while registering"


@pytest.fixture
def runtime_and_controller(replay, tmp_path):
    """The local runtime the deployer starts revisions with, and a controller whose service has a
    serving revision to roll out from (its rollouts are only started here, never ticked)."""
    db, url, serving, _, _ = replay
    runtime = LocalRuntime(url, tmp_path / "logs")
    router = LocalRouter(db, {"inference": "http://127.0.0.1:9"})  # never reached: the rollouts are not ticked
    router.set_traffic("inference", sole(revision_name("inference", serving.id)))
    controller = RolloutController(db, router, DatabaseProvider(db), prober=None)
    yield runtime, controller
    for rollout_id in controller.active("inference"):
        controller.rollback(rollout_id, "end of the test")
    runtime.stop_all()


def start_rollout(controller):
    return lambda revision, version: controller.start("inference", revision, RolloutSpec(), version.id)


def test_a_crash_after_training_resumes_at_the_gates(replay, runtime_and_controller, monkeypatch):
    """The failure comes AFTER the candidate was written: a job keyed on the data alone would
    answer "up-to-date" forever and never gate or deploy it."""
    db, _, _, _, _ = replay
    runtime, controller = runtime_and_controller
    import pefm.drift.retrain as job

    real_gate = job.gate_candidate

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(job, "gate_candidate", killed)
    with pytest.raises(RuntimeError, match="killed"):
        retrain(db, model="ar_d1", spec=SPEC)
    with db.connection() as conn:
        [run] = conn.execute("SELECT run_id FROM retrain_events ORDER BY id DESC LIMIT 1").fetchone()
        assert [step for step, _ in retrain_events.run_steps(conn, run)] == ["start", "trained", "failed"]
        [(candidate, step)] = conn.execute(
            "SELECT candidate, step FROM retrain_jobs JOIN model_versions ON id = candidate WHERE family = 'ar_d1'"
        ).fetchall()
    assert step == "trained"
    monkeypatch.setattr(job, "gate_candidate", real_gate)
    deployer = LocalDeployer(runtime)
    resumed = retrain(
        db, model="ar_d1", spec=SPEC, deployer=deployer, start_rollout=start_rollout(controller), gate_policy=LENIENT
    )
    assert resumed["resumed"] and resumed["candidate"] == candidate and resumed["status"] == "deployed"
    assert list(runtime.processes) == [revision_name("inference", candidate)]
    assert controller.get(resumed["rollout"]).green_model_version == candidate
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM model_versions WHERE family = 'ar_d1'").fetchone()[0] == 1
        steps = [
            r[0]
            for r in conn.execute("SELECT step FROM retrain_events WHERE run_id = %s ORDER BY id", (resumed["run_id"],))
        ]
    assert steps == ["start", "resume", "gates-passed", "deployed", "rollout-started"]
    assert retrain(db, model="ar_d1", spec=SPEC, deployer=deployer)["status"] == "skipped"  # its rollout runs
    controller.rollback(resumed["rollout"], "end of the test")
    assert retrain(db, model="ar_d1", spec=SPEC, deployer=deployer)["status"] == "up-to-date"


def test_a_crash_after_deploying_resumes_at_the_rollout_without_deploying_twice(
    replay, runtime_and_controller, tmp_path
):
    """The first run's green revision still runs when the second run resumes: it is reused, not
    started again (each run has its own runtime, as two `pefm retrain` processes would)."""
    db, url, _, _, _ = replay
    first_runtime, controller = runtime_and_controller

    def dies(revision, version):
        raise RuntimeError("killed before the rollout started")

    spec = BacktestSpec(h=1, windows=12)
    with pytest.raises(RuntimeError, match="killed"):
        retrain(
            db,
            model="drift",
            params={},
            spec=spec,
            deployer=LocalDeployer(first_runtime),
            start_rollout=dies,
            gate_policy=LENIENT,
        )
    [revision] = first_runtime.processes
    second_runtime = LocalRuntime(url, tmp_path / "second")
    resumed = retrain(
        db,
        model="drift",
        params={},
        spec=spec,
        deployer=LocalDeployer(second_runtime),
        start_rollout=start_rollout(controller),
        gate_policy=LENIENT,
    )
    assert resumed["status"] == "deployed" and resumed["revision"] == revision
    assert second_runtime.processes == {}  # nothing started twice
    assert controller.get(resumed["rollout"]).green_revision == revision
    with db.connection() as conn:
        pids = conn.execute("SELECT pids FROM local_revisions WHERE revision = %s", (revision,)).fetchone()[0]
    assert pids == [first_runtime.processes[revision].process.pid]


def test_a_retrain_stands_aside_during_a_rollout_and_a_candidate_resumed_later_is_gated_again(
    replay, runtime_and_controller
):
    """During a rollout a retraining would gate against a model about to change and deploy a
    revision it could not roll out: it records why and trains nothing (no cool-down either). A
    job resumed after the serving model changed is gated again, against the new one."""
    db, _, serving, _, _ = replay
    _, controller = runtime_and_controller
    with db.connection() as conn:
        green, _ = train(conn, "naive", serving.series_ids, spec=None)
        record_revision(conn, "inference", "pefm-inference-busy", ["http://busy.invalid"], model_version=green.id)
    busy = controller.start("inference", "pefm-inference-busy", RolloutSpec(), green.id)
    with db.connection() as conn:
        before = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    aside = retrain(db, model="seasonal_naive", spec=SPEC, gate_policy=LENIENT)
    assert aside["status"] == "skipped" and f"rollout {busy} of inference is under way" in aside["reason"]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == before
        steps = [r[0] for r in conn.execute("SELECT step FROM retrain_events WHERE run_id = %s", (aside["run_id"],))]
    assert steps == ["skipped"]  # no 'start': the cool-down does not begin
    controller.rollback(busy, "end of the busy rollout")

    gated = retrain(db, model="seasonal_naive", spec=SPEC, gate_policy=LENIENT)
    assert gated["status"] == "gates-passed"
    passed = retrain(db, model="seasonal_naive", spec=SPEC, gate_policy=LENIENT)  # nothing to deploy it with
    assert passed["resumed"] and passed["status"] == "gates-passed"
    with db.connection() as conn:  # it ends on an outcome, as every run that did its work (it answers a request)
        assert [step for step, _ in retrain_events.run_steps(conn, passed["run_id"])] == [
            "start",
            "resume",
            "gates-passed",
        ]
    assert get_version_of(db, gated["candidate"]).gate_report["serving"] == serving.id
    with db.connection() as conn:
        other, _ = train(conn, "naive", serving.series_ids, spec=None)
        promote(conn, other.id)  # the serving model changes before the job goes on
    try:
        again = retrain(db, model="seasonal_naive", spec=SPEC, gate_policy=LENIENT)
        assert again["resumed"] and again["candidate"] == gated["candidate"]
        assert get_version_of(db, gated["candidate"]).gate_report["serving"] == other.id
        with db.connection() as conn:
            query = "SELECT step FROM retrain_events WHERE run_id = %s ORDER BY id"
            steps = [r[0] for r in conn.execute(query, (again["run_id"],))]
        assert steps[:3] == ["start", "resume", "regate"]
    finally:
        with db.connection() as conn:
            promote(conn, serving.id)


def test_locally_the_monitor_starts_the_retraining_a_pending_request_needs_once_none_runs(replay, tmp_path):
    """PEFM_RETRAIN=local, as `pefm up` runs the monitor: nothing else answers a request there, so
    each check starts `pefm retrain --if-requested` while one is pending (here one whose run was
    killed part-way), but none while a retraining holds the lock; the run it starts answers it.
    Last in this module: the run may deploy (the local runtime) what the module's state allows."""
    db, url, serving, _, _ = replay
    LocalRouter(db, {}).set_traffic("inference", sole(revision_name("inference", serving.id)))  # to roll out from
    with db.connection() as conn:
        retrain_events.record(conn, "left", retrain_events.REQUESTED, "the monitor requested a retraining: test")
        retrain_events.record(conn, "killed", "start", "retraining ar on 8 series: killed before it went on")
    env = cli_environment(role_url(url, "trainer"), tmp_path / "home")
    monitor = start_function(
        "monitor",
        url,
        tmp_path,
        PEFM_ADMIN_TOKEN=ADMIN_TOKEN,
        PEFM_RETRAIN="local",
        PEFM_TRAINER_DATABASE_URL=env["PEFM_DATABASE_URL"],
        PEFM_SIGNING_KEY=env["PEFM_SIGNING_KEY"],
        PEFM_HOME=env["PEFM_HOME"],
    )
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with monitor.client() as client:
            with db.advisory_lock(retrain_events.LOCK, wait=False) as (held, _):
                assert held
                busy = client.post("/v1/drift/check", headers=admin).json()["retrain"]
            started = client.post("/v1/drift/check", headers=admin).json()["retrain"]
        assert not busy["started"] and started["started"], (busy, started)
        deadline = time.monotonic() + 300
        while (pending := _pending(db)) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pending is None, (tmp_path / "home" / "logs" / "retrain.log").read_text()
        while not _lock_free(db) and time.monotonic() < deadline:  # answered; the run may still deploy
            time.sleep(0.5)
        with db.connection() as conn:
            [reason] = conn.execute(
                "SELECT reason FROM retrain_events WHERE step = 'start' AND reason LIKE %s",
                ("%answering the request of % (the monitor requested a retraining: test)",),
            ).fetchone()
        assert reason.startswith("retraining ")
    finally:
        stop(monitor)
        LocalRouter(db, {}).retire_all("inference")  # a revision the run may have deployed


def _lock_free(db) -> bool:
    return not db.lock_held(retrain_events.LOCK)


def _pending(db):
    with db.connection() as conn:
        return retrain_events.pending_request(conn)


def get_version_of(db, version_id):
    with db.connection() as conn:
        return get_version(conn, version_id)
