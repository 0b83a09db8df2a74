"""``pefm rollout``: start, watch and steer blue-green rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pefm.cli import app, console, error, open_db, print_json, rollout_app, warning


def controller(db):
    """The rollout controller: the local engine over the local router; on a cluster
    (PEFM_KNATIVE_NAMESPACE) Flagger moves the traffic, so it only reads the stored rollouts."""
    from pefm.config import get_settings
    from pefm.rollout.controller import RolloutController
    from pefm.rollout.probes import HttpProber
    from pefm.rollout.providers import DatabaseProvider, PrometheusProvider

    settings = get_settings()
    router = None
    if not settings.knative_namespace:
        from pefm.rollout.local import LocalRouter

        router = LocalRouter(db, {"inference": settings.router_url or "http://127.0.0.1:8080"})
    provider = PrometheusProvider(settings.prometheus_url) if settings.prometheus_url else DatabaseProvider(db)
    prober = HttpProber(db, shadow_key=settings.shadow_key)
    return RolloutController(db, router, provider, prober, grace_seconds=settings.revision_grace_seconds)


def cluster():
    """The cluster PEFM_KNATIVE_NAMESPACE names (kubeconfig, or the pod's own credentials); None locally."""
    from pefm.config import get_settings

    settings = get_settings()
    if not settings.knative_namespace:
        return None
    from pefm.rollout.cluster import KnativeCluster

    return KnativeCluster.from_settings(settings)


def _env(items: list[str] | None, option: str) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in items or [] if "=" in item)
    if len(env) != len(items or []):
        raise typer.BadParameter("expected NAME=VALUE", param_hint=option)
    return env


@rollout_app.command("start")
def start(
    green: Annotated[str | None, typer.Option(help="local runtime: the revision to roll out")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="the model version green serves (on a cluster: deploy it)")
    ] = None,
    image: Annotated[str | None, typer.Option(help="cluster: the image to deploy (default: the Service's)")] = None,
    env: Annotated[list[str] | None, typer.Option(help="cluster: NAME=VALUE added to the new revision")] = None,
    spec: Annotated[
        Path | None, typer.Option(help="rollout spec (default: PEFM_ROLLOUT_SPEC or knative/rollout.yaml)")
    ] = None,
    watch: Annotated[bool, typer.Option(help="follow the rollout until it finishes; exit 1 if it fails")] = False,
    timeout: Annotated[float, typer.Option(help="cluster: seconds to follow the Canary")] = 1800.0,
) -> None:
    """Start a rollout: of a running revision locally, of a model version on a cluster.

    Locally: move traffic from the serving revision to GREEN (at 0% until checks
    pass). On a cluster: deploy MODEL_VERSION as a template change; Flagger canaries the revision
    Knative creates, calling PEFM's webhooks. With --watch, follow it to its end: exit 1 when it is
    rolled back (on a cluster, 3 when the Canary or PEFM's record of it did not finish in time)."""
    from pefm.forecasting.registry import candidate_verdict
    from pefm.rollout.spec import RolloutSpec

    loaded = RolloutSpec.configured(spec)
    if (k8s := cluster()) is not None:
        if not model_version:
            raise typer.BadParameter("on a cluster a rollout starts from a model version", param_hint="--model-version")
        _deploy(k8s, loaded.service, model_version, image, _env(env, "--env"), watch, timeout)
        return
    if not green:
        raise typer.BadParameter("the local runtime rolls out a running revision", param_hint="--green")
    with open_db() as db:
        ctl = controller(db)
        rollout_id = ctl.start(loaded.service, green, loaded, model_version)
        console.print(f"rollout {rollout_id} started: {loaded.service} -> {green}")
        with db.connection() as conn:  # the analysis waits at 0% for a gate report: say so now, not never
            candidate = ctl.get(rollout_id).green_model_version
            passed, why = candidate_verdict(conn, candidate, loaded.require_gates)
        if passed is None:
            advice = f"; run pefm gate --candidate {candidate}" if candidate else ""
            warning("waiting at 0%", f"{why}{advice}")
        if watch:
            _report(ctl, ctl.run(rollout_id), rollout_id)


@rollout_app.command("deploy")
def deploy(
    model_version: Annotated[str, typer.Option(help="the registry version the new revision serves")],
    image: Annotated[
        str | None, typer.Option(help="its image (default: the Service's; a tag on a GPU Service gets its -cuda build)")
    ] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE added to the new revision")] = None,
    service: Annotated[str, typer.Option(help="the PEFM service (its Knative Service is pefm-SERVICE)")] = "inference",
) -> None:
    """Deploy MODEL_VERSION to the cluster (PEFM_KNATIVE_NAMESPACE): Flagger canaries it.

    A change of the Service's template only: Knative creates and names the revision."""
    if (k8s := cluster()) is None:
        error("set PEFM_KNATIVE_NAMESPACE: locally, pefm up and pefm retrain start revisions")
        raise typer.Exit(2)
    _deploy(k8s, service, model_version, image, _env(env, "--env"), False, 0)


def _deploy(k8s, service: str, model_version: str, image, env, watch: bool, timeout: float) -> None:
    from pefm.rollout.router import knative_service
    from pefm.storage.model_versions import get_version

    with open_db() as db, db.connection() as conn:
        get_version(conn, model_version)  # an unknown version fails here, before the cluster changes
    name = knative_service(service)
    before = k8s.canary(name).get("status", {}).get("lastAppliedSpec") if watch else None
    generation = k8s.deploy(name, model_version, image, env)
    revision = k8s.wait_for_revision(name, generation)
    console.print(f"{name}: revision {revision} serves {model_version}; Flagger canaries it", highlight=False)
    if not watch:
        return

    def show(status: dict) -> None:
        console.print(
            f"  canary {status.get('phase', '?')}: weight {status.get('canaryWeight', 0)}%, "
            f"failed checks {status.get('failedChecks', 0)}",
            highlight=False,
        )

    from pefm.rollout.cluster import ClusterError

    try:
        phase = k8s.follow(name, before, timeout, show)
    except ClusterError as exc:
        error(str(exc))
        raise typer.Exit(3) from None
    console.print(f"{name}: {phase}")
    settled = _settled(revision, timeout=120.0)  # the post-rollout webhook follows Flagger's last phase
    if settled is None:
        error("PEFM has not recorded the rollout's end: see pefm status")
        raise typer.Exit(3)
    console.print(f"rollout {settled[0]}: {settled[1]}", highlight=False)
    if phase != "Succeeded":
        raise typer.Exit(1)


def _settled(revision: str, timeout: float) -> tuple[int, str] | None:
    """The Flagger rollout of ``revision`` once PEFM's post-rollout webhook has ended it: its id and
    what the registry did; None if that has not happened within ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    with open_db() as db:
        while time.monotonic() < deadline:
            with db.connection() as conn:
                row = conn.execute(
                    """SELECT r.id, e.reason FROM rollouts r
                       JOIN rollout_events e ON e.rollout_id = r.id AND e.action = 'post-rollout'
                       WHERE r.engine = 'flagger' AND r.green_revision = %s ORDER BY e.id DESC LIMIT 1""",
                    (revision,),
                ).fetchone()
            if row:
                return row[0], row[1]
            time.sleep(2)
    return None


@rollout_app.command("run")
def run(rollout_id: int) -> None:
    """Run the local analysis loop of a rollout until it finishes (resumes from its stored state)."""
    if cluster() is not None:
        error("on a cluster Flagger runs the analysis: follow it with pefm rollout status")
        raise typer.Exit(2)
    with open_db() as db:
        ctl = controller(db)
        _report(ctl, ctl.run(rollout_id), rollout_id)


@rollout_app.command("status")
def status(
    rollout_id: Annotated[int | None, typer.Argument()] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print it as GET /v1/rollouts/{id} answers")] = False,
) -> None:
    """A rollout's phase, weights and events (default: the latest rollout)."""
    from pefm.rollout.api import rollout_json

    with open_db() as db, db.connection() as conn:
        if rollout_id is None:
            row = conn.execute("SELECT max(id) FROM rollouts").fetchone()
            if row[0] is None:
                if json_out:
                    print_json(None)
                else:
                    console.print("no rollouts yet")
                return
            rollout_id = row[0]
        ctl = controller(db)
        if json_out:
            print_json(rollout_json(ctl, rollout_id, events=True))
            return
        rollout = ctl.get(rollout_id)
        engine = f" (Flagger, Canary {rollout.canary})" if rollout.engine == "flagger" else ""
        console.print(
            f"rollout {rollout.id}{engine}: {rollout.service} {rollout.blue_revision} -> {rollout.green_revision}"
            f"  [{rollout.state.phase.value}] green {rollout.state.weight}%, "
            f"failed checks {rollout.state.failed_checks}/{rollout.spec.threshold}",
            highlight=False,
        )
        if rollout.engine == "flagger" and (k8s := cluster()) is not None:
            live = k8s.canary(rollout.canary.split("/", 1)[1]).get("status", {})
            console.print(
                f"Canary {rollout.canary} now: {live.get('phase', '?')}, canary weight {live.get('canaryWeight', 0)}%, "
                f"failed checks {live.get('failedChecks', 0)}",
                highlight=False,
            )
        table = Table("time", "action", "phase", "green %", "reason")
        for event in ctl.events(rollout_id):
            table.add_row(
                f"{event['ts']:%H:%M:%S}", event["action"], event["phase"], str(event["weight"]), event["reason"]
            )
        console.print(table)


def _operate(rollout_id: int, action: str, reason: str | None) -> None:
    """An operator's action: by the local controller, or for a Flagger rollout through its webhook
    gates and the Canary's spec.suspend."""
    with open_db() as db:
        actor = ctl = controller(db)
        if ctl.get(rollout_id).engine == "flagger":
            from pefm.rollout.webhooks import FlaggerOperator

            if (k8s := cluster()) is None:
                error(f"rollout {rollout_id} runs on a cluster: set PEFM_KNATIVE_NAMESPACE")
                raise typer.Exit(2)
            actor = FlaggerOperator(db, k8s)
        operation = getattr(actor, action)
        state = operation(rollout_id, reason) if reason else operation(rollout_id)
    console.print(f"rollout {rollout_id}: {state.phase.value}, green {state.weight}%")


ReasonOpt = Annotated[str | None, typer.Option(help="why: recorded with the action in the rollout's events")]


@rollout_app.command("promote")
def promote(rollout_id: int, reason: ReasonOpt = None) -> None:
    """Send all traffic to green now; on a cluster, approve Flagger's promotion gate.

    Blue stays at 0% under its tag."""
    _operate(rollout_id, "promote", reason)


@rollout_app.command("rollback")
def rollback(rollout_id: int, reason: ReasonOpt = None) -> None:
    """Send all traffic back to blue now; on a cluster, open Flagger's rollback gate.

    Locally also after a promotion."""
    _operate(rollout_id, "rollback", reason)


@rollout_app.command("pause")
def pause(rollout_id: int, reason: ReasonOpt = None) -> None:
    """Hold the rollout at its current weight (on a cluster: suspend the Canary)."""
    _operate(rollout_id, "pause", reason)


@rollout_app.command("resume")
def resume(rollout_id: int, reason: ReasonOpt = None) -> None:
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
    json_out: Annotated[bool, typer.Option("--json", help="print it as JSON (the exit code is the same)")] = False,
) -> None:
    """Which model serves, by the registry and by the traffic; exit 1 when they disagree.

    The registry's serving version, the revisions carrying the service's traffic and the version
    each serves, any rollout in progress and any retraining the drift monitor requested that none
    has answered yet."""
    from pefm.forecasting.registry import serving_id
    from pefm.rollout.cluster import ClusterTraffic
    from pefm.rollout.spec import RolloutSpec
    from pefm.rollout.status import service_status
    from pefm.storage import retrain_events

    with open_db() as db:
        ctl = controller(db)
        name = service or RolloutSpec.configured().service
        router = None
        with db.connection() as conn:
            if (k8s := cluster()) is not None:
                router = ClusterTraffic(k8s, serving_id(conn))
            request = retrain_events.pending_request(conn)
        status = service_status(ctl, name, router)
        if json_out:
            print_json(_status_json(ctl, status, request))
            if not status.agrees:
                raise typer.Exit(1)
            return
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
    if request:
        console.print(f"retraining requested by the drift monitor, not answered: {request.describe()}", highlight=False)
    if status.agrees:
        console.print("registry and traffic agree")
        return
    for problem in status.problems:
        error(problem, label="disagreement")
    raise typer.Exit(1)


def _status_json(ctl, status, request) -> dict:
    """``pefm status --json``: what the command prints, as one document."""
    from pefm.rollout.api import rollout_json

    serving = status.serving
    return {
        "service": status.service,
        "serving": None
        if serving is None
        else {"id": serving.id, "family": serving.family, "since": serving.status_changed_at.isoformat()},
        "traffic": [
            {"revision": t.revision, "tag": t.tag, "percent": t.percent, "model_version": t.model_version}
            for t in status.targets
        ],
        "rollout": None if status.rollout is None else rollout_json(ctl, status.rollout.id),
        "retraining_requested": request.describe() if request else None,
        "agrees": status.agrees,
        "problems": status.problems,
    }
