"""``pefm local``: revisions of the local runtime that run elsewhere (containers in docker compose)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer

from pefm.cli import app, console, error, open_db

local_app = typer.Typer(help="The local runtime: revisions behind the local traffic router.", no_args_is_help=True)
app.add_typer(local_app, name="local")


@local_app.command("register")
def register(
    service: Annotated[str, typer.Argument(help="the service, e.g. inference")],
    revision: Annotated[str, typer.Argument(help="the revision's name (its K_REVISION)")],
    urls: Annotated[
        list[str], typer.Argument(help="where the router reaches each replica, e.g. http://inference-blue:8080")
    ],
    model_version: Annotated[str | None, typer.Option(help="the model version it serves")] = None,
    tag: Annotated[str, typer.Option(help="the tag of the first revision's traffic")] = "blue",
    container_concurrency: Annotated[
        int, typer.Option(min=0, help="requests the router lets one replica have in flight (0: no limit)")
    ] = 0,
) -> None:
    """Record a revision the local router can send SERVICE's traffic to, one URL per replica.

    The router sends each request to the replica with the fewest in flight. A service's first
    revision gets all of the traffic (one target tagged TAG); once a service has traffic, rollouts
    move it."""
    from pefm.local.runtime import record_revision
    from pefm.rollout.local import LocalRouter
    from pefm.rollout.router import TAG, TrafficTarget
    from pefm.storage.model_versions import version_exists

    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            error(f"revision URL must be http(s)://host[:port], not {url!r}")
            raise typer.Exit(2)
    if not TAG.fullmatch(tag):
        error(f"--tag must be a DNS-1035 label (a-z, 0-9, '-'; a letter first), not {tag!r}")
        raise typer.Exit(2)
    urls = [url.rstrip("/") for url in urls]
    where = ", ".join(urls)
    with open_db() as db:
        with db.connection() as conn:
            if model_version is not None and not version_exists(conn, model_version):  # would serve nothing known
                raise LookupError(f"no model version {model_version!r} in the registry")
            record_revision(
                conn, service, revision, urls, model_version=model_version, container_concurrency=container_concurrency
            )
        router = LocalRouter(db, {})
        if router.traffic(service):
            console.print(f"{service}: registered {revision} at {where}; traffic unchanged", highlight=False)
            return
        router.set_traffic(service, [TrafficTarget(revision, 100, tag)])
    console.print(f"{service}: registered {revision} at {where}; all of its traffic, tagged {tag}", highlight=False)
