"""``pefm tracking``: the MLflow mirror of the registry (``pefm.tracking``)."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from pefm.cli import console, error, open_db, tracking_app


@tracking_app.command("sync")
def sync_command(
    follow: Annotated[
        bool, typer.Option("--follow", help="keep running: sync on every change the registry announces")
    ] = False,
    every: Annotated[
        float, typer.Option(min=1.0, help="with --follow: sync at least this often (seconds, 1 or more)")
    ] = 300.0,
) -> None:
    """Make MLflow mirror the registry.

    A run and a registered model version per model version, aliases champion (serving) and
    challenger (under rollout). MLflow away, refusing, or its client not installed: one red line
    and exit code 1 (with --follow: a warning, and the mirror retries)."""
    from pefm.config import get_settings
    from pefm.tracking import Mirror, TrackingUnavailable, public_uri, require_client, scrubbed, sync

    uri = get_settings().mlflow_tracking_uri
    if not uri:
        error("PEFM_MLFLOW_TRACKING_URI is not set")
        raise typer.Exit(1)
    try:
        require_client()  # the server may come later (--follow waits for it), the client must be here
    except TrackingUnavailable as exc:
        error(str(exc))
        raise typer.Exit(1) from None
    from mlflow.exceptions import MlflowException

    with open_db() as db:
        if follow:
            console.print(f"mirroring the registry into {public_uri(uri)} (Ctrl-C stops)")
            try:
                Mirror(db.url, uri, threading.Event(), every=every).run()
            except KeyboardInterrupt:
                return
        with db.connection() as conn:
            try:
                report = sync(conn, uri)
            except TrackingUnavailable as exc:  # away before the sync began
                error(str(exc))
                raise typer.Exit(1) from None
            except MlflowException as exc:  # refusing a call, or gone part-way through (retries spent)
                error(f"MLflow at {public_uri(uri)} failed the sync: {scrubbed(exc.message, uri)}")
                raise typer.Exit(1) from None
    console.print(
        f"MLflow at {public_uri(uri)}: {len(report.runs_created)} runs and "
        f"{len(report.versions_created)} model versions created; "
        f"champion {report.champion or '-'}, challenger {report.challenger or '-'}"
    )
