"""The monitor function's app: drift checks on a schedule or after ingests, reports over HTTP,
drift gauges for Prometheus, and retraining when the policy says so. Check requests that arrive
while a check runs share the one that runs next (``Coalesced``).

``POST /v1/drift/check`` needs the admin token; CloudEvents of the types below (a PingSource
schedule, the ingest function's "observations ingested") need the event token
(``PEFM_EVENT_TOKEN``, which the ingest function sends), since each check costs seconds of CPU
and may start a retrain. A cluster whose Knative Eventing cannot authenticate its deliveries (the
PingSource carries no token) may turn that off with ``PEFM_UNAUTHENTICATED_EVENTS=on``
(knative/base/monitor.yaml, where the Service is cluster-local).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pefm.config import Settings
from pefm.serving.http import (
    ApiError,
    handled,
    in_database,
    json_app,
    json_response,
    parse_cloudevent,
    read_body,
    require_bearer,
    row_id,
    service_routes,
)
from pefm.serving.observability import ServiceMetrics
from pefm.storage import retrain_events
from pefm.storage.database import Database

log = logging.getLogger(__name__)
EVENT_TYPES = {"dev.knative.sources.ping", "dev.pefm.observations.ingested"}


class Coalesced:
    """Runs of one job, requested at any rate, at most one at a time and one waiting: a request
    while a run is under way waits for the next run, which starts once it ends and answers every
    request made before it started. So each caller's answer comes from a run that began after its
    request (it saw what the request was about), and a burst costs two runs, not one per request:
    an ingest announces every write, seven in half a second ran seven drift checks at once on two
    cores. Shielded: a caller who goes away does not cancel the run the others wait on."""

    def __init__(self, job: Callable[[], Awaitable[Any]]):
        self.job = job
        self._running: asyncio.Task | None = None
        self._queued: asyncio.Task | None = None

    async def __call__(self) -> Any:
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._after(self._running))
        return await asyncio.shield(self._queued)

    async def _after(self, previous: asyncio.Task | None) -> Any:
        if previous is not None:
            with contextlib.suppress(Exception):  # its callers have its error; this run is new
                await previous
        self._running, self._queued = self._queued, None
        return await self.job()


class MonitorService:
    def __init__(self, settings: Settings, db: Database, metrics: ServiceMetrics):
        self.settings = settings
        self.db = db
        self._checks = Coalesced(lambda: in_database(self._run))
        self._retraining: subprocess.Popen | None = None
        """The `pefm retrain --if-requested` this monitor started last (locally)."""
        self._pruned = -math.inf
        """When (monotonic) this monitor last pruned the drift reports: once a day."""
        self.gauges = metrics.prometheus.drift
        try:  # a monitor scaled from zero shows the serving version's last check, not zeros
            with db.connection() as conn:
                latest = conn.execute(
                    """SELECT series, breach FROM drift_reports
                       WHERE model_version = (SELECT id FROM model_versions WHERE status = 'serving'
                                              ORDER BY status_changed_at DESC, id LIMIT 1)
                       ORDER BY id DESC LIMIT 1"""
                ).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:  # its first check sets them
            log.warning("drift gauges: the latest check could not be read: %s", exc)
            latest = None
        if latest is not None:
            self.gauges.show(*latest)

    async def check(self, request: Request) -> Response:
        # who may ask is decided by the headers, before the body is read: a caller without the
        # token does not get to hold a connection and a buffer of up to the body limit
        event = "ce-type" in request.headers or request.headers.get("content-type", "").startswith(
            "application/cloudevents"
        )
        if not event:
            require_bearer(request, self.settings.admin_token, "drift checks")
        elif not self.settings.unauthenticated_events:
            require_bearer(request, self.settings.event_token, "CloudEvent deliveries")
        body = await read_body(request, self.settings.max_body_bytes, self.settings.body_timeout_seconds)
        if event:
            parse_cloudevent(request, body, EVENT_TYPES)
        from pefm.drift.monitor import NothingToMonitor
        from pefm.storage.signing import ArtifactSignatureError

        try:
            report = await self._checks()
        except NothingToMonitor as exc:  # a cluster before its bootstrap: every schedule and ingest asks
            raise ApiError(409, str(exc)) from None
        except ArtifactSignatureError as exc:  # the serving model cannot be trusted here (its key)
            raise ApiError(503, f"the serving model could not be loaded: {exc}") from None
        return json_response(_summary(report))

    def _run(self) -> dict[str, Any]:
        from pefm.drift.monitor import check, due_for_retraining
        from pefm.drift.policy import DriftPolicy

        policy = DriftPolicy.load(self.settings.drift_policy)
        with self.db.connection() as conn:
            report = check(conn, policy)
            due, why = due_for_retraining(conn, report, policy)
        self.gauges.show(report["series"], report["breach"])
        self._prune()
        report["retrain"] = {"due": due, "reason": why, "requested": False, "started": False}
        if self.settings.retrain not in ("local", "request"):
            return report
        with self.db.connection() as conn:
            if due:  # the cool-down starts now, whatever comes of it
                retrain_events.record(
                    conn,
                    uuid.uuid4().hex[:12],
                    retrain_events.REQUESTED,
                    f"the monitor requested a retraining: {why}",
                    # superseded once another version serves; not made again on the same data
                    details={"model_version": report["model_version"], "evidence": report["evidence"]},
                )
                report["retrain"]["requested"] = True
                log.info("retraining requested: %s", why)
            # locally nothing else answers a request: every check retries one still pending (its
            # last run stood aside, or stopped part-way); on a cluster the on-drift CronJob does
            pending = retrain_events.pending_request(conn) if self.settings.retrain == "local" else None
        if pending is not None:
            if self._retraining is not None and self._retraining.poll() is None:
                return report  # the one started earlier has not ended: it answers, or the next check retries
            if self.db.lock_held(retrain_events.LOCK):  # another retraining runs: it, or a later check, answers
                return report
            logs = self.settings.home / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            if self.settings.trainer_database_url:  # the trainer's role, not the monitor's
                env["PEFM_DATABASE_URL"] = self.settings.trainer_database_url
            with (logs / "retrain.log").open("ab") as out:
                self._retraining = subprocess.Popen(
                    [sys.executable, "-m", "pefm.cli", "retrain", "--if-requested"],
                    env=env,
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            report["retrain"]["started"] = True
            log.info("retraining started: %s", pending.reason)
        return report

    def close(self) -> None:
        """End the retraining this monitor started, if it runs: stopping the monitor (`pefm up`'s
        Ctrl-C) had left it running, to start revisions after the stack had retired its own. Its
        job resumes from its last completed step at the next retraining."""
        process = self._retraining
        if process is None or process.poll() is not None:
            return
        log.info("stopping the retraining it started (pid %d)", process.pid)
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # its own session: the group is it and what it started
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
                return

    def _prune(self) -> None:
        """The drift reports past the retention, once a day (``pefm.storage.retention``); a
        failure leaves them to the next day's try, not this check."""
        from pefm.storage import retention

        if time.monotonic() - self._pruned < 86400:
            return
        self._pruned = time.monotonic()
        try:
            days = self.settings.retention_days
            if deleted := retention.prune_reports(self.db, days):
                log.info("pruned %d drift reports older than %d days", deleted, days)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("drift reports not pruned: %s", exc)

    async def latest(self, request: Request) -> Response:
        return json_response(await in_database(self._report, None))

    async def report(self, request: Request) -> Response:
        return json_response(await in_database(self._report, request.path_params["id"]))

    def _report(self, report_id: int | None) -> dict[str, Any]:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT id, created_at, model_version, series, drifted_series, breach FROM drift_reports"
                + (" WHERE id = %s" if report_id is not None else " ORDER BY id DESC LIMIT 1"),
                (report_id,) if report_id is not None else (),
            ).fetchone()
        if row is None:
            raise ApiError(404, "no such drift report" if report_id is not None else "no drift report yet")
        keys = ("id", "created_at", "model_version", "series", "drifted_series", "breach")
        return _summary(dict(zip(keys, row, strict=True)))


class DriftGauges:
    """The drift gauges: those of the monitor's latest check, and at its start those of the serving
    version's latest stored check (a monitor scaled from zero had shown no breach and no series
    until it ran a check itself)."""

    def __init__(self, registry):
        from prometheus_client import Gauge

        self.score = Gauge(
            "pefm_drift_score",
            "Drift score per series and feature (latest check)",
            ["series_id", "feature"],
            registry=registry,
        )
        self.detected = Gauge(
            "pefm_drift_detected", "1 when the series drifted in the latest check", ["series_id"], registry=registry
        )
        self.breach = Gauge("pefm_drift_breach", "1 when the latest check was a policy breach", registry=registry)
        self._shown: tuple[set[tuple[str, ...]], set[tuple[str, ...]]] = (set(), set())
        """The label sets of ``detected`` and ``score`` the last check set."""

    def show(self, series: dict[str, Any], breach: bool) -> None:
        """A check's series and signals only: not an older model's. The new values are set before
        the label sets the check no longer has are removed, so a scrape in between sees the old
        check's or the new one's, never none (clearing first had left a moment with no series)."""
        detected: dict[tuple[str, ...], float] = {}
        scored: dict[tuple[str, ...], float] = {}
        for series_id, entry in series.items():
            detected[series_id,] = 1.0 if entry["drifted"] else 0.0
            for feature in entry["input"]:
                if feature["score"] is not None:
                    scored[series_id, feature["feature"]] = feature["score"]
            if (entry.get("accuracy") or {}).get("ratio") is not None:
                scored[series_id, "accuracy_ratio"] = entry["accuracy"]["ratio"]
        for gauge, values, before in ((self.detected, detected, self._shown[0]), (self.score, scored, self._shown[1])):
            for labels, value in values.items():
                gauge.labels(*labels).set(value)
            for labels in before - values.keys():
                gauge.remove(*labels)
        self._shown = (set(detected), set(scored))
        self.breach.set(1.0 if breach else 0.0)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    created = report["created_at"]
    return {**report, "created_at": created if isinstance(created, str) else created.isoformat()}


def create_monitor_app(settings: Settings, db: Database, metrics: ServiceMetrics, openapi: dict) -> Starlette:
    service = MonitorService(settings, db, metrics)
    routes = [
        Route("/v1/drift/check", handled(service.check), methods=["POST"]),
        Route("/v1/drift/reports/latest", handled(service.latest), methods=["GET"]),
        Route(f"/v1/drift/reports/{row_id()}", handled(service.report), methods=["GET"]),
        *service_routes(metrics.endpoint, openapi),
    ]
    app = json_app(routes)
    app.state.monitor = service  # the function stops what it started (``MonitorService.close``)
    return app
