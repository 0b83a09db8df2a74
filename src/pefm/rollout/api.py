"""The rollout HTTP API (what the dashboard and CI/CD call), the controller loop behind it, and
on a cluster the Flagger webhooks (``/v1/flagger/<hook>``, see ``pefm.rollout.webhooks``).

Reads are open; every write needs ``Authorization: Bearer $PEFM_ADMIN_TOKEN``; webhooks carry
``PEFM_WEBHOOK_TOKEN`` in their metadata. Operator actions on a Flagger rollout act through its
webhook gates and the Canary's ``spec.suspend``. ``/metrics`` exposes each rollout's weight per
revision, phase and failed checks for Prometheus.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pefm.config import Settings
from pefm.data.fields import CONTROL_CHARS
from pefm.rollout.analysis import Phase
from pefm.rollout.cluster import ClusterUnavailable, NotFound
from pefm.rollout.controller import RolloutBusy, RolloutConflict, RolloutController, RolloutError, UnknownRevision
from pefm.rollout.spec import RolloutSpec
from pefm.rollout.webhooks import FlaggerHooks, FlaggerOperator, Payload, WebhookError, authorized
from pefm.serving.function import OPENAPI_DIR
from pefm.serving.http import (
    ApiError,
    ASGIApp,
    guard,
    handled,
    in_database,
    json_app,
    json_response,
    parse_json,
    read_body,
    require_bearer,
    row_id,
    service_routes,
)

log = logging.getLogger(__name__)
ACTIONS = ("promote", "rollback", "pause", "resume")
BODY_BYTES = 64 * 1024
"""The largest body the API reads (413 above; ``PEFM_MAX_BODY_BYTES`` when that is smaller): a
rollout to start and a Flagger webhook's payload are a few hundred bytes. The functions' 20 MiB
is for data; a webhook's token is inside its body, so the body is read and parsed before its
sender is known, and four 17 MB ones held the event loop (and /health) for seconds. Within this
limit a body is parsed on the loop, as the functions parse theirs below ``INLINE_BYTES``."""


class RolloutMetrics:
    """A Prometheus collector reading the rollouts' current state at scrape time."""

    def __init__(self, controller: RolloutController):
        self.controller = controller

    def collect(self):
        weight = GaugeMetricFamily(
            "pefm_rollout_weight", "Percent of traffic per revision", labels=["service", "revision"]
        )
        phase = GaugeMetricFamily(
            "pefm_rollout_phase", "1 for the rollout's current phase", labels=["service", "rollout", "phase"]
        )
        failed = GaugeMetricFamily(
            "pefm_rollout_failed_checks", "Failed analyses so far", labels=["service", "rollout"]
        )
        with self.controller.db.connection() as conn:
            rows = conn.execute(
                """SELECT DISTINCT ON (service) id, service, blue_revision, green_revision, phase, weight, failed_checks
                   FROM rollouts ORDER BY service, id DESC"""
            ).fetchall()
        for rollout_id, service, blue, green, current, green_weight, failures in rows:
            weight.add_metric([service, blue], 100 - green_weight)
            weight.add_metric([service, green], green_weight)
            for p in Phase:
                phase.add_metric([service, str(rollout_id), p.value], 1.0 if p.value == current else 0.0)
            failed.add_metric([service, str(rollout_id)], failures)
        yield from (weight, phase, failed)


@contextmanager
def refusals_answered() -> Iterator[None]:
    """What the controller and the cluster refuse with, as API answers: the rollout's lock busy ->
    503 (retry in a second), any other refusal -> 409 (an object the cluster no longer has among
    them: a Flagger rollout whose Canary was deleted), the Kubernetes API away -> 503 (a gate stays
    closed; a rollout hook counts as a failed check)."""
    try:
        yield
    except RolloutBusy as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
    except (RolloutError, NotFound) as exc:
        raise ApiError(409, str(exc)) from None
    except ClusterUnavailable as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None


def rollout_json(controller: RolloutController, rollout_id: int, events: bool = False) -> dict[str, Any]:
    r = controller.get(rollout_id)
    out = {
        "id": r.id,
        "service": r.service,
        "engine": r.engine,
        "canary": r.canary,
        "blue_revision": r.blue_revision,
        "green_revision": r.green_revision,
        "green_model_version": r.green_model_version,
        "blue_model_version": r.blue_model_version,
        "phase": r.state.phase.value,
        "step": r.state.step,
        "weight": r.state.weight,
        "failed_checks": r.state.failed_checks,
        "routed": r.routed_generation == r.generation,
        "spec": r.spec.to_dict(),
        "updated_at": r.updated_at.isoformat(),
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "finalized_at": r.finalized_at.isoformat() if r.finalized_at else None,
    }
    if events:
        out["events"] = [{**e, "ts": e["ts"].isoformat()} for e in controller.events(rollout_id)]
    return out


def create_rollout_app(
    settings: Settings,
    controller: RolloutController,
    spec: RolloutSpec,
    hooks: FlaggerHooks | None = None,
    operator: FlaggerOperator | None = None,
) -> ASGIApp:
    """The API app. Start the local analysis loop separately with ``ControllerLoop``; ``hooks`` and
    ``operator`` serve the Flagger rollouts of a cluster. Guarded as the functions are
    (``guard``): an answer given before its request's body was read (a 401) reads the rest first,
    or hypercorn drops the connection after it without saying so."""
    registry = CollectorRegistry()
    registry.register(RolloutMetrics(controller))
    openapi = json.loads((OPENAPI_DIR / "rollout.json").read_text())

    def admin(request: Request) -> None:
        require_bearer(request, settings.admin_token, "rollout administration")

    async def body_of(request: Request) -> bytes:
        return await read_body(request, min(settings.max_body_bytes, BODY_BYTES), settings.body_timeout_seconds)

    async def list_rollouts(request: Request) -> Response:
        def rows():
            with controller.db.connection() as conn:
                ids = [r[0] for r in conn.execute("SELECT id FROM rollouts ORDER BY id DESC LIMIT 50")]
            return [rollout_json(controller, i) for i in ids]

        return json_response({"rollouts": await in_database(rows)})

    async def get_rollout(request: Request) -> Response:
        return json_response(await in_database(_known, controller, request.path_params["id"], True))

    async def start(request: Request) -> Response:
        admin(request)
        data = parse_json(await body_of(request) or b"{}")
        if not isinstance(data, dict):
            raise ApiError(422, "invalid rollout", [{"field": "body", "message": "expected a JSON object"}])
        fields = ("green_revision", "service", "model_version")
        details = [  # a misspelt model-version was dropped, and "dry_run": true started a real rollout
            {"field": name[:100], "message": f"unexpected field; a rollout takes {', '.join(fields)}"}
            for name in [k for k in data if k not in fields][:10]
        ]
        details += [
            {"field": name, "message": "expected a non-empty string"}
            for name in fields
            if (name in data or name == "green_revision") and not (isinstance(data.get(name), str) and data[name])
        ]
        details += [  # a NUL the database refuses (a 500), and the others no name has
            {"field": name, "message": "contains a control character"}
            for name in fields
            if isinstance(data.get(name), str) and CONTROL_CHARS.search(data[name])
        ]
        if details:
            raise ApiError(422, "invalid rollout", details)
        with refusals_answered():
            try:
                rollout_id = await in_database(
                    controller.start,
                    data.get("service", spec.service),
                    data["green_revision"],
                    spec,
                    data.get("model_version"),
                )
            except RolloutConflict as exc:
                raise ApiError(409, str(exc), extra={"active_rollout": exc.active_id}) from None
            except UnknownRevision as exc:
                raise ApiError(422, "invalid rollout", [{"field": exc.field, "message": str(exc)}]) from None
        return json_response(await in_database(rollout_json, controller, rollout_id), 201)

    async def act(request: Request) -> Response:
        admin(request)
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise ApiError(404, f"no action {action!r}; one of {', '.join(ACTIONS)}")
        rollout_id = request.path_params["id"]
        engine = (await in_database(_known, controller, rollout_id, False))["engine"]
        actor = operator if engine == "flagger" else controller
        if actor is None:
            raise ApiError(409, f"rollout {rollout_id} is run by Flagger on a cluster: act on it there")
        with refusals_answered():
            await in_database(getattr(actor, action), rollout_id)
        return json_response(await in_database(rollout_json, controller, rollout_id))

    async def flagger(request: Request) -> Response:
        if hooks is None:
            raise ApiError(404, "no Flagger webhooks here: the rollout API serves them on a cluster")
        body = await body_of(request)
        with refusals_answered():
            try:
                payload = Payload.parse(parse_json(body or b"null"))
                authorized(settings.webhook_token, payload)
                answer = await in_database(hooks.call, request.path_params["hook"], payload)
            except WebhookError as exc:
                raise ApiError(exc.status, str(exc), [{"field": exc.field, "message": str(exc)}]) from None
        if not answer.ok:
            log.info("webhook %s for %s refused: %s", request.path_params["hook"], payload.canary, answer.reason)
        return json_response(answer.to_dict(), answer.code)

    async def metrics(request: Request) -> Response:
        return Response(await in_database(generate_latest, registry), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/rollouts", handled(list_rollouts), methods=["GET"]),
        Route("/v1/rollouts", handled(start), methods=["POST"]),
        Route(f"/v1/rollouts/{row_id()}", handled(get_rollout), methods=["GET"]),
        Route(f"/v1/rollouts/{row_id()}/{{action}}", handled(act), methods=["POST"]),
        Route("/v1/flagger/{hook}", handled(flagger), methods=["POST"]),
        Route("/health", lambda request: PlainTextResponse("OK"), methods=["GET"]),
        *service_routes(metrics, openapi),
    ]
    return guard(json_app(routes))


def _known(controller: RolloutController, rollout_id: int, events: bool) -> dict[str, Any]:
    try:
        return rollout_json(controller, rollout_id, events)
    except RolloutError as exc:
        raise ApiError(404, str(exc)) from None


RETRY_SECONDS = 5.0
"""How long the controller loop waits before ticking again a rollout whose tick failed."""


class ControllerLoop:
    """On a background thread: ticks every rollout that needs it (unfinished, or finished but not
    yet routed or settled) when its interval has passed, and retires revisions left without
    traffic past the grace period."""

    def __init__(self, controller: RolloutController, every: float = 0.5):
        self.controller = controller
        self.every = every
        self.stop = threading.Event()
        self._due: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True, name="pefm-rollout-controller")

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.round()

    def round(self) -> None:
        """Tick the rollouts that are due, then sweep. A rollout whose tick fails is tried again
        after ``RETRY_SECONDS``; the others are ticked and the sweep runs all the same."""
        try:
            pending = self.controller.pending()
        except Exception:  # the database: the next round retries
            log.exception("controller loop: reading the pending rollouts failed")
            return
        for rollout_id in pending:
            if time.monotonic() < self._due.get(rollout_id, 0):
                continue
            try:
                self.controller.tick(rollout_id)
                wait = self.controller.next_analysis_in(rollout_id)
            except Exception:
                log.exception("rollout %s: its tick failed; tried again in %s s", rollout_id, RETRY_SECONDS)
                wait = RETRY_SECONDS
            self._due[rollout_id] = time.monotonic() + wait
        try:
            self.controller.sweep()
        except Exception:
            log.exception("controller loop: retiring unrouted revisions failed")
