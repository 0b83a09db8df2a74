"""The retraining job's steps against a registry that changes under it: a serving model promoted
while the job trains, a candidate promoted or rejected between two runs of the same job."""

import pytest

import pefm.drift.retrain as job
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.registry import promote, serving_version
from pefm.forecasting.training import train
from pefm.storage.model_versions import get_version

PANEL = ["realgdp", "unemp"]
SPEC = BacktestSpec(h=1, windows=6)


@pytest.fixture
def serving(conn):
    """The panel loaded and an AR model serving it."""
    load_bundled(conn, bundled(PANEL))
    version, _ = train(conn, "ar", PANEL, spec=SPEC)
    promote(conn, version.id)
    conn.commit()
    return version


def steps(conn, run_id: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT step FROM retrain_events WHERE run_id = %s ORDER BY id", (run_id,))]


def test_a_model_promoted_while_the_job_trains_is_the_one_the_candidate_is_gated_against(
    db, conn, serving, monkeypatch
):
    """Training takes minutes; what serves when it ends, not when the job began, is the baseline."""
    real_train, promoted = job.train, []

    def train_while_another_is_promoted(train_conn, *args, **kwargs):
        other, _ = real_train(train_conn, "naive", PANEL, spec=SPEC)
        promote(train_conn, other.id)  # an operator's promotion, or a rollout ending
        train_conn.commit()
        promoted.append(other.id)
        return real_train(train_conn, *args, **kwargs)

    monkeypatch.setattr(job, "train", train_while_another_is_promoted)
    outcome = job.retrain(db, model="ar", spec=SPEC)
    assert serving_version(conn).id == promoted[0] != serving.id
    assert get_version(conn, outcome["candidate"]).gate_report["serving"] == promoted[0]


def test_a_rollout_started_while_the_job_trains_makes_it_stand_aside_before_the_gates(db, conn, serving, monkeypatch):
    real_train = job.train

    def train_while_a_rollout_starts(train_conn, *args, **kwargs):
        train_conn.execute(
            """INSERT INTO rollouts (service, blue_revision, green_revision, spec, phase, step, weight)
               VALUES ('inference', 'blue', 'green', '{}', 'Progressing', 0, 10)"""
        )
        train_conn.commit()
        return real_train(train_conn, *args, **kwargs)

    monkeypatch.setattr(job, "train", train_while_a_rollout_starts)
    outcome = job.retrain(db, model="ar", spec=SPEC)
    assert outcome["status"] == "skipped" and "is under way" in outcome["reason"]
    assert get_version(conn, outcome["candidate"]).gate_report is None
    assert steps(conn, outcome["run_id"]) == ["start", "trained", "skipped"]
    conn.execute("UPDATE rollouts SET phase = 'RolledBack'")
    conn.commit()
    monkeypatch.setattr(job, "train", real_train)
    resumed = job.retrain(db, model="ar", spec=SPEC)
    assert resumed["resumed"] and resumed["candidate"] == outcome["candidate"]
    assert resumed["status"] == "gates-passed"


class Deployer:
    def __init__(self):
        self.deployed = []

    def deploy(self, version):
        self.deployed.append(version.id)
        return f"green-{version.id}"


def test_a_job_whose_candidate_was_promoted_since_is_up_to_date(db, conn, serving):
    """`pefm retrain --no-deploy`, then the operator promotes its candidate: the next run of the
    same job (the same data) has nothing left to do, rather than gate the serving version against
    itself."""
    gated = job.retrain(db, spec=SPEC)
    assert gated["status"] == "gates-passed"
    promote(conn, gated["candidate"])
    conn.commit()
    again = job.retrain(db, spec=SPEC, deployer=Deployer())
    assert again["status"] == "up-to-date" and again["candidate"] == gated["candidate"]
    assert steps(conn, again["run_id"])[-1] == "up-to-date"


def test_a_job_whose_candidate_was_rejected_since_does_not_deploy_it_again(db, conn, serving):
    """A candidate a rollout rolled back (rejected) is not deployed and rolled out once more by the
    next run of the job that trained it."""
    from pefm.storage.model_versions import set_status

    gated = job.retrain(db, spec=SPEC)
    set_status(conn, gated["candidate"], "rejected", "rolled back: errors")
    conn.commit()
    deployer = Deployer()
    again = job.retrain(db, spec=SPEC, deployer=deployer)
    assert deployer.deployed == []
    assert again["status"] == "up-to-date" and "rejected" in steps_reason(conn, again["run_id"])


def steps_reason(conn, run_id: str) -> str:
    return conn.execute(
        "SELECT reason FROM retrain_events WHERE run_id = %s ORDER BY id DESC LIMIT 1", (run_id,)
    ).fetchone()[0]


def test_a_gate_policy_it_cannot_use_is_refused_before_any_training(db, conn, serving, tmp_path):
    from pefm.forecasting.gates import PolicyError

    policy = tmp_path / "gates.toml"
    policy.write_text('[[rule]]\ntest = "diebold-mariano"\nalpha = 2\n')
    count = "SELECT count(*) FROM model_versions"
    before = conn.execute(count).fetchone()[0]
    with pytest.raises(PolicyError, match="alpha must be in"):
        job.retrain(db, spec=SPEC, gate_policy=policy)
    assert conn.execute(count).fetchone()[0] == before
    # answering the monitor's request, it is a failed run: counted, so the request is given up in
    # the end (nothing was recorded, and the monitor started a run that failed at every check)
    from pefm.storage import retrain_events

    details = {"model_version": serving.id, "evidence": {"realgdp": "r1"}}
    conn.commit()  # the request's now() after the run above
    retrain_events.record(conn, "req", retrain_events.REQUESTED, "drift", details=details)
    conn.commit()
    with pytest.raises(PolicyError):
        job.retrain(db, spec=SPEC, gate_policy=policy, if_requested=True)
    assert retrain_events.pending_request(conn).attempts == 1
    assert conn.execute(count).fetchone()[0] == before


def test_a_job_stopped_between_its_deploy_and_its_rollout_deploys_again_when_resumed(db, conn, serving):
    """A run that deployed its candidate and stopped before its rollout started (a rollout started
    by hand meanwhile, Ctrl-C) left the job at `deployed`. Its revision may be gone since (`pefm up`
    retires them all when it stops), and resuming went straight to the rollout of it: every later
    run failed with UnknownRevision. It deploys again (idempotent), then starts the rollout."""
    deployer = Deployer()

    def router_down(revision, version):
        raise ConnectionError("router down")

    with pytest.raises(ConnectionError):
        job.retrain(db, model="ar", spec=SPEC, deployer=deployer, start_rollout=router_down)
    assert len(deployer.deployed) == 1

    def start(revision, version):
        rollout_id = conn.execute(
            """INSERT INTO rollouts (service, blue_revision, green_revision, green_model_version, spec, phase,
                                     step, weight)
               VALUES ('inference', 'blue', %s, %s, '{}', 'Initializing', -1, 0) RETURNING id""",
            (revision, version.id),
        ).fetchone()[0]
        conn.commit()  # the job's own connection records it
        return rollout_id

    resumed = job.retrain(db, model="ar", spec=SPEC, deployer=deployer, start_rollout=start)
    assert resumed["resumed"] and resumed["status"] == "deployed" and resumed["rollout"] is not None
    assert deployer.deployed == [resumed["candidate"]] * 2
    assert steps(conn, resumed["run_id"])[-1] == "rollout-started"


def test_a_run_stopped_as_it_records_its_training_leaves_no_candidate_without_its_event(db, conn, serving, monkeypatch):
    """The `trained` event starts the monitor's cool-down (`retrain_events.cool_down_since`): a run
    killed between the commit of its candidate and job and that event's left a trained candidate
    that started none. They are committed together now."""
    from pefm.storage import retrain_events

    real_record = retrain_events.record

    def killed_at_trained(conn, run_id, step, *rest):
        if step == "trained":
            raise RuntimeError("killed")
        real_record(conn, run_id, step, *rest)

    monkeypatch.setattr(retrain_events, "record", killed_at_trained)
    with pytest.raises(RuntimeError, match="killed"):
        job.retrain(db, spec=SPEC)
    monkeypatch.undo()
    jobs = conn.execute("SELECT count(*) FROM retrain_jobs").fetchone()[0]
    assert (jobs, retrain_events.cool_down_since(conn)) == (0, None)
    outcome = job.retrain(db, spec=SPEC)
    assert outcome["status"] == "gates-passed" and not outcome["resumed"]
    assert retrain_events.cool_down_since(conn) is not None
