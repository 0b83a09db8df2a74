"""The retraining log (``retrain_events``): every step of every retraining run, and the drift
monitor's requests for one. A run is the rows of one ``run_id``; a request is a run of a single
``requested`` row, which the next run started with ``--if-requested`` answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

LOCK = "pefm.retrain"
"""The advisory lock a retraining holds while it runs (single-flight)."""
REQUESTED = "requested"
"""The step of the monitor's request for a retraining (it starts the cool-down, as training does)."""
OUTCOMES = ("up-to-date", "gates-failed", "gates-passed", "deployed", "rollout-started")
"""The steps a run that did its work ends on. A run that stood aside, was a dry run, failed or
stopped part-way (killed) ends on none of them."""
ANSWERS = ("up-to-date", "gates-failed", "deployed", "rollout-started")
"""The outcomes that answer the monitor's request: the candidate judged and, once it passed, deployed.
A run that ends on ``gates-passed`` (``pefm retrain --no-deploy``, its ``start`` row's details
``{"deploy": false}``) leaves it pending, as a dry run does: had it answered, the candidate it gated
would never have been deployed, and the same evidence is not asked about again
(``drift.monitor.due_for_retraining``). One killed between its gates and its deploy is counted."""
ENDINGS = (*OUTCOMES, "skipped", "dry-run", "failed")
"""The steps a run that returned ends on (a run whose last step is another is running, or was
killed): the Drift page's last word on a run."""
ATTEMPTS = 3
"""Runs that started (dry runs and ``--no-deploy`` runs aside), or failed, after a request and left
it unanswered, before it is given up."""


def record(
    conn: psycopg.Connection,
    run_id: str,
    step: str,
    reason: str,
    candidate: str | None = None,
    details: dict | None = None,
) -> None:
    """One step of a run, in the caller's transaction."""
    conn.execute(
        "INSERT INTO retrain_events (run_id, step, reason, candidate, details) VALUES (%s, %s, %s, %s, %s)",
        (run_id, step, reason, candidate, Jsonb(details or {})),
    )


def cool_down_since(conn: psycopg.Connection) -> datetime | None:
    """When a retraining last trained a candidate, or the monitor last requested one: the cool-down
    runs from there. Runs that trained nothing (their job up-to-date, a dry run, standing aside)
    do not count, or the daily scheduled run would hold every request of the monitor back."""
    return conn.execute(f"SELECT max(ts) FROM retrain_events WHERE step IN ('trained', '{REQUESTED}')").fetchone()[0]


def last_request(conn: psycopg.Connection) -> dict[str, Any]:
    """What the monitor's latest request was made on (its ``details``: the version that breached
    and each drifted series' data hash), {} when there is none."""
    row = conn.execute(
        f"SELECT details FROM retrain_events WHERE step = '{REQUESTED}' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return row[0] or {} if row else {}


class Request(NamedTuple):
    """A request of the drift monitor for a retraining: when, why, how many runs started since
    without answering it, and the latest run since that stood aside before starting (when, why)."""

    at: datetime
    reason: str
    attempts: int
    stood_aside: tuple[datetime, str] | None = None

    def describe(self) -> str:
        """One line for an operator: why and when it was made, and what became of it so far."""
        line = f"{self.reason} ({self.at:%Y-%m-%d %H:%M} UTC)"
        if self.attempts >= ATTEMPTS:
            line += f"; given up after {self.attempts} runs left it unanswered"
        elif self.attempts:
            line += f"; {self.attempts} run(s) since left it unanswered"
        if self.stood_aside:
            at, why = self.stood_aside
            line += f"; the latest run stood aside at {at:%Y-%m-%d %H:%M} UTC: {why}"
        return line


_STOOD_ASIDE = "NOT EXISTS (SELECT 1 FROM retrain_events o WHERE o.run_id = s.run_id AND o.step <> 'skipped')"
"""SQL: the run of row ``s`` is a lone ``skipped`` row, a run that stood aside before starting
(another retraining ran, or a rollout was under way). On a cluster a pending request adds one every
quarter of an hour while it waits."""


def pending_request(conn: psycopg.Connection) -> Request | None:
    """The drift monitor's latest request for a retraining that no run started since has answered,
    or None. A run answers it when it ends on one of ``ANSWERS``; one that stood aside (another
    running, a rollout under way), was a dry run or did not deploy (``--no-deploy``), failed or
    stopped part-way (killed) leaves it pending for the next, until ``ATTEMPTS`` runs that started
    or failed since it have left it so: then it is given up (a run that fails every time would
    otherwise be retried every quarter of an hour, for good). Dry runs, runs that did not deploy
    and runs that stood aside before starting are not counted (asking what a retraining would do
    changes nothing); the latest to stand aside is named. A request
    about a version that no longer serves (promoted away, or rolled out, since) is superseded:
    the version serving now was never checked, and a retraining of it would answer nothing."""
    request = _unanswered(conn)
    return request if request is not None and request.attempts < ATTEMPTS else None


def given_up_request(conn: psycopg.Connection) -> Request | None:
    """The drift monitor's latest request when ``ATTEMPTS`` runs left it unanswered and it was given
    up (None otherwise): the breach it was made on is asked about again after the cool-down."""
    request = _unanswered(conn)
    return request if request is not None and request.attempts >= ATTEMPTS else None


def _unanswered(conn: psycopg.Connection) -> Request | None:
    """The latest request of a version that serves that no run answered, with its attempts."""
    row = conn.execute(
        f"""WITH request AS (
                SELECT r.ts, r.reason FROM retrain_events r
                WHERE r.step = '{REQUESTED}'
                  AND (r.details ->> 'model_version' IS NULL  -- made before requests named their version
                       OR EXISTS (SELECT 1 FROM model_versions v
                                  WHERE v.id = r.details ->> 'model_version' AND v.status = 'serving'))
                  AND NOT EXISTS (
                      SELECT 1 FROM retrain_events s
                      WHERE s.step = 'start' AND s.ts >= r.ts
                        AND (SELECT o.step FROM retrain_events o WHERE o.run_id = s.run_id ORDER BY o.id DESC LIMIT 1)
                            = ANY(%s)
                  )
                ORDER BY r.ts DESC LIMIT 1
            )
            SELECT request.ts, request.reason,
                   (SELECT count(DISTINCT run_id) FROM retrain_events s
                    WHERE s.step IN ('start', 'failed') AND s.ts >= request.ts
                      AND NOT EXISTS (SELECT 1 FROM retrain_events o WHERE o.run_id = s.run_id
                                      AND (o.step = 'dry-run' OR o.details ->> 'deploy' = 'false'))),
                   aside.ts, aside.reason
            FROM request LEFT JOIN LATERAL (
                SELECT s.ts, s.reason FROM retrain_events s
                WHERE s.step = 'skipped' AND s.ts >= request.ts AND {_STOOD_ASIDE}
                ORDER BY s.id DESC LIMIT 1
            ) aside ON true""",
        (list(ANSWERS),),
    ).fetchone()
    if row is None:
        return None
    aside = (row[3].astimezone(UTC), row[4]) if row[3] is not None else None
    return Request(row[0].astimezone(UTC), row[1], row[2], aside)


def run_steps(conn: psycopg.Connection, run_id: str) -> list[tuple[str, str]]:
    """One run's steps and their reasons, in order."""
    return conn.execute("SELECT step, reason FROM retrain_events WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()


def recent_runs(conn: psycopg.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` runs and requests, newest first: when each began, its steps in order,
    the first step's reason (why it ran), the last step's (``ended``) and its candidate. Runs that
    stood aside before starting are left out (``Request.stood_aside`` names the latest): one waiting
    request behind a rollout of a few hours would push every real run out of the list."""
    rows = conn.execute(
        f"""WITH runs AS (
               SELECT run_id, min(id) AS first FROM retrain_events s
               WHERE NOT (s.step = 'skipped' AND {_STOOD_ASIDE})
               GROUP BY run_id ORDER BY first DESC LIMIT %s
           )
           SELECT e.run_id, e.ts, e.step, e.reason, e.candidate
           FROM retrain_events e JOIN runs USING (run_id)
           ORDER BY runs.first DESC, e.id""",
        (limit,),
    ).fetchall()
    runs: dict[str, dict[str, Any]] = {}
    for run_id, ts, step, reason, candidate in rows:
        run = runs.setdefault(run_id, {"started": ts, "steps": [], "why": reason, "candidate": None})
        run["steps"].append(step)
        run["ended"] = reason
        run["candidate"] = candidate or run["candidate"]
    return list(runs.values())
