"""The rollout controller: applies the analysis' decisions, persists every transition, keeps the
router and the registry in line with the stored state.

All state is in the ``rollouts`` row. A tick (1) reconciles: makes the router carry the stored
desired traffic, (2) observes what green served since its step began or since the last analysis
that judged the checks, whichever is later (``step_started_at`` moves to each such analysis: as
Flagger judges each interval on its own, a short burst of errors counts once, not at every
analysis until the weight moves), (3) decides, (4) saves the new state and its event in one
transaction, compare-and-set on the row's ``generation`` (a write based on a stale read is
refused), with the registry settled in that same transaction when the rollout ends, (5) routes
and records that the router reports it. Every state write and every routing change happens under
the rollout's write lock, which operator actions take too; a tick holds it only to save and
route, so an operator's rollback never waits for a slow observation, and a tick that observed
before the rollback finds its decision refused. A finished rollout keeps both revisions for a
grace period (rollback after a promotion is one call), then settles on the winner alone and the
loser's revision is retired. A controller killed at any point resumes from the row.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pefm.forecasting.registry import candidate_verdict, serving_id, settle_rollout
from pefm.rollout.analysis import TERMINAL, Decision, Observations, Phase, State, decide
from pefm.rollout.probes import GatedExpectation
from pefm.rollout.providers import MetricsProvider, RevisionMetrics
from pefm.rollout.router import TrafficRouter, same_traffic, serving_revision
from pefm.rollout.spec import RolloutSpec
from pefm.rollout.store import (
    LOCK,
    UNFINISHED,
    Rollout,
    RolloutError,
    is_newest,
    last_event,
    read_rollout,
    record_event,
    waited_seconds,
)
from pefm.storage.database import Database, LockBusy
from pefm.storage.model_versions import version_exists

__all__ = ["Rollout", "RolloutBusy", "RolloutConflict", "RolloutController", "RolloutError"]
log = logging.getLogger(__name__)


LOG_LAG = timedelta(seconds=2)
"""How far behind the moment they are read the request metrics' window ends: a revision's request
log is flushed every 0.25 s (``LogWriter``), so the last moments' requests are not all written yet
(Prometheus's windows are only as sharp as its scrapes, whatever their end)."""


def _write_lock(rollout_id: int) -> str:
    """The name of a rollout's write lock: held by a session (``_writing``), or by the transaction
    that starts the next rollout (``_blue``)."""
    return f"{LOCK}write:{rollout_id}"


class RolloutConflict(RolloutError):
    """The service already has an unfinished rollout."""

    def __init__(self, message: str, active_id: int):
        super().__init__(message)
        self.active_id = active_id


class RolloutBusy(RolloutError):
    """The rollout's write lock was not free within the lock timeout."""


class UnknownRevision(RolloutError):
    """The revision a rollout would move traffic to is not one of the service's, the model version
    named for it is not in the registry or not the one it serves, or the router does not route the
    service; ``field`` says which."""

    def __init__(self, message: str, field: str = "green_revision"):
        super().__init__(message)
        self.field = field


class RolloutController:
    def __init__(
        self,
        db: Database,
        router: TrafficRouter | None,
        provider: MetricsProvider,
        prober: Any,
        *,
        grace_seconds: float = 300.0,
        lock_timeout: float = 30.0,
    ):
        self.db = db
        self.router = router
        self.provider = provider
        self.prober = prober
        self.grace_seconds = grace_seconds
        self.lock_timeout = lock_timeout

    # -- lifecycle -------------------------------------------------------------------------------
    def start(
        self, service: str, green_revision: str, spec: RolloutSpec, green_model_version: str | None = None
    ) -> int:
        """Begin moving ``service`` from its serving revision (blue) to ``green_revision`` at 0%.
        RolloutConflict when the service already has an unfinished rollout."""
        if self.router is None:
            raise RolloutError("on a cluster Flagger starts rollouts: deploy a new template (pefm rollout deploy)")
        if not self.router.routes(service):  # its rollout could never be ticked, and would hold up retraining
            raise UnknownRevision(f"the router does not route {service!r}", "service")
        if not self.router.has_revision(service, green_revision):  # it would wait for it, holding the service
            raise UnknownRevision(f"{service} has no revision {green_revision!r}")
        pinned = self.router.revision_model_version(service, green_revision)
        if green_model_version is not None:  # named by the caller: a typo would hold the service for good
            with self.db.connection() as conn:
                known = version_exists(conn, green_model_version)
            if not known:
                raise UnknownRevision(f"no model version {green_model_version!r} in the registry", "model_version")
            if pinned is not None and pinned != green_model_version:  # the gates and the registry would judge
                # a model that takes no traffic, and promote it
                raise UnknownRevision(f"{green_revision} serves {pinned}, not {green_model_version}", "model_version")
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{LOCK}start:{service}",))
            active = conn.execute(f"SELECT id FROM rollouts WHERE service = %s AND {UNFINISHED}", (service,)).fetchone()
            if active:
                raise RolloutConflict(f"{service} already has rollout {active[0]} in progress", active[0])
            blue = self._blue(conn, service)
            if blue is None:
                raise RolloutError(f"{service} has no serving revision to roll out from")
            if blue == green_revision:
                raise RolloutError(f"{green_revision} is already serving {service}")
            green_model_version = (
                green_model_version
                or pinned
                or serving_id(conn)  # an unpinned revision serves the serving version (as Flagger takes it)
            )
            blue_model_version = self.router.revision_model_version(service, blue) or serving_id(conn)
            rollout_id = conn.execute(
                """INSERT INTO rollouts (service, blue_revision, green_revision, green_model_version,
                                         blue_model_version, spec, phase, step, weight)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, -1, 0) RETURNING id""",
                (
                    service,
                    blue,
                    green_revision,
                    green_model_version,
                    blue_model_version,
                    Jsonb(spec.to_dict()),
                    Phase.INITIALIZING.value,
                ),
            ).fetchone()[0]
            for previous, phase, step, weight, failed in conn.execute(  # a new generation: a write based
                # on what was read before (a tick's decision) is refused; routed: it routes nothing now
                """UPDATE rollouts SET finalized_at = now(), generation = generation + 1,
                                      routed_generation = generation + 1, updated_at = now()
                   WHERE service = %s AND id < %s AND finalized_at IS NULL
                   RETURNING id, phase, step, weight, failed_checks""",
                (service, rollout_id),
            ).fetchall():
                state = State(Phase(phase), step, weight, failed)
                record_event(conn, previous, "superseded", state, f"rollout {rollout_id} took over {service}")
            record_event(
                conn,
                rollout_id,
                "start",
                State(),
                f"rollout of {green_revision} ({green_model_version or 'model version unknown'}) from "
                f"{blue} ({blue_model_version or 'model version unknown'}) started",
            )
        try:
            self.reconcile(rollout_id)
        except Exception:  # the rollout is stored: the controller loop keeps routing until it holds
            log.exception("rollout %s: routing its start failed; the controller will retry", rollout_id)
        return rollout_id

    def _blue(self, conn: psycopg.Connection, service: str) -> str | None:
        """The revision a new rollout of ``service`` starts from: the one carrying the most traffic,
        once the last rollout's decision is routed (a rollback saved while the router failed would
        otherwise leave the rejected green carrying the traffic, and make it the next blue). Holds
        the last rollout's write lock to the end of ``conn``'s transaction, the one that settles
        it: an operator's rollback of it is routed before, or finds it settled after (one in
        between would restore blue's version while the new rollout starts from the green it
        rejected, and the revision that serves is stopped once its grace period is over)."""
        last = conn.execute("SELECT max(id) FROM rollouts WHERE service = %s", (service,)).fetchone()[0]
        if last is not None:
            conn.execute(f"SET LOCAL lock_timeout = '{max(1, math.ceil(self.lock_timeout * 1000))}ms'")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_write_lock(last),))
            except psycopg.errors.LockNotAvailable:
                raise RolloutBusy(f"rollout {last} is busy for over {self.lock_timeout:g} s; try again") from None
            conn.execute("SET LOCAL lock_timeout = DEFAULT")
            rollout = read_rollout(conn, last)
            if rollout.routed_generation < rollout.generation:
                try:
                    self._route(conn, rollout)
                except Exception as exc:  # the router failing again: a 503 to try later, not a 500
                    log.warning("rollout %s: routing its traffic failed again", last, exc_info=True)
                    why = f"rollout {last}'s traffic is not routed yet ({type(exc).__name__}: {exc}); try again"
                    raise RolloutBusy(why) from exc
        return serving_revision(self.router.traffic(service))

    def get(self, rollout_id: int) -> Rollout:
        with self.db.connection() as conn:
            return read_rollout(conn, rollout_id)

    def events(self, rollout_id: int) -> list[dict[str, Any]]:
        with self.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM rollout_events WHERE rollout_id = %s ORDER BY id", (rollout_id,)
            ).fetchall()

    def active(self, service: str | None = None) -> list[int]:
        """Unfinished rollouts (of ``service``), oldest first."""
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT id FROM rollouts WHERE {UNFINISHED} AND (%(s)s::text IS NULL OR service = %(s)s) ORDER BY id",
                {"s": service},
            ).fetchall()
        return [r[0] for r in rows]

    def pending(self) -> list[int]:
        """What the controller loop must tick: unfinished local rollouts, and each service's newest
        finished one until its traffic is routed and its grace period is over (Flagger runs the
        cluster's)."""
        with self.db.connection() as conn:
            rows = conn.execute(
                f"""SELECT id FROM rollouts r
                    WHERE engine = 'local'
                      AND ({UNFINISHED}
                           OR ((finalized_at IS NULL OR routed_generation < generation)
                               AND id = (SELECT max(id) FROM rollouts n WHERE n.service = r.service)))
                    ORDER BY id"""
            ).fetchall()
        return [r[0] for r in rows]

    # -- the loop --------------------------------------------------------------------------------
    def tick(self, rollout_id: int) -> Decision | None:
        """One analysis step; None when another controller is ticking this rollout right now."""
        with self.db.advisory_lock(f"{LOCK}tick:{rollout_id}", wait=False) as (held, _):
            return self._tick(rollout_id) if held else None

    def _tick(self, rollout_id: int) -> Decision:
        rollout = self.reconcile(rollout_id)
        if rollout.state.phase in TERMINAL:
            if self._grace_over(rollout):
                rollout = self._finalize(rollout_id)
            return Decision("hold", rollout.state, f"rollout is {rollout.state.phase.value}")
        observations, until = self._observe(rollout)
        decision = decide(rollout.spec, rollout.state, observations)
        with self._writing(rollout_id) as conn:
            judged = decision.checks and decision.action != "wait"  # a wait for a value judged nothing
            saved = self._save(conn, rollout, decision, observations, until if judged else None)
            current = saved or read_rollout(conn, rollout_id)
            self._route(conn, current)
        if saved is None:
            why = f"decision {decision.action!r} discarded: the rollout changed while it was observed"
            log.info("rollout %s: %s (now %s)", rollout_id, why, current.state.phase.value)
            return Decision("hold", current.state, why)
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
            stop.wait(self.next_analysis_in(rollout_id))
        return self.get(rollout_id).state

    def next_analysis_in(self, rollout_id: int) -> float:
        """Seconds to the rollout's next analysis: ``spec.interval_seconds`` from now, and no
        sooner than its window (from its step's start, or the last judged analysis's end, to
        ``LOG_LAG`` before the analysis) is a whole interval long. An advance starts a window
        after the analysis that made it: ticked an interval after that one, the next judged a
        window ``LOG_LAG`` and an analysis short (below Prometheus's ``MIN_WINDOW`` at 30 s: no
        data, and each step took two intervals)."""
        rollout = self.get(rollout_id)
        interval = rollout.spec.interval_seconds
        window_full = rollout.step_started_at + timedelta(seconds=interval) + LOG_LAG
        return max(interval, (window_full - datetime.now(UTC)).total_seconds())

    def reconcile(self, rollout_id: int) -> Rollout:
        """Make the router carry what the stored state wants (re-read under the write lock)."""
        with self._writing(rollout_id) as conn:
            rollout = read_rollout(conn, rollout_id)
            self._route(conn, rollout)
            return rollout

    def sweep(self) -> list[str]:
        """Retire revisions that left their service's traffic block over the grace period ago."""
        with self.db.connection() as conn:
            services = [r[0] for r in conn.execute("SELECT DISTINCT service FROM rollouts")]
        return [r for service in services for r in self.router.retire_unrouted(service, self.grace_seconds)]

    # -- operators -------------------------------------------------------------------------------
    def promote(self, rollout_id: int, reason: str = "promoted by an operator") -> State:
        """Green to 100% now, skipping the steps left (a cluster's operator can only approve a
        promotion Flagger waits for); never a candidate the gates failed: the registry's override
        for that is ``pefm models promote``. (One without a gate report yet is the operator's call.)"""
        rollout = self.get(rollout_id)
        with self.db.connection() as conn:
            passed, why = candidate_verdict(conn, rollout.green_model_version, rollout.spec.require_gates)
        if passed is False and rollout.state.phase not in TERMINAL:
            raise RolloutError(f"rollout {rollout_id} cannot be promoted: {why}")
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
        with self._writing(rollout_id) as conn:
            rollout = read_rollout(conn, rollout_id)
            phase = rollout.state.phase
            if phase in TERMINAL and rollout.finalized_at is not None:
                raise RolloutError(
                    f"rollout {rollout_id} is {phase.value} and settled at {rollout.finalized_at:%Y-%m-%d %H:%M:%S}: "
                    f"{rollout.loser} no longer runs; start a new rollout instead"
                )
            if phase in TERMINAL and not (allow_terminal and phase is Phase.SUCCEEDED):
                raise RolloutError(f"rollout {rollout_id} is already {phase.value}")
            saved = self._save(conn, rollout, Decision(action, change(rollout.state), reason), None)
            try:
                self._route(conn, saved)
            except Exception:  # the state is saved; the controller loop keeps routing until it holds
                log.exception("rollout %s: routing after %s failed; the controller will retry", rollout_id, action)
        return saved.state

    # -- internals -------------------------------------------------------------------------------
    def _observe(self, rollout: Rollout) -> tuple[Observations, datetime | None]:
        """What the analysis judges, and the end of the window its request metrics cover (None:
        none were read). The window ends ``LOG_LAG`` before the metrics are read, and any
        synthetic load is given that long to be logged first: a request is logged (with the moment
        it was served) a flush after it is served, so one served since is judged by the next
        analysis, once, and none by two. One logged more than ``LOG_LAG`` late (the database away
        for seconds) falls before the next window and is judged by none: a window by the moment a
        request was logged would take a column the request log, a hypertable, does not have."""
        spec, state = rollout.spec, rollout.state
        if state.phase not in (Phase.INITIALIZING, Phase.PROGRESSING):
            return Observations(), None
        with self.db.connection() as conn:
            waited = waited_seconds(conn, rollout)
            if state.phase is Phase.INITIALIZING:
                gates, why = candidate_verdict(conn, rollout.green_model_version, spec.require_gates)
        if state.phase is Phase.INITIALIZING:
            smoke_ok = self.prober.smoke(
                self.router.tag_url(rollout.service, "green"), spec.smoke_request, rollout.green_model_version
            )
            return Observations(smoke_ok=smoke_ok, gates_passed=gates, gates_reason=why, waited_seconds=waited), None
        if spec.synthetic_load:
            self.prober.load(self.router.url(rollout.service), spec.synthetic_load, spec.smoke_request)
            time.sleep(LOG_LAG.total_seconds())  # the load logged: judged by this analysis, not the next
        until = datetime.now(UTC) - LOG_LAG
        errors: dict[str, str] = {}
        try:
            metrics = self.provider.revision_metrics(rollout.green_revision, rollout.step_started_at, until)
        except Exception as exc:  # Prometheus away, an answer not understood: each of its checks fails
            why = f"the metrics could not be read ({_unmeasured(exc)})"
            log.warning("rollout %s: %s", rollout.id, why)
            metrics = RevisionMetrics(0, None, None)
            errors["success_rate"] = errors["p99_latency_ms"] = why
        urls = (self.router.tag_url(rollout.service, "blue"), self.router.tag_url(rollout.service, "green"))
        try:
            divergence = self.prober.divergence(
                urls,
                (rollout.blue_revision, rollout.green_revision),
                rollout.step_started_at,
                spec.shadow_requests,
                GatedExpectation(self.db, rollout.green_model_version, rollout.blue_model_version),
            )
        except Exception as exc:  # a replay failed, or an answer not understood (green's own, maybe)
            divergence, errors["divergence"] = None, f"the replays failed ({_unmeasured(exc)})"
            log.warning("rollout %s: %s", rollout.id, errors["divergence"])
        return Observations(
            requests=metrics.requests,
            metrics={
                "success_rate": metrics.success_rate,
                "p99_latency_ms": metrics.p99_latency_ms,
                "divergence": divergence,
            },
            errors=errors,
            waited_seconds=waited,
        ), until

    def _grace_over(self, rollout: Rollout) -> bool:
        return (
            rollout.finalized_at is None
            and rollout.finished_at is not None
            and datetime.now(UTC) - rollout.finished_at >= timedelta(seconds=self.grace_seconds)
        )

    def _finalize(self, rollout_id: int) -> Rollout:
        """After the grace period: the winner alone carries the service, the loser is retired."""
        with self._writing(rollout_id) as conn:
            rollout = read_rollout(conn, rollout_id)
            if not self._grace_over(rollout) or not is_newest(conn, rollout):
                return rollout
            with conn.transaction():
                if not conn.execute(
                    """UPDATE rollouts SET finalized_at = now(), generation = generation + 1, updated_at = now()
                       WHERE id = %s AND generation = %s""",
                    (rollout.id, rollout.generation),
                ).rowcount:
                    return rollout
                record_event(
                    conn,
                    rollout.id,
                    "finalize",
                    rollout.state,
                    f"{rollout.loser} carried no traffic for {self.grace_seconds:g} s: retired; "
                    f"{rollout.winner} alone serves {rollout.service}",
                )
            rollout = read_rollout(conn, rollout_id)
            self._route(conn, rollout)
        self.router.retire(rollout.service, rollout.loser)
        return rollout

    def _save(
        self,
        conn: psycopg.Connection,
        rollout: Rollout,
        decision: Decision,
        observations: Observations | None,
        judged_at: datetime | None = None,
    ) -> Rollout | None:
        """Write the decision if the row is still the one ``rollout`` was read from (None if not);
        the registry follows in the same transaction when the rollout ends here. ``judged_at``:
        when the observations the decision judged its checks on were taken; the next analysis
        judges what green serves from then on (``step_started_at``)."""
        new = decision.state
        changed = new != rollout.state
        ended = new.phase in TERMINAL and new.phase is not rollout.state.phase
        reason = decision.reason
        with conn.transaction():
            row = conn.execute(
                """UPDATE rollouts SET phase = %(phase)s, step = %(step)s, weight = %(weight)s,
                          failed_checks = %(failed)s, updated_at = now(),
                          generation = generation + %(changed)s::int,
                          step_started_at = CASE WHEN %(moved)s THEN now()
                                                 ELSE greatest(step_started_at, %(judged_at)s::timestamptz) END,
                          finished_at = CASE WHEN %(ended)s THEN now() ELSE finished_at END
                   WHERE id = %(id)s AND generation = %(generation)s RETURNING id""",
                {
                    "phase": new.phase.value,
                    "step": new.step,
                    "weight": new.weight,
                    "failed": new.failed_checks,
                    "changed": changed,
                    "moved": new.weight != rollout.state.weight,
                    "judged_at": judged_at,
                    "ended": ended,
                    "id": rollout.id,
                    "generation": rollout.generation,
                },
            ).fetchone()
            if row is None:
                return None
            if ended:
                reason += "; " + settle_rollout(
                    conn,
                    candidate=rollout.green_model_version,
                    previous=rollout.blue_model_version,
                    succeeded=new.phase is Phase.SUCCEEDED,
                    reason=decision.reason,
                )
            if changed or last_event(conn, rollout.id) != (decision.action, reason):  # no repeated waits
                record_event(conn, rollout.id, decision.action, new, reason, decision.checks, observations)
        log.info("rollout %s: %s (%s%% green): %s", rollout.id, decision.action, new.weight, reason)
        return read_rollout(conn, rollout.id)

    def _route(self, conn: psycopg.Connection, rollout: Rollout) -> None:
        """Under the write lock: set the router to the rollout's traffic unless it already is, and
        record the generation the router now reports. A superseded rollout routes nothing."""
        if not is_newest(conn, rollout):
            return
        wanted = rollout.traffic
        if not same_traffic(self.router.traffic(rollout.service), wanted):
            self.router.set_traffic(rollout.service, wanted)
            if not same_traffic(self.router.traffic(rollout.service), wanted):
                raise RuntimeError(f"the router of {rollout.service} does not report the traffic it was given")
        if rollout.routed_generation != rollout.generation:
            conn.execute(
                "UPDATE rollouts SET routed_generation = %s WHERE id = %s AND generation = %s",
                (rollout.generation, rollout.id, rollout.generation),
            )

    @contextlib.contextmanager
    def _writing(self, rollout_id: int) -> Iterator[psycopg.Connection]:
        """The rollout's write lock, and the (autocommit) connection that holds it."""
        try:
            with self.db.advisory_lock(_write_lock(rollout_id), wait=True, timeout=self.lock_timeout) as (_, conn):
                yield conn
        except LockBusy as exc:
            raise RolloutBusy(str(exc)) from None


def _unmeasured(exc: Exception) -> str:
    """Why a metric could not be measured, in words anyone may read (the rollout's events are
    served without a token): an HTTP error by its kind and status alone, since httpx's text holds
    the URL and so any password ``PEFM_PROMETHEUS_URL`` carries."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{type(exc).__name__} {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"[:200]
