"""The retraining job: candidate on data as of now -> backtest -> gates vs serving -> register ->
(only if it passes) a green revision at 0% and a rollout.

Single-flight: an advisory lock; a second job finds it taken and records that it stood aside.
Idempotent: a candidate already trained by the same model on exactly the same data is not
trained again. Every step is a ``retrain_events`` row with its reason. Registration is one
INSERT, so a crash at any point leaves either a whole candidate or none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.gates import evaluate, load_policy
from pefm.forecasting.models import DEFAULT_MODEL
from pefm.forecasting.panel import MACRO_PANEL, load_panel
from pefm.forecasting.training import data_sha256, train
from pefm.rollout.router import knative_service, revision_name
from pefm.storage.database import Database
from pefm.storage.model_versions import ModelVersion, list_versions, serving_for, set_gate_report

LOCK = "pefm.retrain"


class Deployer(Protocol):
    def deploy(self, version: ModelVersion) -> str:
        """Create the green revision serving ``version`` at 0%; its name."""


def retrain(
    db: Database,
    *,
    model: str = DEFAULT_MODEL,
    spec: BacktestSpec | None = None,
    deployer: Deployer | None = None,
    start_rollout: Callable[[str, ModelVersion], Any] | None = None,
    dry_run: bool = False,
    reason: str = "requested",
    gate_policy=None,
) -> dict[str, Any]:
    """Run the job once; returns its outcome (``status`` and what it produced)."""
    spec = spec or BacktestSpec(h=1, windows=40)
    run_id = uuid.uuid4().hex[:12]
    with db.connection() as lock:
        lock.autocommit = True
        if not lock.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (LOCK,)).fetchone()[0]:
            with db.connection() as conn:
                _event(conn, run_id, "skipped", "another retraining is running")
            return {"status": "skipped", "run_id": run_id, "reason": "another retraining is running"}
        try:
            with db.connection() as conn:
                return _run(conn, run_id, model, spec, deployer, start_rollout, dry_run, reason, gate_policy)
        finally:
            lock.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (LOCK,))


def _run(conn, run_id, model, spec, deployer, start_rollout, dry_run, reason, gate_policy) -> dict[str, Any]:
    serving = list_versions(conn, status="serving")
    ids = serving[0].series_ids if serving else list(MACRO_PANEL)
    _event(conn, run_id, "start", f"retraining {model} on {len(ids)} series: {reason}")
    digest = data_sha256(load_panel(conn, ids))
    same = conn.execute(
        "SELECT id FROM model_versions WHERE family = %s AND data_sha256 = %s AND series_ids = %s", (model, digest, ids)
    ).fetchone()
    if same:
        _event(conn, run_id, "up-to-date", f"{same[0]} was already trained by {model} on exactly these data", same[0])
        return {"status": "up-to-date", "run_id": run_id, "candidate": same[0]}
    if dry_run:
        _event(conn, run_id, "dry-run", f"would train {model}, backtest {spec.windows} windows and gate it")
        return {"status": "dry-run", "run_id": run_id}
    version, _ = train(conn, model, ids, spec=spec)
    conn.commit()
    _event(conn, run_id, "trained", f"registered candidate {version.id}", version.id)
    current = serving_for(conn, ids)
    report = evaluate(
        load_policy(gate_policy),
        version.backtest["metrics"],
        current.backtest["metrics"] if current and current.backtest else None,
        candidate_id=version.id,
        serving_id=current.id if current else None,
    )
    set_gate_report(conn, version.id, report)
    conn.commit()
    if not report["passed"]:
        why = "; ".join(report["failures"][:5])
        _event(conn, run_id, "gates-failed", f"not deployed: {why}", version.id, {"failures": report["failures"]})
        return {"status": "gates-failed", "run_id": run_id, "candidate": version.id, "failures": report["failures"]}
    _event(conn, run_id, "gates-passed", f"{version.id} passed the gates against {report['serving']}", version.id)
    if deployer is None:
        return {"status": "gates-passed", "run_id": run_id, "candidate": version.id}
    revision = deployer.deploy(version)
    _event(conn, run_id, "deployed", f"green revision {revision} at 0% serves {version.id}", version.id)
    rollout_id = start_rollout(revision, version) if start_rollout else None
    if rollout_id is not None:
        _event(
            conn, run_id, "rollout-started", f"rollout {rollout_id} of {revision}", version.id, {"rollout": rollout_id}
        )
    return {
        "status": "deployed",
        "run_id": run_id,
        "candidate": version.id,
        "revision": revision,
        "rollout": rollout_id,
    }


def _event(
    conn: psycopg.Connection,
    run_id: str,
    step: str,
    reason: str,
    candidate: str | None = None,
    details: dict | None = None,
) -> None:
    conn.execute(
        "INSERT INTO retrain_events (run_id, step, reason, candidate, details) VALUES (%s, %s, %s, %s, %s)",
        (run_id, step, reason, candidate, Jsonb(details or {})),
    )
    conn.commit()


class LocalDeployer:
    """A new revision process of the local runtime."""

    def __init__(self, runtime):
        self.runtime = runtime

    def deploy(self, version: ModelVersion) -> str:
        revision = revision_name("inference", version.id)
        self.runtime.start_revision("inference", revision, model_version=version.id)
        return revision


class KnativeDeployer:
    """A new BYO-named revision of the Knative Service at 0% under the green tag."""

    def __init__(self, router, service: str = "inference", image: str | None = None):
        """``service``: the PEFM service (its Knative Service is ``knative_service(service)``)."""
        self.router = router
        self.service = service
        self.image = image

    def deploy(self, version: ModelVersion) -> str:
        revision = revision_name(self.service, version.id)
        self.router.create_green(knative_service(self.service), revision, version.id, self.image)
        return revision
