"""``pefm rollout``: start, watch and steer blue-green rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pefm.cli import app, console, err, open_db, rollout_app


def controller(db):
    """The controller for the configured platform: Knative (PEFM_KNATIVE_NAMESPACE) or local."""
    from pefm.config import get_settings
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.probes import HttpProber
    from pefm.rollout.providers import DatabaseProvider, PrometheusProvider

    settings = get_settings()
    if settings.knative_namespace:
        from pefm.rollout.knative import KnativeRouter

        router = KnativeRouter.from_kubeconfig(settings.knative_namespace, settings.knative_domain)
    else:
        from pefm.rollout.local import LocalRouter

        router = LocalRouter(db, {"inference": settings.router_url or "http://127.0.0.1:8080"})
    provider = PrometheusProvider(settings.prometheus_url) if settings.prometheus_url else DatabaseProvider(db)
    return RolloutController(
        db, router, provider, HttpProber(router, db), grace_seconds=settings.revision_grace_seconds
    )


def routed_service(service: str) -> str:
    """The name the router knows a PEFM service by: its Knative Service on a cluster, else itself."""
    from pefm.config import get_settings
    from pefm.rollout.router import knative_service

    return knative_service(service) if get_settings().knative_namespace else service


@rollout_app.command("start")
def start(
    green: Annotated[str, typer.Option(help="the new revision")],
    service: Annotated[str, typer.Option(help="service to roll out")] = "inference",
    model_version: Annotated[str | None, typer.Option(help="the model version green serves (its gates)")] = None,
    spec: Annotated[
        Path | None, typer.Option(help="rollout spec (default: PEFM_ROLLOUT_SPEC or knative/rollout.yaml)")
    ] = None,
    watch: Annotated[bool, typer.Option(help="run the analysis until the rollout finishes")] = False,
) -> None:
    """Start moving traffic from the serving revision to GREEN (at 0% until checks pass)."""
    from pefm.rollout.spec import RolloutSpec

    loaded = RolloutSpec.configured(spec)
    with open_db() as db:
        ctl = controller(db)
        rollout_id = ctl.start(service, green, loaded, model_version)
        console.print(f"rollout {rollout_id} started: {service} -> {green}")
        if watch:
            _report(ctl, ctl.run(rollout_id), rollout_id)


@rollout_app.command("deploy")
def deploy(
    model_version: Annotated[str, typer.Option(help="the registry version the green revision serves")],
    image: Annotated[
        str | None, typer.Option(help="its image (default: the Service's; a -cuda Service stays CUDA)")
    ] = None,
    service: Annotated[str, typer.Option(help="the PEFM service (its Knative Service is pefm-SERVICE)")] = "inference",
) -> None:
    """Create the green revision of a service's Knative Service (PEFM_KNATIVE_NAMESPACE) serving
    MODEL_VERSION at 0%; prints its name for `pefm rollout start --green`."""
    from pefm.config import get_settings
    from pefm.drift.retrain import KnativeDeployer
    from pefm.storage.model_versions import get_version

    if not get_settings().knative_namespace:
        err.print("[red]error:[/red] set PEFM_KNATIVE_NAMESPACE: locally, pefm up and pefm retrain start revisions")
        raise typer.Exit(2)
    with open_db() as db, db.connection() as conn:
        version = get_version(conn, model_version)
        revision = KnativeDeployer(controller(db).router, service, image).deploy(version)
    console.print(f"green revision: {revision}", highlight=False)


@rollout_app.command("run")
def run(rollout_id: int) -> None:
    """Run the analysis loop of a rollout until it finishes (resumes from its stored state)."""
    with open_db() as db:
        ctl = controller(db)
        _report(ctl, ctl.run(rollout_id), rollout_id)


@rollout_app.command("status")
def status(rollout_id: Annotated[int | None, typer.Argument()] = None) -> None:
    """A rollout's phase, weights and events (default: the latest rollout)."""
    with open_db() as db, db.connection() as conn:
        if rollout_id is None:
            row = conn.execute("SELECT max(id) FROM rollouts").fetchone()
            if row[0] is None:
                console.print("no rollouts yet")
                return
            rollout_id = row[0]
        ctl = controller(db)
        rollout = ctl.get(rollout_id)
        console.print(
            f"rollout {rollout.id}: {rollout.service} {rollout.blue_revision} -> {rollout.green_revision}"
            f"  [{rollout.state.phase.value}] green {rollout.state.weight}%, "
            f"failed checks {rollout.state.failed_checks}/{rollout.spec.threshold}",
            highlight=False,
        )
        table = Table("time", "action", "phase", "green %", "reason")
        for event in ctl.events(rollout_id):
            table.add_row(
                f"{event['ts']:%H:%M:%S}", event["action"], event["phase"], str(event["weight"]), event["reason"]
            )
        console.print(table)


def _operate(rollout_id: int, action: str, reason: str | None) -> None:
    with open_db() as db:
        ctl = controller(db)
        operation = getattr(ctl, action)
        state = operation(rollout_id, reason) if reason else operation(rollout_id)
    console.print(f"rollout {rollout_id}: {state.phase.value}, green {state.weight}%")


@rollout_app.command("promote")
def promote(rollout_id: int, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Send all traffic to green now (blue stays at 0% under its tag)."""
    _operate(rollout_id, "promote", reason)


@rollout_app.command("rollback")
def rollback(rollout_id: int, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Send all traffic back to blue now (also after a promotion)."""
    _operate(rollout_id, "rollback", reason)


@rollout_app.command("pause")
def pause(rollout_id: int, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Hold the rollout at its current weight."""
    _operate(rollout_id, "pause", reason)


@rollout_app.command("resume")
def resume(rollout_id: int, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Continue a paused rollout."""
    _operate(rollout_id, "resume", reason)


def _report(ctl, state, rollout_id: int) -> None:
    """Print how a rollout ended; exit 1 when it was rolled back or failed (CI/CD fails the job)."""
    from pefm.rollout.analysis import Phase

    last = ctl.events(rollout_id)[-1]
    console.print(f"rollout {rollout_id}: {state.phase.value}, green {state.weight}%: {last['reason']}")
    if state.phase in (Phase.ROLLED_BACK, Phase.FAILED):
        raise typer.Exit(1)


@app.command("status")
def serving_status(
    service: Annotated[str | None, typer.Option(help="the PEFM service (default: the rollout spec's)")] = None,
) -> None:
    """Which model serves: the registry's serving version, the revisions carrying the service's
    traffic and the version each serves, and any rollout in progress. Exits 1 when the registry
    and the traffic disagree."""
    from pefm.rollout.spec import RolloutSpec
    from pefm.rollout.status import service_status

    with open_db() as db:
        ctl = controller(db)
        name = routed_service(service or RolloutSpec.configured().service)
        status = service_status(ctl, name)
    serving = status.serving
    console.print(
        f"serving model: {serving.id} ({serving.family}, since {serving.status_changed_at:%Y-%m-%d %H:%M:%S})"
        if serving
        else "serving model: none",
        highlight=False,
    )
    table = Table("revision", "tag", "traffic", "model version", title=f"{name} traffic")
    for t in status.targets:
        table.add_row(t.revision or "(latest)", t.tag or "", f"{t.percent}%", t.model_version or "-")
    console.print(table)
    if status.rollout:
        r = status.rollout
        console.print(
            f"rollout {r.id} in progress: {r.blue_revision} -> {r.green_revision} ({r.green_model_version}) "
            f"[{r.state.phase.value}] green {r.state.weight}%",
            highlight=False,
        )
    if status.agrees:
        console.print("registry and traffic agree")
        return
    for problem in status.problems:
        err.print(f"[red]disagreement:[/red] {problem}", highlight=False)
    raise typer.Exit(1)
