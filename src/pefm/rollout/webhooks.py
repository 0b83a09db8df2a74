"""PEFM's checks as Flagger webhooks: what only PEFM knows, for the rollouts Flagger runs.

Flagger (``provider: knative``) moves the traffic between the primary revision and the latest one
and judges the Prometheus metrics; at each stage it POSTs ``{name, namespace, phase, checksum,
metadata}`` here and goes on only on a 2xx answer. The checks are the local controller's:

- ``confirm-rollout``: the canary's model version passed its validation gates (or is the serving one);
- ``pre-rollout``: the smoke request to the canary revision;
- ``confirm-traffic-increase``: the canary served ``min_requests`` since its weight last changed
  (no data is never good news: the weight waits);
- ``rollout``: forecast divergence, requests the revisions served replayed to both, joined on date;
- ``confirm-promotion``: an operator's approval when the spec asks for one;
- ``rollback``: 2xx when an operator asked for a rollback;
- ``post-rollout``: the registry follows the outcome, in the transaction that ends the rollout,
  exactly once however often Flagger retries;
- ``event``: Flagger's events become rollout events (weights included); one that reports the
  rollout's end settles it as post-rollout does, should that call be lost (``_reports_end``).

Every rollout is a ``rollouts`` row (engine ``flagger``, keyed by Canary and canary revision), so the
dashboard and ``pefm rollout status`` show cluster rollouts like local ones, and operators act on
them through the same API (``FlaggerOperator``).
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pefm.data.fields import CONTROL_CHARS
from pefm.forecasting.registry import candidate_verdict, serving_id, settle_rollout
from pefm.rollout.analysis import TERMINAL, Phase, State
from pefm.rollout.cluster import KnativeCluster, NotFound, UnknownCanary
from pefm.rollout.flagger import HOOKS
from pefm.rollout.probes import GatedExpectation
from pefm.rollout.providers import MetricsProvider
from pefm.rollout.router import knative_service
from pefm.rollout.spec import RolloutSpec
from pefm.rollout.store import (
    LOCK,
    UNFINISHED,
    Rollout,
    RolloutError,
    last_event,
    read_rollout,
    record_event,
    waited_seconds,
)
from pefm.storage.database import Database

log = logging.getLogger(__name__)
# Flagger's canary phases -> the rollout phases PEFM records (terminal ones only as post-rollout
# settles a rollout: that hook, or an event that reports the end, see _reports_end)
PHASES = {
    "Initializing": Phase.INITIALIZING,
    "Initialized": Phase.INITIALIZING,
    "Waiting": Phase.INITIALIZING,
    "Progressing": Phase.PROGRESSING,
    "WaitingPromotion": Phase.PROGRESSING,
    "Promoting": Phase.PROMOTING,
    "Finalising": Phase.PROMOTING,
}
WEIGHT = re.compile(r"canary weight ([0-9]{1,3})(?![0-9])")  # a percent: int() refuses thousands of digits
NO_DIVERGENCE = "divergence: no forecasts of the same requests to compare yet"
ROLLED_BACK = "Canary failed!"  # the start of Flagger's event once its rollback put all traffic on the primary
APPROVED, ROLLBACK_REQUESTED = "approve-promotion", "request-rollback"
GATES = ("rollout", "confirm-traffic-increase", "confirm-promotion")
"""The hooks of a rollout under way that hold its traffic or its promotion."""


class WebhookError(ValueError):
    """A payload that is not Flagger's: ``status`` and the field at fault."""

    def __init__(self, status: int, message: str, field: str = "body"):
        super().__init__(message)
        self.status, self.field = status, field


@dataclass(frozen=True)
class Payload:
    name: str
    namespace: str
    phase: str
    checksum: str
    metadata: dict[str, str]

    @classmethod
    def parse(cls, data: Any) -> Payload:
        """Flagger's webhook payload, checked field by field."""
        if not isinstance(data, dict):
            raise WebhookError(422, "expected a JSON object")
        for field in ("name", "namespace"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise WebhookError(422, "expected a non-empty string", field)
        for field in ("phase", "checksum"):
            if not isinstance(data.get(field, ""), str):
                raise WebhookError(422, "expected a string", field)
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise WebhookError(422, "expected an object of strings", "metadata")
        texts = {f: data.get(f, "") for f in ("name", "namespace", "phase", "checksum")}
        for field, text in [*texts.items(), *((f"metadata.{k}", v) for k, v in metadata.items())]:
            if CONTROL_CHARS.search(text) or CONTROL_CHARS.search(field):
                raise WebhookError(422, "contains a control character", field[:100])
        return cls(data["name"], data["namespace"], data.get("phase", ""), data.get("checksum", ""), metadata)

    @property
    def canary(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Answer:
    """A webhook's answer: ``ok`` is Flagger's go (2xx), ``reason`` is what it logs otherwise."""

    ok: bool
    reason: str
    rollout_id: int | None = None
    status: int | None = None

    @property
    def code(self) -> int:
        return self.status or (200 if self.ok else 412)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, "rollout": self.rollout_id}


def authorized(token: str | None, payload: Payload) -> None:
    """The payload carries the webhook token in its metadata (401 without one, 403 when wrong)."""
    if not token:
        raise WebhookError(503, "webhooks are off: set PEFM_WEBHOOK_TOKEN on the rollout API")
    given = payload.metadata.get("token")
    if not given:
        raise WebhookError(401, "the webhook's metadata carries no token", "metadata.token")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise WebhookError(403, "wrong webhook token", "metadata.token")


class FlaggerHooks:
    def __init__(
        self, db: Database, cluster: KnativeCluster, prober: Any, provider: MetricsProvider, spec: RolloutSpec
    ):
        self.db, self.cluster, self.prober, self.provider, self.spec = db, cluster, prober, provider, spec

    def call(self, hook: str, payload: Payload) -> Answer:
        """Flagger's call of ``hook``, answered; WebhookError when it cannot be: a Kubernetes object
        the answer needs that is gone (the Canary's Service deleted, a revision Knative collected)
        is a 404 naming it."""
        try:
            return self._call(hook, payload)
        except NotFound as exc:
            raise WebhookError(404, f"{exc} (for the Canary {payload.canary})", "name") from None

    def _call(self, hook: str, payload: Payload) -> Answer:
        if hook not in HOOKS:
            raise WebhookError(404, f"no webhook {hook!r}; one of {', '.join(HOOKS)}", "hook")
        if payload.namespace != self.cluster.namespace:
            why = f"no Canary {payload.canary}: this rollout API serves {self.cluster.namespace}"
            raise WebhookError(404, why, "namespace")
        try:
            canary = self.cluster.canary(payload.name)
            target = canary["spec"]["targetRef"]["name"]
        except UnknownCanary as exc:
            raise WebhookError(404, str(exc), "name") from None
        except (KeyError, TypeError):
            raise WebhookError(409, f"Canary {payload.canary} names no spec.targetRef.name to follow", "name") from None
        if hook == "post-rollout" and payload.phase not in ("Succeeded", "Failed"):
            raise WebhookError(422, f"post-rollout phase must be Succeeded or Failed, not {payload.phase!r}", "phase")
        primary, latest = self.cluster.revisions(target)  # read once per call
        if (
            hook == "event"
            and _reports_end(payload)
            and (ended := self.existing(payload, "post-rollout", primary, latest))
        ):
            # settled as post-rollout settles it, should that call be lost; where the primary says
            # otherwise, left alone (the event is recorded below all the same)
            self._post_rollout(ended, payload, primary)
        if hook in ("confirm-rollout", "pre-rollout"):  # a new revision is rolled out from these on
            rollout = self.find(payload, target, primary, latest)
        else:  # about a rollout already begun, which a newer revision must not supersede from here
            rollout = self.existing(payload, hook, primary, latest)
            if rollout is None and hook == "event" and not self._unfinished(payload):  # events may come first
                rollout = self.find(payload, target, primary, latest)
        if rollout is None:
            if hook == "rollback":  # a 2xx here is Flagger's signal to roll back
                return Answer(False, f"{payload.canary}: no rollout of its latest revision to roll back", None, 403)
            if hook in GATES and latest and primary != latest:  # Flagger promotes the latest revision
                why = f"{payload.canary}: its latest revision {latest} has not been through confirm-rollout"
                return Answer(False, why, None, 403)
            return Answer(True, f"{payload.canary}: no new revision to roll out")
        if hook == "event":
            return self._event(rollout, payload)
        if hook == "post-rollout":
            return self._post_rollout(rollout, payload, primary)
        if hook == "rollback" and rollout.state.phase is Phase.FAILED:  # ended here: the canary goes back
            return Answer(True, f"rollout {rollout.id} ended Failed", rollout.id)
        if rollout.state.phase in TERMINAL:
            return Answer(False, f"rollout {rollout.id} is already {rollout.state.phase.value}", rollout.id, 409)
        if hook in GATES:
            rollout = self._follow_weight(rollout, (canary.get("status") or {}).get("canaryWeight"))
        answer = getattr(self, "_" + hook.replace("-", "_"))(rollout)
        if hook != "rollback" or answer.ok:  # the rollback gate is asked every interval
            self._note(rollout, hook, answer)
        return answer

    # -- the rollout a payload is about ------------------------------------------------------------
    def find(self, payload: Payload, target: str, primary: str | None, latest: str | None) -> Rollout | None:
        """The row of the revision this Canary's Service canaries now (created on first sight);
        None while there is none (after Flagger's initialisation or a promotion the primary is the
        latest revision). Keyed by revision, not by Flagger's checksum: confirm-rollout is called
        before Flagger records the new revision, with the previous rollout's checksum."""
        if not latest:
            return None
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT id FROM rollouts WHERE engine = 'flagger' AND canary = %s AND green_revision = %s",
                (payload.canary, latest),
            ).fetchone()
            if row:
                return read_rollout(conn, row[0])
        if not primary or primary == latest:
            return None
        with self.db.connection() as conn:
            unpinned = serving_id(conn)  # an unpinned revision serves the serving version
        green = self.cluster.revision_model_version(latest) or unpinned
        blue = self.cluster.revision_model_version(primary) or unpinned
        service = target.removeprefix("pefm-")
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{LOCK}start:{service}",))
            for old in conn.execute(
                f"""SELECT id FROM rollouts WHERE service = %s AND {UNFINISHED}
                   AND NOT (engine = 'flagger' AND canary = %s AND green_revision = %s)""",
                (service, payload.canary, latest),
            ).fetchall():
                superseded = read_rollout(conn, old[0])
                if superseded.engine == "flagger" and superseded.green_revision == primary:  # promoted
                    why = f"Flagger promoted {primary}, the primary now (its post-rollout never came)"
                    _finish(conn, superseded, True, why)
                else:
                    _finish(conn, superseded, False, "superseded: Flagger restarted on a newer revision")
            conn.execute(
                """INSERT INTO rollouts (service, blue_revision, green_revision, green_model_version,
                                         blue_model_version, spec, phase, step, weight, engine, canary)
                   VALUES (%s, %s, %s, %s, %s, %s, 'Initializing', -1, 0, 'flagger', %s)
                   ON CONFLICT (canary, green_revision) WHERE engine = 'flagger' DO NOTHING""",
                (service, primary, latest, green, blue, Jsonb(self.spec.to_dict()), payload.canary),
            )
            rollout_id = conn.execute(
                "SELECT id FROM rollouts WHERE engine = 'flagger' AND canary = %s AND green_revision = %s",
                (payload.canary, latest),
            ).fetchone()[0]
            if not conn.execute("SELECT 1 FROM rollout_events WHERE rollout_id = %s", (rollout_id,)).fetchone():
                record_event(
                    conn,
                    rollout_id,
                    "start",
                    State(),
                    f"Flagger canaries {latest} ({green or 'model version unknown'}) against the primary "
                    f"{primary} ({blue or 'model version unknown'})",
                )
            return read_rollout(conn, rollout_id)

    def existing(self, payload: Payload, hook: str, primary: str | None, latest: str | None) -> Rollout | None:
        """The rollout a hook after pre-rollout is about; never created, and nothing superseded:
        for post-rollout the one of the revision Flagger reports (Succeeded: the canary it promoted
        now serves as the primary; Failed: the one it rolled back to the primary), else the one of
        the latest revision. A deploy that makes a newer revision while Flagger promotes or
        finalises must not turn the model it promoted into a rejected one."""
        with self.db.connection() as conn:
            row = None
            if hook == "post-rollout" and primary:
                column = "green_revision" if payload.phase == "Succeeded" else "blue_revision"
                row = conn.execute(
                    f"""SELECT id FROM rollouts WHERE engine = 'flagger' AND canary = %s AND {column} = %s
                        ORDER BY id DESC LIMIT 1""",
                    (payload.canary, primary),
                ).fetchone()
            if row is None and latest:
                row = conn.execute(
                    "SELECT id FROM rollouts WHERE engine = 'flagger' AND canary = %s AND green_revision = %s",
                    (payload.canary, latest),
                ).fetchone()
            return read_rollout(conn, row[0]) if row else None

    def _unfinished(self, payload: Payload) -> bool:
        """Whether the Canary has a rollout under way (which a new row would supersede)."""
        with self.db.connection() as conn:
            return bool(
                conn.execute(
                    f"SELECT 1 FROM rollouts WHERE engine = 'flagger' AND canary = %s AND {UNFINISHED}",
                    (payload.canary,),
                ).fetchone()
            )

    # -- the checks ------------------------------------------------------------------------------
    def _confirm_rollout(self, rollout: Rollout) -> Answer:
        with self.db.connection() as conn:
            passed, why = candidate_verdict(conn, rollout.green_model_version, rollout.spec.require_gates)
        return Answer(True, why, rollout.id) if passed else Answer(False, why, rollout.id, 403)

    def _pre_rollout(self, rollout: Rollout) -> Answer:
        """The gates again, then the smoke test: a revision Flagger restarts its analysis on comes
        here without confirm-rollout (Flagger asks that only while the Canary waits to start)."""
        if not (gates := self._confirm_rollout(rollout)).ok:
            return gates
        ok = self.prober.smoke(
            self.cluster.url(rollout.green_revision), rollout.spec.smoke_request, rollout.green_model_version
        )
        return Answer(ok, "smoke test of the canary " + ("passed" if ok else "failed"), rollout.id)

    def _confirm_traffic_increase(self, rollout: Rollout) -> Answer:
        if waiting := self._waiting_for_data(rollout):
            return waiting
        return Answer(True, f"the canary served enough requests at {rollout.state.weight}%", rollout.id)

    def _waiting_for_data(self, rollout: Rollout) -> Answer | None:
        """No data is never good news: a 403 while the canary has served fewer than
        ``min_requests`` since its weight last changed (the first step needs none), or while the
        last ``rollout`` answer had no divergence to judge; None when there is data. (Flagger's
        metric templates pass a revision that served nothing, since Flagger would count no value as
        a failed check: the weight and the promotion wait here instead, as the local analysis
        waits, and the ``rollout`` check fails once the wait is ``max_wait_seconds`` long.)"""
        if waiting := self._waiting_for_traffic(rollout):
            return waiting
        with self.db.connection() as conn:
            last = last_event(conn, rollout.id, "rollout")
        if rollout.state.weight > 0 and last is not None and last[1] == f"passed: {NO_DIVERGENCE}":
            return Answer(False, f"waiting for data: {NO_DIVERGENCE}", rollout.id, 403)
        return None

    def _waiting_for_traffic(self, rollout: Rollout) -> Answer | None:
        served = self.provider.revision_metrics(rollout.green_revision, rollout.step_started_at).requests
        need = rollout.spec.min_requests if rollout.state.weight > 0 else 0
        if served < need:
            return Answer(False, f"waiting for traffic: {served} of {need} requests on the canary", rollout.id, 403)
        return None

    def _overdue(self, rollout: Rollout, waiting: str) -> Answer | None:
        """A failed ``rollout`` check (Flagger counts it towards ``threshold``) once the canary's
        weight has waited ``max_wait_seconds`` for data since it last changed: Flagger's own gate
        would hold a canary in a quiet hour, and the next revision behind it, for good."""
        limit = rollout.spec.max_wait_seconds
        if limit is None or rollout.state.weight == 0:
            return None
        with self.db.connection() as conn:
            waited = waited_seconds(conn, rollout)
        if waited < limit:
            return None
        return Answer(False, f"nothing to judge for {waited:.0f} s (max_wait_seconds): {waiting}", rollout.id)

    def _rollout(self, rollout: Rollout) -> Answer:
        spec = rollout.spec
        if spec.synthetic_load:
            service = self.cluster.url(knative_service(rollout.service))
            self.prober.load(service, spec.synthetic_load, spec.smoke_request)
        if (waiting := self._waiting_for_traffic(rollout)) and (overdue := self._overdue(rollout, waiting.reason)):
            return overdue
        checks = [c for c in spec.checks if c.metric == "divergence"]
        if not checks:
            return Answer(True, "no divergence check in the spec", rollout.id)
        expected = GatedExpectation(self.db, rollout.green_model_version, rollout.blue_model_version)
        value = self.prober.divergence(
            (self.cluster.url(rollout.blue_revision), self.cluster.url(rollout.green_revision)),
            (rollout.blue_revision, rollout.green_revision),
            rollout.step_started_at,
            spec.shadow_requests,
            expected,
        )
        results = [check.judge(value) for check in checks]
        if value is None:  # no failed check (Flagger counts those): the weight waits at confirm-traffic-increase
            return self._overdue(rollout, NO_DIVERGENCE) or Answer(True, NO_DIVERGENCE, rollout.id)
        failed = [r for r in results if not r["passed"]]
        detail = "; ".join(f"{r['check']} {r['value']:.4g} within {r['range']}" for r in results)
        if failed:
            detail = "; ".join(f"{r['check']} {r['value']:.4g} outside {r['range']}" for r in failed)
        if expected.paths:
            detail += " (distance from what the gates measured between the two models)"
        return Answer(not failed, detail, rollout.id)

    def _confirm_promotion(self, rollout: Rollout) -> Answer:
        if waiting := self._waiting_for_data(rollout):  # the last step is judged on data too
            return waiting
        if not rollout.spec.manual_promotion:
            return Answer(True, "promotion needs no approval", rollout.id)
        if self._operator_asked(rollout, APPROVED):
            return Answer(True, "promotion approved by an operator", rollout.id)
        return Answer(False, "waiting for an operator to approve the promotion", rollout.id, 403)

    def _rollback(self, rollout: Rollout) -> Answer:
        if self._operator_asked(rollout, ROLLBACK_REQUESTED):
            return Answer(True, "rolled back by an operator", rollout.id)
        return Answer(False, "no rollback requested", rollout.id, 403)

    # -- what Flagger reports --------------------------------------------------------------------
    def _post_rollout(self, rollout: Rollout, payload: Payload, primary: str | None) -> Answer:
        succeeded = payload.phase == "Succeeded"
        expected = rollout.green_revision if succeeded else rollout.blue_revision
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM rollouts WHERE id = %s FOR UPDATE", (rollout.id,))
            current = read_rollout(conn, rollout.id)
            if current.state.phase in TERMINAL:
                why = f"rollout {rollout.id} was already settled: {current.state.phase.value}"
                return Answer(True, why, rollout.id)
            if primary != expected:
                return Answer(
                    False,
                    f"Flagger reports {payload.phase} but the primary revision is {primary}, not {expected}",
                    rollout.id,
                    409,
                )
            reason = "Flagger promoted the canary" if succeeded else "Flagger rolled the canary back"
            change = _finish(conn, current, succeeded, reason)
        return Answer(True, change, rollout.id)

    def _follow_weight(self, rollout: Rollout, weight: Any) -> Rollout:
        """The canary's weight from the Canary's ``status.canaryWeight`` when it differs from the
        one the events told: Flagger sends an event once and only logs a failure, and a lost one
        left the step's traffic counted at the old weight (``min_requests`` not asked at all
        while it was 0)."""
        if type(weight) is not int or not 0 <= weight <= 100 or weight == rollout.state.weight:
            return rollout
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM rollouts WHERE id = %s FOR UPDATE", (rollout.id,))
            current = read_rollout(conn, rollout.id)
            if current.state.phase in TERMINAL or current.state.weight == weight:
                return current
            phase = Phase.PROGRESSING if current.state.phase is Phase.INITIALIZING else current.state.phase
            state = replace(current.state, phase=phase, step=current.state.step + 1, weight=weight)
            _write(conn, current, state, restart_step=True)
            record_event(conn, rollout.id, "flagger", state, f"the Canary's status: canary weight {weight}")
            return read_rollout(conn, rollout.id)

    def _event(self, rollout: Rollout, payload: Payload) -> Answer:
        message = payload.metadata.get("eventMessage", "")
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM rollouts WHERE id = %s FOR UPDATE", (rollout.id,))
            current = read_rollout(conn, rollout.id)
            state = current.state
            if state.phase not in TERMINAL:
                phase = PHASES.get(payload.phase, state.phase)
                if state.phase is Phase.PAUSED and phase is not Phase.PROMOTING:
                    phase = Phase.PAUSED  # Flagger keeps its phase while suspended
                weight = WEIGHT.search(message)
                if weight and int(weight[1]) <= 100 and int(weight[1]) != state.weight:  # a percent
                    state = replace(state, step=state.step + 1, weight=int(weight[1]))
                state = replace(state, phase=phase)
                if state != current.state:
                    _write(conn, current, state, restart_step=state.weight != current.state.weight)
            record_event(conn, rollout.id, "flagger", state, message or f"Flagger: {payload.phase}")
        return Answer(True, "event recorded", rollout.id)

    def _operator_asked(self, rollout: Rollout, action: str) -> bool:
        with self.db.connection() as conn:
            return bool(
                conn.execute(
                    "SELECT 1 FROM rollout_events WHERE rollout_id = %s AND action = %s", (rollout.id, action)
                ).fetchone()
            )

    def _note(self, rollout: Rollout, hook: str, answer: Answer) -> None:
        """Record a check's answer as an event, unless it repeats the last one of the same hook."""
        with self.db.connection() as conn, conn.transaction():
            reason = f"{'passed' if answer.ok else 'refused'}: {answer.reason}"
            if last_event(conn, rollout.id, hook) != (hook, reason):
                record_event(conn, rollout.id, hook, read_rollout(conn, rollout.id).state, reason)


class FlaggerOperator:
    """An operator's promote / rollback / pause / resume of a Flagger rollout: through the webhook
    gates (confirm-promotion, rollback) and the Canary's ``spec.suspend``."""

    def __init__(self, db: Database, cluster: KnativeCluster):
        self.db, self.cluster = db, cluster

    def promote(self, rollout_id: int, reason: str = "promotion approved by an operator") -> State:
        return self._act(rollout_id, APPROVED, reason)

    def rollback(self, rollout_id: int, reason: str = "rollback requested by an operator") -> State:
        return self._act(rollout_id, ROLLBACK_REQUESTED, reason)

    def pause(self, rollout_id: int, reason: str = "paused by an operator") -> State:
        return self._act(rollout_id, "pause", reason, suspend=True, phase=Phase.PAUSED)

    def resume(self, rollout_id: int, reason: str = "resumed by an operator") -> State:
        return self._act(rollout_id, "resume", reason, suspend=False, phase=Phase.PROGRESSING)

    def _act(self, rollout_id: int, action: str, reason: str, suspend: bool | None = None, phase=None) -> State:
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM rollouts WHERE id = %s FOR UPDATE", (rollout_id,))
            rollout = read_rollout(conn, rollout_id)
            if rollout.state.phase in TERMINAL:
                raise RolloutError(f"rollout {rollout_id} is already {rollout.state.phase.value}")
            if action == "resume" and rollout.state.phase is not Phase.PAUSED:
                raise RolloutError(f"rollout {rollout_id} is {rollout.state.phase.value}, not Paused")
            if action == ROLLBACK_REQUESTED and rollout.state.phase is Phase.PROMOTING:
                raise RolloutError(
                    f"rollout {rollout_id} is Promoting: Flagger asks no rollback gate once it promotes;"
                    " roll back with a new rollout of the model that served"
                )
            canary = rollout.canary.split("/", 1)[1]
            if action == ROLLBACK_REQUESTED and rollout.state.step < 0 and not _canary_weight(self.cluster, canary):
                # Flagger asks the rollback gate only once its analysis began; before that (waiting
                # at confirm-rollout) no traffic moved, and the rollout ends here. Its gates then
                # refuse the revision (409) until a newer one replaces it. (The Canary's status is
                # asked too: the event of a first step may have been lost.)
                _finish(conn, rollout, False, f"{reason} before any traffic moved", "rollback")
                return read_rollout(conn, rollout_id).state
            if action in (APPROVED, ROLLBACK_REQUESTED) and rollout.state.phase is Phase.PAUSED:
                # Flagger asks no gate of a suspended Canary: the approval or rollback resumes it
                suspend, phase = False, Phase.PROGRESSING
            state = rollout.state
            if phase is not None:
                if phase is Phase.PROGRESSING and state.step < 0:
                    phase = Phase.INITIALIZING
                state = replace(state, phase=phase)
                _write(conn, rollout, state)
            if suspend is not None:
                self.cluster.suspend(canary, suspend)
            record_event(conn, rollout_id, action, state, reason)
        return state


def _reports_end(payload: Payload) -> bool:
    """Whether an event is Flagger's word that the rollout ended, which settles it as post-rollout
    does: Flagger makes that call once, so with the rollout API away through its retries the
    rollout stayed under way while the cluster served its outcome. An event carries the Canary's
    phase as Flagger holds it when it sends the event. Succeeded is that phase only once Flagger
    promoted the canary (an event about the next revision that still says Succeeded is about the
    promoted rollout, whose canary is the primary). Failed is also the phase of the events about the next revision's
    confirm-rollout, whose rollout runs against the same primary: only the event of Flagger's
    rollback ends one as Failed."""
    if payload.phase == "Succeeded":
        return True
    return payload.phase == "Failed" and payload.metadata.get("eventMessage", "").startswith(ROLLED_BACK)


def _canary_weight(cluster: KnativeCluster, name: str) -> Any:
    """The Canary's ``status.canaryWeight`` (None before Flagger set one, or with no Canary left
    to carry traffic; the Kubernetes API away: ClusterUnavailable, a 503)."""
    try:
        return (cluster.canary(name).get("status") or {}).get("canaryWeight")
    except UnknownCanary:
        return None


def _finish(
    conn: psycopg.Connection, rollout: Rollout, succeeded: bool, reason: str, action: str = "post-rollout"
) -> str:
    """End a Flagger rollout (the caller holds its row lock); the registry follows in the same
    transaction. Returns the registry's change."""
    state = replace(rollout.state, phase=Phase.SUCCEEDED if succeeded else Phase.FAILED, weight=100 if succeeded else 0)
    _write(conn, rollout, state, finished=True)
    change = settle_rollout(
        conn,
        candidate=rollout.green_model_version,
        previous=rollout.blue_model_version,
        succeeded=succeeded,
        reason=reason,
    )
    record_event(conn, rollout.id, action, state, f"{reason}; {change}")
    return change


def _write(conn, rollout: Rollout, state: State, *, finished: bool = False, restart_step: bool = False) -> None:
    """Save a Flagger rollout's state (the caller holds its row lock)."""
    conn.execute(
        """UPDATE rollouts SET phase = %s, step = %s, weight = %s, failed_checks = %s, updated_at = now(),
                  generation = generation + 1, routed_generation = generation + 1,
                  step_started_at = CASE WHEN %s THEN now() ELSE step_started_at END,
                  finished_at = CASE WHEN %s THEN now() ELSE finished_at END,
                  finalized_at = CASE WHEN %s THEN now() ELSE finalized_at END
           WHERE id = %s""",
        (
            state.phase.value,
            state.step,
            state.weight,
            state.failed_checks,
            restart_step,
            finished,
            finished,
            rollout.id,
        ),
    )
