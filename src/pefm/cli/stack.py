"""The local stack ``pefm up`` runs: ingest, inference behind the local router, the rollout API,
the drift monitor and the dashboard."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import typer
from rich.text import Text

from pefm.cli import console, error, warning
from pefm.config import get_settings
from pefm.storage import retention
from pefm.storage.database import Database

if TYPE_CHECKING:
    from pefm.rollout.local import LocalRouter

ROOT = Path(__file__).resolve().parents[3]
LOCK = "pefm.local.stack"
"""Held by a running ``pefm up`` for its life: one stack per database (a second would take over
the traffic and, stopping, retire the first one's revisions)."""
SERVICES = ("monitor", "ingest", "inference")
API_OFFSET = 10
"""The rollout API listens on the router's port + API_OFFSET."""


def run_stack(
    db: Database,
    serving_model: Callable[[Database], str],
    port: int,
    dashboard_port: int | None = None,
    replicas: int | None = None,
) -> None:
    """Settle what an earlier stack left (``_settle``), then start the serving version's revisions,
    the router, the rollout API and the dashboard; block until Ctrl-C, then stop them.
    ``serving_model``: makes sure a model serves and returns its version, asked once the earlier
    stack's rollouts are settled (a rollback may have changed it). ``replicas``: of each inference
    revision, this stack's and those retraining starts (``PEFM_LOCAL_REPLICAS``). Exits 1 when
    another stack runs on the database, a process cannot start (a port in use) or one stops unasked."""
    from pefm.rollout.local import LocalRouter

    with db.advisory_lock(LOCK, wait=False) as (held, _):
        if not held:
            error("another `pefm up` runs on this database; stop it first")
            raise typer.Exit(1)
        local = LocalRouter(db, {"inference": f"http://127.0.0.1:{port}"})
        _settle(db, local)
        version = serving_model(db)
        try:
            stopped = _run(db, local, version, port, dashboard_port, replicas)
        except RuntimeError as exc:  # a process that did not start: its log's tail says why
            error(str(exc))
            raise typer.Exit(1) from None
    if stopped:
        raise typer.Exit(1)


def check_configuration() -> None:
    """ConfigError (one red line, exit 1) for settings the stack's processes would refuse only once
    started: Redis without the key its entries are tagged with (``open_cache``'s own check, as
    inference's replicas make it), which had left the revision unready until spawn's minute ran out."""
    from pefm.serving.cache import open_cache

    settings = get_settings()
    if settings.redis_url and not settings.cache_key:
        open_cache(settings, None)  # raises; with the key it would only make a client, never connected


def _run(
    db: Database, local: LocalRouter, version: str, port: int, dashboard_port: int | None, replicas: int | None
) -> bool:
    """The stack until Ctrl-C (False) or a process stopped unasked (True)."""
    import sys

    from pefm.local.runtime import STACK, LocalRuntime, mlflow_environment, process_identity, spawn
    from pefm.local.secrets import FILLED, local_secrets
    from pefm.rollout.router import revision_name

    settings = get_settings()
    replicas = replicas or settings.local_replicas
    home = settings.home
    secrets_env = local_secrets(home, settings)
    runtime = LocalRuntime(db.url, home / "logs")

    def only(*names: str) -> dict[str, str]:  # each process gets the secrets it uses, no others
        return {name: secrets_env[name] for name in names}

    passwords = {f"PEFM_ROLE_PASSWORD_{c.upper()}": p for c, p in settings.role_passwords.items()}
    # MLflow's URL may carry a password, and MLflow's own variables are its credentials: to the
    # rollout API's mirror and the dashboard's links only
    mlflow = {}
    if settings.mlflow_tracking_uri:
        mlflow = {"PEFM_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, **mlflow_environment()}
    # Prometheus's URL may carry a password too: to what judges rollouts (the rollout API, the
    # monitor's retraining) and the dashboard only
    prometheus = {"PEFM_PROMETHEUS_URL": settings.prometheus_url} if settings.prometheus_url else {}
    router_url = local.url("inference")
    # what the monitor's retraining, the rollout API and the revisions it starts need to know
    shared_env = {
        "PEFM_HOME": str(home),
        "PEFM_ROUTER_URL": router_url,
        "PEFM_REVISION_GRACE_SECONDS": f"{settings.revision_grace_seconds:g}",
        **({"PEFM_LOCAL_REPLICAS": str(replicas)} if replicas else {}),
        # the admin token for their writes; the shadow key the prober signs with and the revisions
        # retraining starts verify
        **only("PEFM_ADMIN_TOKEN", "PEFM_SHADOW_KEY"),
    }
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # the terminal closed; not under nohup
        signal.signal(signal.SIGHUP, lambda *_: stop.set())
    # everything started from here on, and everything it starts, ends once this process is gone,
    # however it ended (``watch_stack``): a SIGKILL had left the whole stack running
    if me := process_identity(os.getpid()):
        os.environ[STACK] = me
    else:  # no /proc to watch it by
        os.environ.pop(STACK, None)
    unasked = False
    try:
        with console.status("starting the functions"):
            # drift in the monitor retrains (pefm retrain), and a candidate that passes the gates
            # becomes a green revision whose rollout the rollout API's controller runs: the loop
            # ... as the trainer: its role's URL and the signing key, and the role passwords (if the
            # server wants any) of the revisions it starts
            monitor_env = {
                **shared_env,
                **passwords,
                "PEFM_RETRAIN": settings.retrain or "local",
                "PEFM_TRAINER_DATABASE_URL": runtime.url_for("trainer"),
                **prometheus,
                # CloudEvents' token; the trainer's key (only the trainer signs) and the public keys
                # the revisions it starts load models with
                **only("PEFM_EVENT_TOKEN", "PEFM_SIGNING_KEY", "PEFM_VERIFY_KEYS"),
            }
            monitor = runtime.start_revision("monitor", "pefm-monitor-local", env=monitor_env)
            sink = {"K_SINK": f"{monitor.url}/v1/drift/check"}  # ingests announce themselves to the monitor
            # its own token, the event token for its announcements, the admin token for backdated writes
            ingest_env = only("PEFM_INGEST_TOKEN", "PEFM_EVENT_TOKEN", "PEFM_ADMIN_TOKEN")
            ingest_env |= sink
            ingest = runtime.start_revision("ingest", "pefm-ingest-local", env=ingest_env)
            revision = revision_name("inference", version)
            # no token; the shadow key and the public keys, the same as the monitor's and the rollout API's
            keys = only("PEFM_SHADOW_KEY", "PEFM_VERIFY_KEYS")
            runtime.start_revision("inference", revision, model_version=version, env=keys, replicas=replicas)
            _serve_only(local, revision)
            router = runtime.start_router("inference", port=port, env=only("PEFM_ADMIN_TOKEN"))
            # the public keys: it loads a canary's two models to measure their divergence again
            api_env = {
                "PEFM_DATABASE_URL": runtime.url_for("rollout"),
                **shared_env,
                **only("PEFM_VERIFY_KEYS"),
                **prometheus,
                **mlflow,
            }
            api = spawn(
                [sys.executable, "-m", "pefm.cli", "serve", "rollout", "--port", str(port + API_OFFSET)],
                cwd=Path.cwd(),
                env=api_env,
                log=home / "logs" / "rollout-api.log",
                ready_path="/health",
                name="rollout-api",
                port=port + API_OFFSET,
            )
            runtime.processes["rollout-api"] = api
            dashboard_port = dashboard_port or settings.dashboard_port
            dashboard_env = {
                "PEFM_DATABASE_URL": runtime.url_for("dashboard"),
                "PEFM_ROLLOUT_API_URL": api.url,
                "PEFM_ROUTER_URL": router_url,  # as-of forecasts not stored yet come from the inference API
                "PEFM_DASHBOARD_PORT": str(dashboard_port),
                **prometheus,
                **mlflow,
            }
            dashboard = spawn(
                [sys.executable, "-m", "dashboard.app"],
                cwd=ROOT,  # the dashboard is a folder of the repository, not part of the pefm package
                env=dashboard_env,
                log=home / "logs" / "dashboard.log",
                ready_path="/health",
                name="dashboard",
                port=dashboard_port,
            )
            runtime.processes["dashboard"] = dashboard
        with db.connection() as conn:
            first_run = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM drift_reports)").fetchone()[0]
        if first_run:  # the first drift report, so the dashboard's Drift page has one to show
            with console.status("first drift check"):
                _first_drift_check(monitor.url, secrets_env["PEFM_ADMIN_TOKEN"], monitor.log)
        console.print(f"inference (local router): {router.url}/v1/forecast   blue: {router.url}/_tag/blue/")

        def kept(name: str) -> str:  # one the environment sets is not in tokens.env
            given = os.environ.get(name) and name not in FILLED  # not one use_local_secrets put there
            return f"{name} from the environment" if given else f"in {home / 'tokens.env'}"

        ingest_token = kept("PEFM_INGEST_TOKEN")
        console.print(f"ingest:                   {ingest.url}/v1/observations  (token {ingest_token})")
        console.print(f"rollout API:              {api.url}/v1/rollouts")
        console.print(f"monitor (drift):          {monitor.url}/v1/drift/reports/latest")
        admin_token = kept("PEFM_ADMIN_TOKEN")
        console.print(f"dashboard:                {dashboard.url}/   (admin token {admin_token})")
        console.print(f"logs:                     {home / 'logs'}")
        console.print(
            f"tour: open {dashboard.url}/forecasts, then curl -s -XPOST {router.url}/v1/forecast "
            '-d \'{"series_id":"realgdp","horizon":4}\' and watch it on /serving   (Ctrl-C stops everything)'
        )
        pruned = -math.inf
        while not stop.wait(1):
            if time.monotonic() - pruned >= 86400:  # what TimescaleDB's policies do, on plain tables
                pruned = time.monotonic()
                try:
                    retention.prune(db, settings.retention_days)
                except psycopg.Error as exc:  # tomorrow's try; the stack goes on
                    warning("prune", f"the logs were not pruned: {exc}")
            if dead := runtime.exited():
                console.print(
                    Text.assemble(("stopped unexpectedly:", "red"), f" {', '.join(dead)} (see {home / 'logs'})")
                )
                unasked = True
                break
    finally:
        runtime.stop_all()
        local.retire_all("inference")  # the revisions retraining started, in other processes
        console.print("local stack stopped")
    return unasked


def _settle(db: Database, router: LocalRouter) -> None:
    """What an earlier stack left, settled before this one reads which version serves: the
    revisions it (or retraining after it) started are forgotten, as none of them runs; a rollout
    left unfinished is rolled back (the registry follows: blue's version serves again and the
    candidate is rejected, even one `pefm models promote` made serve meanwhile); the newest rollout
    settles at once and its loser is retired. Settled once the stack had started the serving
    version's revision, the loser was that very revision after blue's version was promoted again
    by hand (stopped, its traffic answered 503), and the registry could come to name another
    version than the one started and routed."""
    from pefm.rollout.controller import RolloutController

    for service in SERVICES:
        router.retire_all(service)
    controller = RolloutController(db, router, provider=None, prober=None, grace_seconds=0)
    for rollout_id in controller.active():
        controller.rollback(rollout_id, "the local stack restarted: the green revision no longer runs")
        warning("rolled back", f"rollout {rollout_id}: {controller.events(rollout_id)[-1]['reason']}")
    with db.connection() as conn:
        newest = conn.execute("SELECT max(id) FROM rollouts WHERE service = 'inference'").fetchone()[0]
    if newest is not None:
        controller.tick(newest)


def _serve_only(router: LocalRouter, revision: str) -> None:
    """All of the traffic to ``revision``, the serving version's, which the stack has started: the
    newest rollout's winner no longer runs, and after a `pefm models promote` it does not even
    serve the serving version."""
    from pefm.rollout.router import same_traffic, sole

    if not same_traffic(router.traffic("inference"), sole(revision)):
        router.set_traffic("inference", sole(revision))


def _first_drift_check(monitor_url: str, admin_token: str, log: Path) -> None:
    """Ask the monitor for a drift check. One that fails (the serving model's key not trusted by
    the monitor, a check past 300 s) is a yellow line, not the end of the stack: everything else
    serves, and each ingest asks the monitor for another check."""
    try:
        httpx.post(
            f"{monitor_url}/v1/drift/check", headers={"Authorization": f"Bearer {admin_token}"}, timeout=300
        ).raise_for_status()
    except httpx.HTTPStatusError as exc:
        why = f"HTTP {exc.response.status_code}: {' '.join(exc.response.text.split())[:500]}"
    except httpx.HTTPError as exc:  # no answer: refused, cut off, timed out
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        return
    warning(
        "drift",
        f"the first drift check failed ({why}); the stack goes on, each ingest asks for another "
        f"(the monitor's log: {log})",
    )
