"""Where a rollout's state lives: its row (``rollouts``), its events (``rollout_events``), and the
names of the advisory locks that serialise who writes them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pefm.rollout.analysis import Observations, Phase, State
from pefm.rollout.router import TrafficTarget, blue_green, sole
from pefm.rollout.spec import RolloutSpec

LOCK = "pefm.rollout:"  # + "tick:<id>" (one controller ticks it), "write:<id>" (state and routing)


class RolloutError(ValueError):
    """A rollout operation that cannot be done (unknown id, nothing to roll out, ...)."""


@dataclass(frozen=True)
class Rollout:
    id: int
    service: str
    blue_revision: str
    green_revision: str
    green_model_version: str | None
    blue_model_version: str | None
    spec: RolloutSpec
    state: State
    generation: int
    routed_generation: int
    step_started_at: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    finalized_at: datetime | None
    engine: str = "local"
    """``local`` (PEFM's controller over the local router) or ``flagger`` (a cluster's Canary)."""
    canary: str | None = None
    """``<namespace>/<name>`` of the Flagger Canary (flagger rollouts)."""

    @property
    def winner(self) -> str:
        """The revision that keeps the traffic once the rollout is over."""
        return self.green_revision if self.state.phase is Phase.SUCCEEDED else self.blue_revision

    @property
    def loser(self) -> str:
        return self.blue_revision if self.winner == self.green_revision else self.green_revision

    @property
    def traffic(self) -> list[TrafficTarget]:
        """The traffic block this rollout wants now."""
        if self.finalized_at is not None:
            return sole(self.winner)
        return blue_green(self.blue_revision, self.green_revision, self.state.weight)


def read_rollout(conn: psycopg.Connection, rollout_id: int) -> Rollout:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM rollouts WHERE id = %s", (rollout_id,)).fetchone()
    if row is None:
        raise RolloutError(f"no rollout {rollout_id}")
    state = State(Phase(row.pop("phase")), row.pop("step"), row.pop("weight"), row.pop("failed_checks"))
    # a rollout started before max_wait_seconds existed waits as it was started to: for ever
    spec = RolloutSpec.from_dict({"max_wait_seconds": None, **row.pop("spec")})
    return Rollout(spec=spec, state=state, **row)


def is_newest(conn: psycopg.Connection, rollout: Rollout) -> bool:
    """Whether this is its service's latest rollout (only that one may steer the service)."""
    latest = conn.execute("SELECT max(id) FROM rollouts WHERE service = %s", (rollout.service,)).fetchone()[0]
    return latest == rollout.id


UNFINISHED = "phase NOT IN ('Succeeded', 'Failed', 'RolledBack')"
"""SQL: a rollout not yet at an end."""


def last_event(conn: psycopg.Connection, rollout_id: int, action: str | None = None) -> tuple[str, str] | None:
    """The (action, reason) of a rollout's last event, or of its last ``action`` event; None when
    there is none."""
    row = conn.execute(
        """SELECT action, reason FROM rollout_events WHERE rollout_id = %s AND (%s::text IS NULL OR action = %s)
           ORDER BY id DESC LIMIT 1""",
        (rollout_id, action, action),
    ).fetchone()
    return (row[0], row[1]) if row else None


def waited_seconds(conn: psycopg.Connection, rollout: Rollout) -> float:
    """How long the rollout's analysis has gone without judging (``spec.max_wait_seconds``): since
    its window began (``step_started_at``) or an operator last resumed it, whichever is later. A
    pause is no wait: counted, a rollout paused for longer than the limit in a quiet hour was rolled
    back, its candidate rejected, at the first analysis after its resume."""
    resumed = conn.execute(
        "SELECT max(ts) FROM rollout_events WHERE rollout_id = %s AND action = 'resume'", (rollout.id,)
    ).fetchone()[0]
    since = max(rollout.step_started_at, resumed) if resumed is not None else rollout.step_started_at
    return (datetime.now(UTC) - since).total_seconds()


def record_event(conn, rollout_id: int, action: str, state: State, reason: str, checks=None, obs=None) -> None:
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
            Jsonb(_finite(checks or [])),
            Jsonb(_finite(observations_json(obs))),
        ),
    )


def _finite(value: Any) -> Any:
    """``value`` with every non-finite number as null: JSON has none (a divergence is infinite
    when green refused what blue answered; the event's reason says so)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def observations_json(obs: Observations | None) -> dict[str, Any]:
    if obs is None:
        return {}
    return {
        "requests": obs.requests,
        "metrics": obs.metrics,
        "smoke_ok": obs.smoke_ok,
        "gates_passed": obs.gates_passed,
    }
