"""The local stack ``pefm up`` runs: ingest, inference behind the local router, the rollout API."""

from __future__ import annotations

import secrets
import signal
import threading
from pathlib import Path

from pefm.cli import console
from pefm.config import get_settings
from pefm.storage.database import Database


def tokens(home: Path) -> dict[str, str]:
    """The ingest and admin tokens: from the environment, else generated once and kept in
    ``$PEFM_HOME/tokens.env`` (mode 600)."""
    settings = get_settings()
    path = home / "tokens.env"
    stored = {}
    if path.exists():
        stored = dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)
    values = {
        "PEFM_INGEST_TOKEN": settings.ingest_token or stored.get("PEFM_INGEST_TOKEN") or secrets.token_urlsafe(24),
        "PEFM_ADMIN_TOKEN": settings.admin_token or stored.get("PEFM_ADMIN_TOKEN") or secrets.token_urlsafe(24),
    }
    if values != stored:
        home.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
    return values


def run_stack(db: Database, version: str, port: int) -> None:
    """Start the revisions, the router and the rollout API; block until Ctrl-C, then stop them."""
    import sys

    from pefm.local.runtime import LocalRuntime, spawn
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import TrafficTarget

    home = get_settings().home
    secrets_env = tokens(home)
    runtime = LocalRuntime(db.url, home / "logs")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status("starting the functions"):
            monitor = runtime.start_revision("monitor", "pefm-monitor-local", env=secrets_env)
            sink = {"K_SINK": f"{monitor.url}/v1/drift/check"}  # ingests announce themselves to the monitor
            ingest = runtime.start_revision("ingest", "pefm-ingest-local", env={**secrets_env, **sink})
            revision = f"pefm-inference-{version}"[:63].rstrip("-")
            runtime.start_revision("inference", revision, model_version=version)
            LocalRouter(db, {}).set_traffic("inference", [TrafficTarget(revision, 100, "blue")])
            router = runtime.start_router("inference", port=port)
            api_env = {"PEFM_DATABASE_URL": db.url, "PEFM_ROUTER_URL": router.url, **secrets_env}
            api = spawn(
                [sys.executable, "-m", "pefm.cli", "serve", "rollout", "--port", str(port + 10)],
                cwd=Path.cwd(),
                env=api_env,
                log=home / "logs" / "rollout-api.log",
                ready_path="/health",
                name="rollout-api",
                port=port + 10,
            )
            runtime.processes["rollout-api"] = api
        console.print(f"inference (local router): {router.url}/v1/forecast   blue: {router.url}/_tag/blue/")
        console.print(f"ingest:                   {ingest.url}/v1/observations  (token in {home / 'tokens.env'})")
        console.print(f"rollout API:              {api.url}/v1/rollouts")
        console.print(f"monitor (drift):          {monitor.url}/v1/drift/reports/latest")
        console.print(f"logs:                     {home / 'logs'}")
        console.print(
            f'tour: curl -s -XPOST {router.url}/v1/forecast -d \'{{"series_id":"realgdp","horizon":4}}\''
            "   (Ctrl-C stops everything)"
        )
        while not stop.wait(1):
            dead = [name for name, p in runtime.processes.items() if p.process.poll() is not None]
            if dead:
                console.print(f"[red]stopped unexpectedly:[/red] {', '.join(dead)} (see {home / 'logs'})")
                break
    finally:
        runtime.stop_all()
        console.print("local stack stopped")
