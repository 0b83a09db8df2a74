"""Retraining around its rollout's start: the serving model changing between the candidate's gates
and the start (a grace-period rollback of the last rollout), and the green revision of a job that
ends without a rollout. The local controller and router on the real database; each revision a
stand-in process under its revision's name, retired as a real one is."""

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psycopg
import pytest

import pefm.drift.retrain as job
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.gating import gate_candidate
from pefm.forecasting.panel import MACRO_PANEL
from pefm.forecasting.registry import PROMOTE_LOCK, promote, serving_id
from pefm.forecasting.training import train
from pefm.local.runtime import LocalRuntime, record_revision
from pefm.rollout.controller import RolloutController
from pefm.rollout.local import LocalRouter
from pefm.rollout.router import revision_name, sole
from pefm.rollout.spec import RolloutSpec
from pefm.storage.database import Database
from pefm.storage.model_versions import get_version, set_status
from pefm.storage.observations import write_observations

PANEL = list(MACRO_PANEL)  # what retraining a single family trains on
SPEC = BacktestSpec(h=1, windows=6)
PERMISSIVE = Path(__file__).parent.parent / "functions" / "permissive_gates.toml"


class StandInDeployer(job.LocalDeployer):
    """LocalDeployer, each revision's process a `sleep` under the revision's name (K_REVISION, as
    the runtime starts them) recorded as the runtime records it: retiring it is the real thing,
    without a model load per revision."""

    def __init__(self, url: str, logs):
        super().__init__(LocalRuntime(url, logs))
        self.processes: dict[str, subprocess.Popen] = {}
        self.before_deploy = lambda version: None

    def deploy(self, version):
        self.before_deploy(version)
        revision = revision_name("inference", version.id)
        running = self.processes.get(revision)
        if running is None or running.poll() is not None:  # idempotent, as LocalDeployer's
            running = subprocess.Popen(["sleep", "600"], env={"K_REVISION": revision, "PATH": os.environ["PATH"]})
            self.processes[revision] = running
            with psycopg.connect(self.runtime.database_url, autocommit=True) as conn:
                record_revision(
                    conn, "inference", revision, ["http://127.0.0.1:9"], model_version=version.id, pids=[running.pid]
                )
        return revision


class Healthy:
    """Every green's smoke request succeeds (the gates are what these tests are about)."""

    def smoke(self, url, request, model_version):
        return True


@pytest.fixture
def stack(db, conn, tmp_path):
    """The panel loaded, an AR model serving it from its revision, the local router and controller
    (on a pool of their own: the job holds two connections of the test's)."""
    load_bundled(conn, bundled(PANEL))
    blue, _ = train(conn, "ar", PANEL, spec=SPEC)
    promote(conn, blue.id)
    conn.commit()
    rollout_db = Database(db.url, max_size=6)
    router = LocalRouter(rollout_db, {"inference": "http://127.0.0.1:9"})
    deployer = StandInDeployer(db.url, tmp_path)
    router.set_traffic("inference", sole(deployer.deploy(blue)))
    controller = RolloutController(rollout_db, router, provider=None, prober=Healthy(), grace_seconds=300)
    yield SimpleNamespace(blue=blue, router=router, deployer=deployer, controller=controller)
    rollout_db.close()
    for process in deployer.processes.values():
        process.kill()
        process.wait()


def run_job(db, stack, start_rollout=None, policy=PERMISSIVE) -> dict:
    """`pefm retrain --model naive` on the stack (the job of every run here: the same data)."""
    start_rollout = start_rollout or (
        lambda revision, version: stack.controller.start("inference", revision, RolloutSpec(), version.id)
    )
    return job.retrain(
        db, model="naive", spec=SPEC, deployer=stack.deployer, start_rollout=start_rollout, gate_policy=policy
    )


def steps(conn, run_id: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT step FROM retrain_events WHERE run_id = %s ORDER BY id", (run_id,))]


def last_reason(conn, run_id: str) -> str:
    query = "SELECT reason FROM retrain_events WHERE run_id = %s ORDER BY id DESC LIMIT 1"
    return conn.execute(query, (run_id,)).fetchone()[0]


def promotion_waits(url: str) -> bool:
    """Whether a promotion now would wait (another session holds the registry's PROMOTE_LOCK)."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SET lock_timeout = '100ms'")
        try:
            with other.transaction():
                other.execute(PROMOTE_LOCK)
        except psycopg.errors.LockNotAvailable:
            return True
    return False


def test_a_rollout_of_a_candidate_gated_against_a_version_no_longer_serving_waits_saying_so(conn, stack):
    """The wait said "the candidate model has no gate report yet" of a candidate whose report was
    there, and only stale: the operator was sent looking for a report instead of running the gates
    again."""
    other, _ = train(conn, "naive", PANEL, spec=SPEC)
    candidate, _ = train(conn, "mean", PANEL, spec=SPEC)
    assert gate_candidate(conn, candidate, other, policy=PERMISSIVE)["passed"]
    conn.commit()
    rollout = stack.controller.start("inference", stack.deployer.deploy(candidate), RolloutSpec(), candidate.id)
    decision = stack.controller.tick(rollout)
    assert decision.action == "wait"
    assert decision.reason == (
        f"the candidate {candidate.id} was gated against {other.id}; {stack.blue.id} serves now: gate it again"
    )


def test_the_serving_model_restored_before_the_rollout_starts_has_the_candidate_gated_again(db, conn, stack):
    """The last rollout (C replacing B) was rolled back in its grace period while the job deployed
    its candidate D, gated against C: the rollout started then waited at 0% for gates against B
    that nobody ran, every later run stood aside for it, and after max_wait_seconds it was rolled
    back and D, which had passed its gates, rejected. The job now checks what serves as it starts
    the rollout, with promotions held off until the start has superseded the last rollout."""
    ctl = stack.controller
    c, _ = train(conn, "mean", PANEL, spec=SPEC)
    conn.commit()
    last = ctl.start("inference", stack.deployer.deploy(c), RolloutSpec(require_gates=False), c.id)
    ctl.promote(last)
    assert serving_id(conn) == c.id

    def grace_period_rollback(version):
        if version.id != c.id and ctl.get(last).state.phase.value == "Succeeded":
            ctl.rollback(last, "operator: errors after the promotion")

    stack.deployer.before_deploy = grace_period_rollback
    held = []

    def start(revision, version):
        held.append(promotion_waits(db.url))
        return ctl.start("inference", revision, RolloutSpec(), version.id)

    outcome = run_job(db, stack, start)
    assert serving_id(conn) == stack.blue.id
    assert outcome["status"] == "deployed"
    assert steps(conn, outcome["run_id"]) == [
        "start",
        "trained",
        "gates-passed",
        "deployed",  # and then the rollback: what serves is checked as the rollout starts
        "regate",
        "gates-passed",
        "deployed",
        "rollout-started",
    ]
    assert get_version(conn, outcome["candidate"]).gate_report["serving"] == stack.blue.id
    assert ctl.get(outcome["rollout"]).blue_model_version == stack.blue.id
    decision = ctl.tick(outcome["rollout"])
    assert decision.action == "advance", decision.reason
    assert held == [True]  # a promotion (or a rollback's settling) waited for the start


def strict_policy(tmp_path):
    """A policy the naive candidate fails against an AR serving model on these data (its RMSE on
    unemp is significantly worse: Holm-adjusted p 0.12)."""
    policy = tmp_path / "strict.toml"
    policy.write_text('[[rule]]\ntest = "diebold-mariano"\nalpha = 0.5\n')
    return policy


def router_down(revision, version):
    raise ConnectionError("router down")


def deployed_but_not_rolled_out(db, stack) -> str:
    """A job that deployed its candidate and failed to start the rollout (the router away): the
    candidate's revision, at `deployed`."""
    with pytest.raises(ConnectionError):
        run_job(db, stack, router_down)
    [revision] = [r for r in stack.deployer.processes if r != revision_name("inference", stack.blue.id)]
    return revision


RETIRED = "in no traffic block, retired"
"""How a run's outcome says it retired its job's revision."""


def retired(stack, revision: str) -> bool:
    process = stack.deployer.processes[revision]
    gone = not stack.router.has_revision("inference", revision)
    if gone:
        process.wait(timeout=15)
    return gone and process.poll() is not None


def test_a_revision_whose_candidate_fails_its_gates_run_again_is_retired(db, conn, stack, tmp_path):
    """Deployed, its rollout not started, the serving model changed, gated again and failed: the
    revision never entered a traffic block, so the sweep never saw it, and it ran until the stack
    stopped."""
    revision = deployed_but_not_rolled_out(db, stack)
    other, _ = train(conn, "ar", PANEL, spec=SPEC)
    promote(conn, other.id)  # by hand
    conn.commit()
    outcome = run_job(db, stack, policy=strict_policy(tmp_path))
    assert outcome["status"] == "gates-failed" and outcome["resumed"]
    assert steps(conn, outcome["run_id"])[-2:] == ["regate", "gates-failed"]
    assert retired(stack, revision)
    assert last_reason(conn, outcome["run_id"]).startswith("not rolled out: ")
    assert last_reason(conn, outcome["run_id"]).endswith(f"; its green revision {revision}, {RETIRED}")
    assert stack.controller.active() == []


def test_a_revision_whose_candidate_was_rejected_since_is_retired_when_the_job_is_up_to_date(db, conn, stack):
    """The same revision, its job answering "up-to-date" (the candidate rejected by hand)."""
    revision = deployed_but_not_rolled_out(db, stack)
    set_status(conn, stack.router.revision_model_version("inference", revision), "rejected", "an operator's call")
    conn.commit()
    outcome = run_job(db, stack)
    assert outcome["status"] == "up-to-date"
    assert retired(stack, revision)
    assert last_reason(conn, outcome["run_id"]).endswith(f"; its green revision {revision}, {RETIRED}")


def test_a_revision_that_carries_traffic_is_not_retired_when_the_job_is_up_to_date(db, conn, stack):
    """Its candidate promoted by hand and the revision routed (`pefm up` names its blue revision as
    retraining names the candidate's): the job is up to date, and the revision serves on."""
    revision = deployed_but_not_rolled_out(db, stack)
    promote(conn, stack.router.revision_model_version("inference", revision))
    conn.commit()
    stack.router.set_traffic("inference", sole(revision))
    outcome = run_job(db, stack)
    assert outcome["status"] == "up-to-date"
    assert "retired" not in last_reason(conn, outcome["run_id"])
    assert stack.router.has_revision("inference", revision)
    assert stack.deployer.processes[revision].poll() is None


def a_quarter_arrives(conn, series: str = "realgdp") -> None:
    """One more quarter of a series, as the ingest function writes it: the next job's key differs."""
    ts, value = conn.execute(
        "SELECT ts, value FROM observations WHERE series_id = %s ORDER BY ts DESC LIMIT 1", (series,)
    ).fetchone()
    quarter = pd.DataFrame({"series_id": [series], "ts": [ts + pd.DateOffset(months=3)], "value": [value * 1.01]})
    write_observations(conn, quarter)
    conn.commit()


def running_revisions(conn) -> set[str]:
    return {r for (r,) in conn.execute("SELECT revision FROM local_revisions WHERE service = 'inference'")}


def test_a_job_stopped_after_its_deploy_is_superseded_by_the_next_one_on_newer_data(db, conn, stack):
    """A job is resumed only by a run that computes its key, a hash of the data among the rest: once
    a quarter arrived none did, so its green revision (in no traffic block: the sweep never saw it)
    ran beside the next job's for good, a third inference revision, and its candidate stayed one."""
    revision = deployed_but_not_rolled_out(db, stack)
    first = stack.router.revision_model_version("inference", revision)
    a_quarter_arrives(conn)
    outcome = run_job(db, stack)
    assert outcome["status"] == "deployed" and not outcome["resumed"] and outcome["candidate"] != first
    assert retired(stack, revision)
    assert running_revisions(conn) == {revision_name("inference", stack.blue.id), outcome["revision"]}
    version = get_version(conn, first)
    assert version.status == "retired"
    assert version.status_reason.startswith(f"superseded by retraining run {outcome['run_id']}")
    assert steps(conn, outcome["run_id"]) == [
        "start",
        "superseded",
        "trained",
        "gates-passed",
        "deployed",
        "rollout-started",
    ]
    superseded = "SELECT reason FROM retrain_events WHERE run_id = %s AND step = 'superseded'"
    reason = conn.execute(superseded, (outcome["run_id"],)).fetchone()[0]
    assert reason.endswith(f"; its green revision {revision}, {RETIRED}")


def test_a_supersession_interrupted_after_its_revision_is_retired_is_finished_by_the_next_run(
    db, conn, stack, monkeypatch
):
    """Stopped between the revision's retirement and the candidate's, the clean-up is done again:
    the revision, gone, retires nothing the second time, and the candidate is retired once."""
    revision = deployed_but_not_rolled_out(db, stack)
    first = stack.router.revision_model_version("inference", revision)
    a_quarter_arrives(conn)

    def killed(*args):
        raise RuntimeError("killed")

    monkeypatch.setattr(job, "set_status", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_job(db, stack)
    assert retired(stack, revision) and get_version(conn, first).status == "candidate"
    monkeypatch.undo()
    outcome = run_job(db, stack)
    assert outcome["status"] == "deployed" and get_version(conn, first).status == "retired"
    assert steps(conn, outcome["run_id"])[:3] == ["start", "superseded", "trained"]
    assert conn.execute("SELECT count(*) FROM retrain_events WHERE step = 'superseded'").fetchone()[0] == 1


def test_a_job_whose_candidate_has_a_rollout_is_left_to_it(db, conn, stack):
    """A job stopped between its rollout's start (the controller's write) and its own step: the
    rollout decides what becomes of its candidate and revision, not the next job."""
    revision = deployed_but_not_rolled_out(db, stack)
    first = stack.router.revision_model_version("inference", revision)
    conn.execute(  # ended with the candidate left as it was
        """INSERT INTO rollouts (service, blue_revision, green_revision, green_model_version, spec, phase, step, weight)
           VALUES ('inference', 'blue', %s, %s, '{}', 'Failed', -1, 0)""",
        (revision, first),
    )
    conn.commit()
    a_quarter_arrives(conn)
    outcome = run_job(db, stack)
    assert outcome["status"] == "deployed" and "superseded" not in steps(conn, outcome["run_id"])
    assert get_version(conn, first).status == "candidate"
    assert stack.deployer.processes[revision].poll() is None
