"""The retraining job: candidate on data as of now -> backtest -> gates vs serving (same windows)
-> (only if it passes) a green revision at 0% -> its rollout.

By default it retrains what serves: the serving model's family, parameters, series and backtest
spec. Single-flight: an advisory lock; a second job finds it taken and records that it stood
aside; so does a job that finds a rollout under way (its candidate would be gated against a model
about to change, and its revision could not be rolled out): it records why; one started while
the job trains makes it stand aside before the gates. A run that raises records ``failed``. A
candidate is gated against what serves when its training ends, not when the job began.
Resumable: a job is keyed by what it trains (family, parameters, series, backtest spec and a hash
of the data) and ``retrain_jobs`` holds its last completed step (trained, gated or
gates-failed, deployed, rollout-started), written in the same transaction as the step's own
database writes (but for rollout-started: the controller writes the rollout on its own connection,
and a run that crashed in between finds that rollout rather than start another); a job that
crashed resumes after its last completed step, and one that finished, or whose candidate was
promoted, rejected or retired since, answers "up-to-date". Resuming needs the same key: a job that
stopped after its deploy is superseded by the next run under another key (newer data, another
model), its green revision and candidate retired. Deploying is idempotent (a revision already running is
reused). Every step is a ``retrain_events`` row with its reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, Protocol

import psycopg

from pefm.forecasting.backtest import DEFAULT_HORIZON, BacktestSpec
from pefm.forecasting.bundle import BUNDLE
from pefm.forecasting.gates import load_policy
from pefm.forecasting.gating import gate_candidate
from pefm.forecasting.models import DEFAULT_MODEL
from pefm.forecasting.panel import default_series, load_panel
from pefm.forecasting.registry import PROMOTE_LOCK, serving_id, serving_version
from pefm.forecasting.training import bundle_params, data_sha256, train
from pefm.rollout.router import knative_service, revision_name
from pefm.rollout.store import UNFINISHED
from pefm.storage import retrain_events
from pefm.storage.database import Database
from pefm.storage.model_versions import ModelVersion, get_version, set_status

DEFAULT_SPEC = BacktestSpec(h=DEFAULT_HORIZON, windows=40)


class Deployer(Protocol):
    def deploy(self, version: ModelVersion) -> str:
        """Create (or find, if it already runs) the green revision serving ``version`` at 0%; its name."""

    def retire(self, revision: str) -> bool:
        """Stop and forget ``revision`` if it is in no traffic block and never left one (one that
        left one is the sweep's, once its grace period is over); whether it did."""


def retrain(
    db: Database,
    *,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    spec: BacktestSpec | None = None,
    spec_changes: dict[str, Any] | None = None,
    deployer: Deployer | None = None,
    start_rollout: Callable[[str, ModelVersion], Any] | None = None,
    dry_run: bool = False,
    reason: str = "requested",
    gate_policy=None,
    if_requested: bool = False,
) -> dict[str, Any]:
    """Run the job once (or resume it); returns its outcome (``status`` and what it produced).
    ``model``/``params``/``spec`` default to the serving model's (the spec, when none serves or it
    stored no backtest, to ``DEFAULT_SPEC``: 40 windows, h=1..8); ``spec_changes`` (e.g.
    ``{"windows": 12}``) replaces fields of whichever spec that is. ``if_requested``: only while a
    request of the drift monitor is pending (``retrain_events.pending_request``), else status
    ``not-requested`` and nothing recorded (a schedule asks every few minutes)."""
    run_id = uuid.uuid4().hex[:12]
    not_requested = {"status": "not-requested", "run_id": run_id, "reason": "no request of the monitor is pending"}
    if if_requested:
        with db.connection() as conn:  # most scheduled runs end here, recording nothing
            if retrain_events.pending_request(conn) is None:
                return not_requested
    with db.advisory_lock(retrain_events.LOCK, wait=False) as (held, _), db.connection() as conn:
        if not held:
            _event(conn, run_id, "skipped", "another retraining is running")
            return {"status": "skipped", "run_id": run_id, "reason": "another retraining is running"}
        if if_requested:  # again, under the lock: a run may have answered it meanwhile
            if (request := retrain_events.pending_request(conn)) is None:
                return not_requested
            reason = f"{reason}, answering the request of {request.at:%Y-%m-%d %H:%M:%S} UTC ({request.reason})"
        try:  # a policy the gates cannot use is refused before minutes of training, as a failed run
            # (an answer to nothing: the request stays pending, and is given up after its attempts)
            load_policy(gate_policy)
            return _Job(conn, run_id, deployer, start_rollout, gate_policy).run(
                model, params, spec, spec_changes or {}, dry_run, reason
            )
        except Exception as exc:  # say so; a request it answered stays pending (retrain_events.ATTEMPTS)
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
                _event(conn, run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            raise


class _Job:
    def __init__(self, conn: psycopg.Connection, run_id: str, deployer, start_rollout, gate_policy):
        self.conn, self.run_id = conn, run_id
        self.deployer, self.start_rollout, self.gate_policy = deployer, start_rollout, gate_policy

    def run(self, model, params, spec, spec_changes: dict[str, Any], dry_run: bool, reason: str) -> dict[str, Any]:
        conn = self.conn
        if why := _rollout_under_way(conn):  # a job it started and crashed after is resumed once it has ended
            _event(conn, self.run_id, "skipped", why)
            return {"status": "skipped", "run_id": self.run_id, "reason": why}
        serving = serving_version(conn)
        family = model or (serving.family if serving else DEFAULT_MODEL)
        if family == BUNDLE:  # re-planned from the catalog: series added since join the bundle
            ids = default_series(conn, BUNDLE)
            params = params or bundle_params(load_panel(conn, ids, skip_refused=True))
        else:
            ids = serving.series_ids if serving and serving.family == family else default_series(conn, family)
        if params is None:
            params = serving.params if serving and serving.family == family else {}
        if spec is None and serving and serving.backtest:
            spec = BacktestSpec.from_dict(serving.backtest["spec"])
        spec = replace(spec or DEFAULT_SPEC, **spec_changes)
        what = f"retraining {family} on {len(ids)} series ({spec.windows} windows, h={spec.h})"
        # a run that will not deploy (--no-deploy) says so: it answers no request of the monitor
        details = None if self.deployer is not None else {"deploy": False}
        _event(conn, self.run_id, "start", f"{what}: {reason}", None, details)
        digest = data_sha256(load_panel(conn, ids, skip_refused=True))
        key = job_key(family, params, ids, spec, digest)
        if not dry_run:
            self._supersede(key)
        job = _read_job(conn, key)
        if job is None and dry_run:
            _event(conn, self.run_id, "dry-run", f"would train {family}, backtest {spec.windows} windows and gate it")
            return {"status": "dry-run", "run_id": self.run_id}
        if job is None:
            version, _ = train(conn, family, ids, params=params, spec=spec, parent_id=serving and serving.id)
            conn.execute(
                "INSERT INTO retrain_jobs (key, step, candidate) VALUES (%s, 'trained', %s)",
                (key, version.id),
            )
            # the candidate, its job's first step and its event, together: a trained candidate
            # without its event would not start the cool-down (retrain_events.cool_down_since)
            retrain_events.record(conn, self.run_id, "trained", f"registered candidate {version.id}", version.id)
            conn.commit()
            job = _read_job(conn, key)
            resumed = False
        else:
            resumed = True
            status = get_version(conn, job["candidate"]).status
            if job["step"] in ("gates-failed", "rollout-started") or status != "candidate":
                # promoted, rejected by a rollback or retired since its last step: nothing left to do
                done = job["step"] if status == "candidate" else f"{job['step']}, {status} since"
                why = f"{job['candidate']} was already trained by {family} on exactly these data ({done})"
                _event(conn, self.run_id, "up-to-date", why + self._retire(job["revision"]), job["candidate"])
                return {
                    "status": "up-to-date",
                    "run_id": self.run_id,
                    "candidate": job["candidate"],
                    "step": job["step"],
                }
            _event(
                conn, self.run_id, "resume", f"resuming {job['candidate']} after step {job['step']}", job["candidate"]
            )
        if dry_run:
            _event(conn, self.run_id, "dry-run", f"would resume {job['candidate']} after step {job['step']}")
            return {"status": "dry-run", "run_id": self.run_id, "candidate": job["candidate"], "step": job["step"]}
        return self._continue(key, get_version(conn, job["candidate"]), job, resumed)

    def _supersede(self, key: str) -> None:
        """Close the jobs that stopped after their deploy (gated again since, maybe), before their rollout,
        under another key: the data changed since (or another model is retrained), so no run
        computes their key again to resume them, and their green revision, never in a traffic
        block, would run until the stack stops, beside this job's (more than two inference
        revisions). A job that stopped before its deploy holds no revision, and its gated
        candidate (``--no-deploy``) may be meant for a rollout by hand: it is left as it is.
        Each one's revision is retired first, then its candidate and a ``superseded`` event in
        one transaction: the candidate's retirement closes the job (its step stays; were its key
        computed again, it would answer "up-to-date"). A job whose candidate has a rollout is
        left to that rollout. Interrupted, the next run does it again: retiring a revision that
        is gone retires nothing, and the job is found as long as its candidate is one. A job
        with a revision waits for a run that can retire it (one that deploys)."""
        conn = self.conn
        jobs = conn.execute(
            """SELECT j.candidate, j.step, j.revision FROM retrain_jobs j
               JOIN model_versions v ON v.id = j.candidate AND v.status = 'candidate'
               WHERE j.key <> %s AND j.step IN ('gated', 'deployed') AND j.revision IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM rollouts r
                                 WHERE r.green_model_version = j.candidate OR r.green_revision = j.revision)
               ORDER BY j.created_at""",
            (key,),
        ).fetchall()
        conn.commit()
        for candidate, step, revision in jobs:
            if revision is not None and self.deployer is None:
                continue
            retired = self._retire(revision)
            conn.execute(PROMOTE_LOCK)  # a promotion of it by hand meanwhile stands
            if get_version(conn, candidate).status == "candidate":
                why = f"superseded by retraining run {self.run_id}, on newer data or of another model"
                set_status(conn, candidate, "retired", why)
                retrain_events.record(
                    conn,
                    self.run_id,
                    "superseded",
                    f"retired {candidate}, whose job (other data or another model) stopped after {step}{retired}",
                    None,  # the run's candidate is the one it trains (retrain_events.recent_runs)
                    {"candidate": candidate, "revision": revision},
                )
            conn.commit()

    def _continue(self, key, version: ModelVersion, job, resumed: bool) -> dict[str, Any]:
        conn, out = self.conn, {"run_id": self.run_id, "candidate": version.id, "resumed": resumed}
        if not resumed and (why := _rollout_under_way(conn)):
            # one started while this job trained: it resumes here, at the gates, once that has ended
            _event(conn, self.run_id, "skipped", why, version.id)
            return {**out, "status": "skipped", "reason": why}
        while (outcome := self._judge_and_deploy(key, version, job, out)) is None:
            # what serves changed between the gates and the rollout's start: judged again, against it
            version, job = get_version(conn, version.id), _read_job(conn, key)
        return outcome

    def _judge_and_deploy(self, key, version: ModelVersion, job, out: dict[str, Any]) -> dict[str, Any] | None:
        """Gate the candidate (again, where what serves changed since its gates), deploy it and start
        its rollout, each step unless done; the outcome, or None when what serves changed between
        the gates and the rollout's start."""
        conn = self.conn
        serving = serving_version(conn)  # now: another may have been promoted while this job trained
        gated_against = (version.gate_report or {}).get("serving")
        if job["step"] in ("gated", "deployed") and gated_against != (serving.id if serving else None):
            # gated against a model that no longer serves (a rollout ended since): gate it again
            why = f"{version.id} was gated against {gated_against}, {serving.id if serving else 'none'} serves now"
            _event(conn, self.run_id, "regate", why, version.id)
            job = {**job, "step": "trained"}
        gated_here = job["step"] == "trained"
        if gated_here:
            report = gate_candidate(conn, version, serving, policy=self.gate_policy)
            step = "gated" if report["passed"] else "gates-failed"
            _advance(conn, key, step)  # the gate report and the step, together
            if not report["passed"]:
                why = "; ".join(report["failures"][:5])
                _event(
                    conn,
                    self.run_id,
                    "gates-failed",
                    f"not {'rolled out' if job['revision'] else 'deployed'}: {why}" + self._retire(job["revision"]),
                    version.id,
                    {"failures": report["failures"]},
                )
                return {**out, "status": "gates-failed", "failures": report["failures"]}
            gated_against = report["serving"]
            _event(
                conn,
                self.run_id,
                "gates-passed",
                f"{version.id} passed the gates against {gated_against}",
                version.id,
            )
            job = _read_job(conn, key)
        if self.deployer is None:
            if not gated_here:  # every run that does its work ends on an outcome row (retrain_events.OUTCOMES)
                why = f"{version.id} passed the gates against {gated_against} in an earlier run; not deployed"
                _event(conn, self.run_id, "gates-passed", why, version.id)
            return {**out, "status": "gates-passed"}
        deployed_here = job["step"] == "gated"
        if deployed_here:
            revision = self.deployer.deploy(version)
            _advance(conn, key, "deployed", revision=revision)
            _event(conn, self.run_id, "deployed", f"green revision {revision} at 0% serves {version.id}", version.id)
            job = _read_job(conn, key)
        out["revision"] = job["revision"]
        if self.start_rollout is None:
            if not deployed_here:
                why = f"green revision {job['revision']} serves {version.id}, deployed in an earlier run"
                _event(conn, self.run_id, "deployed", why, version.id)
            return {**out, "status": "deployed", "rollout": None}
        rollout_id = _existing_rollout(conn, version.id, job["revision"])
        if rollout_id is None:
            if not deployed_here:  # deployed by a run that stopped before its rollout: the revision may
                # have gone since (a restart of `pefm up` retires them all); deploying again is idempotent
                _advance(conn, key, "deployed", revision=self.deployer.deploy(version))
                job = _read_job(conn, key)
            rollout_id = self._start(job["revision"], version, gated_against)
            if rollout_id is None:
                return None
        _advance(conn, key, "rollout-started", rollout_id=rollout_id)
        _event(
            conn,
            self.run_id,
            "rollout-started",
            f"rollout {rollout_id} of {job['revision']}",
            version.id,
            {"rollout": rollout_id},
        )
        return {**out, "status": "deployed", "rollout": rollout_id}

    def _start(self, revision: str, version: ModelVersion, gated_against: str | None) -> Any:
        """The candidate's rollout, started only while the version its gates judged it against
        serves (None when another does: it is to be gated again). Started otherwise, the rollout
        would wait at 0% for gates nobody runs (``registry.candidate_verdict``), this job standing
        aside for it, until ``max_wait_seconds`` rolled it back and rejected the candidate. The
        check and the start hold the registry's PROMOTE_LOCK: no promotion or rollback settles in
        between, and the start supersedes the last rollout, whose grace-period rollback could
        otherwise restore the version before it. (A rollback already waiting for the lock holds
        that rollout's write lock, which the start then waits for in vain: RolloutBusy, and the
        next run gates again.)"""
        conn = self.conn
        conn.commit()  # the lock is held to the end of a transaction of its own
        with conn.transaction():
            conn.execute(PROMOTE_LOCK)
            if serving_id(conn) != gated_against:
                return None
            return self.start_rollout(revision, version)

    def _retire(self, revision: str | None) -> str:
        """As a job ends without a rollout (its candidate failed gates run again, was rejected,
        retired or promoted since, or is superseded), retire the green revision it deployed if that
        takes no traffic: the sweep retires only revisions that left a traffic block, and this one
        would run until the stack stops. Words for the run's outcome ('' when none was retired)."""
        if revision is None or self.deployer is None or not self.deployer.retire(revision):
            return ""
        return f"; its green revision {revision}, in no traffic block, retired"


def job_key(family: str, params: dict[str, Any], series_ids: list[str], spec: BacktestSpec, digest: str) -> str:
    """What identifies a retraining job: the model, what it is trained and backtested on."""
    what = {"family": family, "params": params, "series": list(series_ids), "spec": asdict(spec), "data": digest}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _read_job(conn: psycopg.Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT step, candidate, revision, rollout_id FROM retrain_jobs WHERE key = %s", (key,)
    ).fetchone()
    return dict(zip(("step", "candidate", "revision", "rollout_id"), row, strict=True)) if row else None


def _advance(conn: psycopg.Connection, key: str, step: str, **columns: Any) -> None:
    sets = "".join(f", {name} = %({name})s" for name in columns)
    conn.execute(
        f"UPDATE retrain_jobs SET step = %(step)s, updated_at = now(){sets} WHERE key = %(key)s",
        {"step": step, "key": key, **columns},
    )
    conn.commit()


def _rollout_under_way(conn: psycopg.Connection) -> str | None:
    """Why a retraining stands aside now (a rollout under way), or None."""
    active = conn.execute(f"SELECT id, service FROM rollouts WHERE {UNFINISHED} ORDER BY id DESC LIMIT 1").fetchone()
    return None if active is None else f"rollout {active[0]} of {active[1]} is under way: retrain once it has ended"


def _existing_rollout(conn: psycopg.Connection, version_id: str, revision: str) -> int | None:
    """A rollout already started for this candidate's revision (by a run that crashed after it)."""
    row = conn.execute(
        "SELECT max(id) FROM rollouts WHERE green_model_version = %s AND green_revision = %s", (version_id, revision)
    ).fetchone()
    return row[0]


def _event(conn: psycopg.Connection, *step: Any) -> None:
    """``retrain_events.record`` (run id, step, reason[, candidate, details]), committed at once."""
    retrain_events.record(conn, *step)
    conn.commit()


class LocalDeployer:
    """A new revision process of the local runtime (reused when it already runs)."""

    def __init__(self, runtime, env: dict[str, str] | None = None):
        """``env``: extra environment for the revision (e.g. PEFM_LOG_LEVEL)."""
        self.runtime = runtime
        self.env = env or {}

    def deploy(self, version: ModelVersion) -> str:
        from pefm.local.runtime import revision_alive, stop_revision

        revision = revision_name("inference", version.id)
        with psycopg.connect(self.runtime.database_url) as conn:
            row = conn.execute(
                "SELECT pids FROM local_revisions WHERE service = 'inference' AND revision = %s", (revision,)
            ).fetchone()
        if row is None or not all(revision_alive(pid, revision) for pid in row[0]):
            stop_revision(row[0] if row else [], revision)  # a replica died: the revision starts again whole
            self.runtime.start_revision("inference", revision, model_version=version.id, env=self.env)
        return revision

    def retire(self, revision: str) -> bool:
        """``Deployer.retire``: the local router's retirement of a revision never routed, checked
        under its retire lock, on a pool of its own."""
        from pefm.rollout.local import LocalRouter

        with Database(self.runtime.database_url, max_size=1) as db:
            return LocalRouter(db, {}).retire_never_routed("inference", revision)  # it routes nothing: no URL


class ClusterDeployer:
    """A template change of the Knative Service serving the candidate: Knative creates and names
    the revision, and Flagger canaries it (it starts the rollout itself)."""

    def __init__(self, cluster, service: str = "inference", image: str | None = None):
        """``service``: the PEFM service (its Knative Service is ``knative_service(service)``)."""
        self.cluster = cluster
        self.service = service
        self.image = image

    def deploy(self, version: ModelVersion) -> str:
        name = knative_service(self.service)
        return self.cluster.wait_for_revision(name, self.cluster.deploy(name, version.id, self.image))

    def retire(self, revision: str) -> bool:
        """Never: a Knative revision that takes no traffic scales to zero, and Knative's garbage
        collection deletes it by its own policy."""
        return False
