"""``pefm tracking``: the MLflow mirror of the registry (``pefm.tracking``)."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from pefm.cli import console, err, open_db, tracking_app


@tracking_app.command("sync")
def sync_command(
    follow: Annotated[
        bool, typer.Option("--follow", help="keep running: sync on every change the registry announces")
    ] = False,
    every: Annotated[float, typer.Option(help="with --follow: sync at least this often (seconds)")] = 300.0,
) -> None:
    """Make MLflow mirror the registry: a run and a registered model version per model version,
    aliases champion (serving) and challenger (under rollout)."""
    from pefm.config import get_settings
    from pefm.tracking import Mirror, sync

    uri = get_settings().mlflow_tracking_uri
    if not uri:
        err.print("[red]error:[/red] PEFM_MLFLOW_TRACKING_URI is not set")
        raise typer.Exit(1)
    with open_db() as db:
        if follow:
            console.print(f"mirroring the registry into {uri} (Ctrl-C stops)")
            try:
                Mirror(db.url, uri, threading.Event(), every=every).run()
            except KeyboardInterrupt:
                return
        with db.connection() as conn:
            report = sync(conn, uri)
    console.print(
        f"MLflow at {uri}: {len(report.runs_created)} runs and {len(report.versions_created)} model versions "
        f"created; champion {report.champion or '-'}, challenger {report.challenger or '-'}"
    )
