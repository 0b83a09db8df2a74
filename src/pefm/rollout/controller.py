"""The rollout controller: applies the analysis' decisions and persists every transition.

All state is in the ``rollouts`` row; a tick (1) makes the router match the stored weight
(idempotent, so a crash between saving and routing heals), (2) observes, (3) decides, (4) saves
the new state and its event in one transaction, (5) routes. A controller killed at any point
and started again resumes from the row: no step is skipped or repeated. A per-rollout advisory
lock keeps two controllers from ticking the same rollout at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pefm.rollout.analysis import TERMINAL, Decision, Observations, Phase, State, decide
from pefm.rollout.providers import MetricsProvider
from pefm.rollout.router import TrafficRouter, blue_green, serving_revision
from pefm.rollout.spec import RolloutSpec
from pefm.storage.database import Database

log = logging.getLogger(__name__)
LOCK = "pefm.rollout:"


class RolloutError(ValueError):
    """A rollout operation that cannot be done (unknown id, nothing to roll out, ...)."""


@dataclass(frozen=True)
class Rollout:
    id: int
    service: str
    blue_revision: str
    green_revision: str
    green_model_version: str | None
    spec: RolloutSpec
    state: State
    step_started_at: datetime
    created_at: datetime
    updated_at: datetime


class RolloutController:
    def __init__(self, db: Database, router: TrafficRouter, provider: MetricsProvider, prober: Any):
        self.db = db
        self.router = router
        self.provider = provider
        self.prober = prober

    # -- lifecycle -------------------------------------------------------------------------------
    def start(
        self, service: str, green_revision: str, spec: RolloutSpec, green_model_version: str | None = None
    ) -> int:
        """Begin moving ``service`` from its serving revision (blue) to ``green_revision``."""
        blue = serving_revision(self.router.traffic(service))
        if blue is None:
            raise RolloutError(f"{service} has no serving revision to roll out from")
        if blue == green_revision:
            raise RolloutError(f"{green_revision} is already serving {service}")
        with self.db.connection() as conn, conn.transaction():
            rollout_id = conn.execute(
                """INSERT INTO rollouts (service, blue_revision, green_revision, green_model_version, spec, phase,
                                         step, weight) VALUES (%s, %s, %s, %s, %s, %s, -1, 0) RETURNING id""",
                (service, blue, green_revision, green_model_version, Jsonb(spec.to_dict()), Phase.INITIALIZING.value),
            ).fetchone()[0]
            self._event(conn, rollout_id, "start", State(), f"rollout of {green_revision} (blue: {blue}) started")
        self.router.set_traffic(service, blue_green(blue, green_revision, 0))
        return rollout_id

    def get(self, rollout_id: int) -> Rollout:
        with self.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM rollouts WHERE id = %s", (rollout_id,)).fetchone()
        if row is None:
            raise RolloutError(f"no rollout {rollout_id}")
        state = State(Phase(row.pop("phase")), row.pop("step"), row.pop("weight"), row.pop("failed_checks"))
        return Rollout(spec=RolloutSpec.from_dict(row.pop("spec")), state=state, **row)

    def events(self, rollout_id: int) -> list[dict[str, Any]]:
        with self.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM rollout_events WHERE rollout_id = %s ORDER BY id", (rollout_id,)
            ).fetchall()

    def active(self) -> list[int]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM rollouts WHERE phase NOT IN ('Succeeded', 'Failed', 'RolledBack') ORDER BY id"
            ).fetchall()
        return [r[0] for r in rows]

    # -- the loop --------------------------------------------------------------------------------
    def tick(self, rollout_id: int) -> Decision | None:
        """One analysis step; None when another controller holds this rollout right now."""
        with self.db.connection() as lock_conn:
            lock_conn.autocommit = True
            if not lock_conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"{LOCK}{rollout_id}",)
            ).fetchone()[0]:
                return None
            try:
                return self._tick(rollout_id)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"{LOCK}{rollout_id}",))
                lock_conn.autocommit = False

    def _tick(self, rollout_id: int) -> Decision:
        rollout = self.get(rollout_id)
        if rollout.state.phase in TERMINAL:
            return Decision("hold", rollout.state, f"rollout is {rollout.state.phase.value}")
        self._route(rollout, rollout.state.weight)
        observations = self._observe(rollout)
        decision = decide(rollout.spec, rollout.state, observations)
        self._save(rollout, decision, observations)
        self._route(rollout, decision.state.weight)
        return decision

    def run(self, rollout_id: int, stop: threading.Event | None = None, max_ticks: int | None = None) -> State:
        """Tick every ``spec.interval_seconds`` until the rollout finishes (or ``stop`` is set)."""
        stop = stop or threading.Event()
        ticks = 0
        while not stop.is_set():
            decision = self.tick(rollout_id)
            ticks += 1
            if decision is not None and decision.state.phase in TERMINAL:
                return decision.state
            if max_ticks is not None and ticks >= max_ticks:
                break
            stop.wait(self.get(rollout_id).spec.interval_seconds)
        return self.get(rollout_id).state

    # -- operators -------------------------------------------------------------------------------
    def promote(self, rollout_id: int, reason: str = "promoted by an operator") -> State:
        return self._manual(rollout_id, "promote", lambda s: replace(s, phase=Phase.SUCCEEDED, weight=100), reason)

    def rollback(self, rollout_id: int, reason: str = "rolled back by an operator") -> State:
        return self._manual(
            rollout_id, "rollback", lambda s: replace(s, phase=Phase.ROLLED_BACK, weight=0), reason, allow_terminal=True
        )

    def pause(self, rollout_id: int, reason: str = "paused by an operator") -> State:
        return self._manual(rollout_id, "pause", lambda s: replace(s, phase=Phase.PAUSED), reason)

    def resume(self, rollout_id: int, reason: str = "resumed by an operator") -> State:
        def resumed(state: State) -> State:
            if state.phase is not Phase.PAUSED:
                raise RolloutError(f"rollout {rollout_id} is {state.phase.value}, not Paused")
            return replace(state, phase=Phase.PROGRESSING if state.step >= 0 else Phase.INITIALIZING)

        return self._manual(rollout_id, "resume", resumed, reason)

    def _manual(self, rollout_id: int, action: str, change, reason: str, allow_terminal: bool = False) -> State:
        rollout = self.get(rollout_id)
        if rollout.state.phase in TERMINAL and not (allow_terminal and rollout.state.phase is Phase.SUCCEEDED):
            raise RolloutError(f"rollout {rollout_id} is already {rollout.state.phase.value}")
        new = change(rollout.state)
        self._save(rollout, Decision(action, new, reason), None)
        self._route(rollout, new.weight)
        return new

    # -- internals -------------------------------------------------------------------------------
    def _observe(self, rollout: Rollout) -> Observations:
        spec, state = rollout.spec, rollout.state
        if state.phase is Phase.INITIALIZING:
            return Observations(
                smoke_ok=self.prober.smoke(rollout.service, spec.smoke_request),
                gates_passed=self._gates(rollout.green_model_version),
            )
        if state.phase is not Phase.PROGRESSING:
            return Observations()
        if spec.synthetic_load:
            self.prober.load(rollout.service, spec.synthetic_load, spec.smoke_request)
        metrics = self.provider.revision_metrics(rollout.green_revision, rollout.step_started_at)
        divergence = self.prober.divergence(
            rollout.service,
            (rollout.blue_revision, rollout.green_revision),
            rollout.step_started_at,
            spec.shadow_requests,
        )
        return Observations(
            requests=metrics.requests,
            metrics={
                "success_rate": metrics.success_rate,
                "p99_latency_ms": metrics.p99_latency_ms,
                "divergence": divergence,
            },
        )

    def _gates(self, model_version: str | None) -> bool | None:
        if model_version is None:
            return None
        with self.db.connection() as conn:
            row = conn.execute("SELECT gate_report FROM model_versions WHERE id = %s", (model_version,)).fetchone()
        return None if row is None or row[0] is None else bool(row[0]["passed"])

    def _route(self, rollout: Rollout, weight: int) -> None:
        wanted = blue_green(rollout.blue_revision, rollout.green_revision, weight)
        if self.router.traffic(rollout.service) != wanted:
            self.router.set_traffic(rollout.service, wanted)

    def _save(self, rollout: Rollout, decision: Decision, observations: Observations | None) -> None:
        new = decision.state
        moved = new.weight != rollout.state.weight
        with self.db.connection() as conn, conn.transaction():
            conn.execute(
                """UPDATE rollouts SET phase = %s, step = %s, weight = %s, failed_checks = %s, updated_at = now(),
                          step_started_at = CASE WHEN %s THEN now() ELSE step_started_at END
                   WHERE id = %s""",
                (new.phase.value, new.step, new.weight, new.failed_checks, moved, rollout.id),
            )
            last = conn.execute(
                "SELECT action, reason FROM rollout_events WHERE rollout_id = %s ORDER BY id DESC LIMIT 1",
                (rollout.id,),
            ).fetchone()
            if decision.action != "wait" or last != (decision.action, decision.reason):  # no repeated waits
                self._event(conn, rollout.id, decision.action, new, decision.reason, decision.checks, observations)
        log.info("rollout %s: %s (%s%% green): %s", rollout.id, decision.action, new.weight, decision.reason)

    @staticmethod
    def _event(conn, rollout_id: int, action: str, state: State, reason: str, checks=None, obs=None) -> None:
        conn.execute(
            """INSERT INTO rollout_events (rollout_id, action, phase, step, weight, failed_checks, reason, checks,
                                           observations) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                rollout_id,
                action,
                state.phase.value,
                state.step,
                state.weight,
                state.failed_checks,
                reason,
                Jsonb(checks or []),
                Jsonb(_observations(obs)),
            ),
        )


def _observations(obs: Observations | None) -> dict[str, Any]:
    if obs is None:
        return {}
    return {
        "requests": obs.requests,
        "metrics": obs.metrics,
        "smoke_ok": obs.smoke_ok,
        "gates_passed": obs.gates_passed,
    }
