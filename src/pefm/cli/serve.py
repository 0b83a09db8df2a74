"""``pefm serve``: run a function locally exactly as Knative runs it."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from pefm.cli import app, error


@app.command()
def serve(
    service: Annotated[
        str, typer.Argument(help="ingest, inference, monitor, or rollout (the rollout API and controller)")
    ],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8080,
) -> None:
    """Serve a function locally as Knative runs it (Ctrl-C stops it).

    ingest, inference and monitor: func-python's serve(new) on LISTEN_ADDRESS; rollout: the
    rollout API and, locally, its controller, on Hypercorn."""
    from pefm.config import get_settings
    from pefm.local.runtime import port_free
    from pefm.serving.function import ServiceFunction

    if service not in ("ingest", "inference", "monitor", "rollout"):
        error(f"unknown service {service!r}: ingest, inference, monitor or rollout")
        raise typer.Exit(2)
    if not port_free(port, host):
        error(f"cannot listen on {host}:{port}: another program does, or it is no address of this machine")
        raise typer.Exit(1)
    if service == "rollout":
        _serve_rollout(host, port)
        return
    embedded = None
    if get_settings().database_url is None:  # the embedded default: share its URL with the function
        from pefm.local.secrets import local_secrets
        from pefm.storage.embedded import EmbeddedPostgres

        # what `pefm train` signs here loads: its public half is trusted, beside the environment's
        # keys (``verify_keys``); the function is handed no other local secret (no private key)
        settings = get_settings()
        os.environ["PEFM_VERIFY_KEYS"] = local_secrets(settings.home, settings)["PEFM_VERIFY_KEYS"]
        get_settings.cache_clear()
        embedded = EmbeddedPostgres(get_settings().embedded_pgdata)
        os.environ["PEFM_DATABASE_URL"] = embedded.start()
    os.environ["LISTEN_ADDRESS"] = f"{host}:{port}"
    from func_python.http import serve as func_serve

    def new() -> ServiceFunction:
        return ServiceFunction(service)

    try:
        func_serve(new)
    finally:
        if embedded is not None:
            embedded.stop()


def _serve_rollout(host: str, port: int) -> None:
    """The rollout API. Locally it runs the controller loop over the local router; on a cluster
    (PEFM_KNATIVE_NAMESPACE) Flagger runs the rollouts and the API serves its webhooks."""
    import asyncio
    import threading

    import hypercorn.asyncio
    import hypercorn.config

    from pefm.cli import open_db
    from pefm.cli.rollout import cluster, controller
    from pefm.config import get_settings
    from pefm.local.runtime import watch_stack
    from pefm.rollout.api import ControllerLoop, create_rollout_app
    from pefm.rollout.spec import RolloutSpec
    from pefm.rollout.webhooks import FlaggerHooks, FlaggerOperator

    watch_stack()  # `pefm up`'s ends with it, however that ended: its controller is the stack's
    settings = get_settings()
    spec = RolloutSpec.configured()
    with open_db() as db:
        ctl = controller(db)
        hooks = operator = loop = None
        if (k8s := cluster()) is not None:
            hooks = FlaggerHooks(db, k8s, ctl.prober, ctl.provider, spec)
            operator = FlaggerOperator(db, k8s)
        else:
            loop = ControllerLoop(ctl)
            loop.start()
        stopping = threading.Event()
        if settings.mlflow_tracking_uri:  # the registry's changes, mirrored into MLflow as they commit
            from pefm.tracking import Mirror

            Mirror(db.url, settings.mlflow_tracking_uri, stopping).start()
        config = hypercorn.config.Config()
        config.bind = [f"{host}:{port}"]
        try:
            asyncio.run(hypercorn.asyncio.serve(create_rollout_app(settings, ctl, spec, hooks, operator), config))
        finally:
            stopping.set()
            if loop is not None:
                loop.stop.set()
