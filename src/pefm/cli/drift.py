"""``pefm drift`` and ``pefm retrain``: drift checks, reports, and the retraining job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from pefm.cli import app, console, drift_app, open_db, print_json


def _policy(path: Path | None):
    from pefm.config import get_settings
    from pefm.drift.policy import DriftPolicy

    return DriftPolicy.load(path or get_settings().drift_policy)


@drift_app.command("check")
def drift_check(
    series: Annotated[list[str] | None, typer.Option("--series", "-s", help="only these series")] = None,
    policy: Annotated[Path | None, typer.Option(help="drift policy TOML (default: the shipped one)")] = None,
) -> None:
    """Check the serving model's series for drift, store the report and print it.

    A check of some series, or under a policy of your own (--policy), is not counted toward the
    monitor's breach. It requests no retraining: a breach due for one is requested by the drift
    monitor at its next check."""
    from pefm.drift.monitor import check, due_for_retraining, monitored_version

    loaded = _policy(policy)
    with open_db() as db, db.connection() as conn, console.status("checking drift (Evidently)"):
        if series:  # a mistyped id would make a report of nothing
            version = monitored_version(conn)
            if unknown := sorted(set(series) - set(version.series_ids)):
                raise LookupError(f"{version.id} does not forecast {', '.join(unknown)}: nothing checked")
        report = check(conn, loaded, series=series, counted=policy is None)
        due, why = due_for_retraining(conn, report, loaded)
    _print(report)
    console.print(
        f"report {report['id']}: {len(report['drifted_series'])} drifted series; "
        f"breach: {report['breach']}; retraining: "
        f"{'due, requested by a monitor running with PEFM_RETRAIN=request or local' if due else 'not due'} ({why})"
    )


@drift_app.command("report")
def drift_report(
    report_id: int,
    evidently: Annotated[bool, typer.Option(help="print only the Evidently snapshots, as JSON (for jq)")] = False,
) -> None:
    """Show a stored drift report."""
    with open_db() as db, db.connection() as conn:
        row = conn.execute(
            "SELECT id, created_at, model_version, series, drifted_series, breach, evidently"
            " FROM drift_reports WHERE id = %s",
            (report_id,),
        ).fetchone()
    if row is None:
        raise LookupError(f"no drift report {report_id}")
    report = dict(
        zip(["id", "created_at", "model_version", "series", "drifted_series", "breach", "evidently"], row, strict=True)
    )
    if evidently:  # JSON alone on standard output: the table before it made it unreadable to a parser
        print_json(report["evidently"])
    else:
        _print(report)


@app.command()
def retrain(
    dry_run: Annotated[bool, typer.Option(help="say what would be done, do nothing")] = False,
    model: Annotated[str | None, typer.Option(help="model family (default: the serving model's)")] = None,
    windows: Annotated[int | None, typer.Option(min=1, help="backtest windows (default: the serving model's)")] = None,
    h: Annotated[
        int | None, typer.Option(min=1, help="backtest horizon, steps 1..h (default: the serving model's, else 8)")
    ] = None,
    deploy: Annotated[
        bool, typer.Option(help="on passing gates: deploy the candidate (local: + rollout; cluster: Flagger's canary)")
    ] = True,
    gate_policy: Annotated[
        Path | None, typer.Option(help="gate policy TOML (default: PEFM_GATE_POLICY or the shipped one)")
    ] = None,
    revision_env: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE for the green revision's environment (local runtime)")
    ] = None,
    if_requested: Annotated[
        bool,
        typer.Option(
            "--if-requested",
            help="only if the drift monitor requested a retraining that none has started since (PEFM_RETRAIN=request"
            " or local); else do nothing and exit 0",
        ),
    ] = False,
) -> None:
    """Retrain what serves and deploy the candidate only if it passes the gates.

    Train a candidate on data as of now, backtest and gate it against the serving model on the
    same windows, and only if it passes create the green revision and start its rollout.
    Single-flight; resumes a job that stopped part-way; every step recorded. Exits 1 when the
    candidate failed its gates: in this run, or in the finished job this run finds up-to-date
    (unless it was promoted by hand since); else 0."""
    from pefm.cli.rollout import cluster, controller
    from pefm.config import get_settings
    from pefm.drift.retrain import ClusterDeployer, LocalDeployer
    from pefm.drift.retrain import retrain as run_retrain
    from pefm.forecasting.models import DEFAULT_MODEL, MODEL_NAMES
    from pefm.rollout.spec import RolloutSpec
    from pefm.storage import retrain_events
    from pefm.storage.model_versions import get_version

    if model is not None and model not in (DEFAULT_MODEL, *MODEL_NAMES):
        raise typer.BadParameter(
            f"one of {', '.join((DEFAULT_MODEL, *MODEL_NAMES))}, not {model!r}", param_hint="--model"
        )
    env = dict(item.split("=", 1) for item in revision_env or [] if "=" in item)
    if len(env) != len(revision_env or []):
        raise typer.BadParameter("expected NAME=VALUE", param_hint="--revision-env")
    settings = get_settings()
    with open_db() as db:
        deployer = starter = None
        if deploy and not dry_run:
            spec = RolloutSpec.configured()
            if (k8s := cluster()) is not None:  # Flagger starts the rollout of the new revision
                deployer = ClusterDeployer(k8s, spec.service)
            else:
                from pefm.local.runtime import LocalRuntime

                ctl = controller(db)
                deployer = LocalDeployer(LocalRuntime(db.url, settings.home / "logs"), env)
                starter = lambda revision, version: ctl.start(spec.service, revision, spec, version.id)  # noqa: E731
        with console.status("retraining"):
            outcome = run_retrain(
                db,
                model=model,
                spec_changes={k: v for k, v in (("windows", windows), ("h", h)) if v},
                deployer=deployer,
                start_rollout=starter,
                dry_run=dry_run,
                reason="pefm retrain",
                gate_policy=gate_policy or settings.gate_policy,
                if_requested=if_requested,
            )
        if outcome["status"] == "not-requested":
            console.print(f"retrain: not requested ({outcome['reason']})")
            return
        with db.connection() as conn:
            events = retrain_events.run_steps(conn, outcome["run_id"])
            failed = outcome["status"] == "gates-failed" or (
                outcome["status"] == "up-to-date"
                and outcome["step"] == "gates-failed"
                and get_version(conn, outcome["candidate"]).status == "candidate"
            )
    for step, reason in events:
        console.print(f"  {step:<16} {reason}", highlight=False)
    console.print(f"retrain {outcome['run_id']}: {outcome['status']}")
    if failed:
        raise typer.Exit(1)


def _print(report: dict) -> None:
    from pefm.drift.monitor import report_rows

    table = Table(
        "series", "feature", "method", "score", "threshold", "drifted", title=f"drift: {report['model_version']}"
    )
    for r in report_rows(report["series"]):
        table.add_row(
            r["series"],
            r["feature"],
            r["method"],
            f"{r['score']:.3f}",
            "-" if r["threshold"] is None else f"{r['threshold']:g}",  # a permutation test has none
            Text("yes", style="red") if r["drifted"] else "no",
        )
    console.print(table)
