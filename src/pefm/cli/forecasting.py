"""Commands for models: train, backtest, gate, and the registry (models list/show/promote)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich import box
from rich.table import Table
from rich.text import Text

from pefm.cli import app, console, models_app, moment, open_db, print_json, progress_bar, warning
from pefm.forecasting.backtest import DEFAULT_HORIZON, BacktestSpec
from pefm.forecasting.bundle import BUNDLE
from pefm.forecasting.models import DEFAULT_MODEL, MODEL_NAMES
from pefm.forecasting.panel import default_series
from pefm.storage.model_versions import SigningState

SeriesOpt = Annotated[
    list[str] | None,
    typer.Option("--series", "-s", help="series ids (default: every series for the bundle, else the macro panel)"),
]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=f"one of {', '.join((BUNDLE, *MODEL_NAMES))}")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="model parameter NAME=JSON")]
HOpt = Annotated[int, typer.Option(min=1, help="backtest horizon: steps 1..h, each scored")]
StepOpt = Annotated[int, typer.Option(min=1, help="backtest origins this many periods apart")]
RefitOpt = Annotated[int, typer.Option(min=1, help="refit the model at every n-th origin (updated in between)")]
SHOWN = ("rmse", "mae", "mase", "coverage-80", "coverage-95", "pinball", "directional_accuracy", "sharpe")


def _spec(h: int, windows: int, step: int, refit_every: int) -> BacktestSpec:
    return BacktestSpec(h=h, windows=windows, step=step, refit_every=refit_every)


def _params(raw: list[str] | None, model: str) -> dict[str, Any]:
    """``--param NAME=VALUE`` options (VALUE as JSON, else a string), refused before the data are
    read when the model does not take the name or cannot use the value (``max_lag=abc`` failed
    deep in the fit, ``window=1`` gave NaN intervals)."""
    from pefm.forecasting.base import ForecastInputError
    from pefm.forecasting.models import make_model

    params = {}
    for item in raw or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    if params and model != BUNDLE:
        try:
            make_model(model, **params)
        except ForecastInputError as exc:
            raise ForecastInputError(f"--param: {exc}") from None
    return params


def _distinct(series: list[str] | None) -> None:
    """A series named twice is a typo, not a request for two copies of it."""
    if series and (twice := sorted({s for s in series if series.count(s) > 1})):
        raise typer.BadParameter(f"given more than once: {', '.join(twice)}", param_hint="--series")


def planned_params(conn, model: str, ids: list[str], params: dict[str, Any], as_of) -> dict[str, Any]:
    """The bundle's groups planned from the series (unless given): what training and the progress
    bar both need to know."""
    if model != BUNDLE or params.get("groups"):
        return params
    from pefm.forecasting.panel import load_panel
    from pefm.forecasting.training import bundle_params

    planned = bundle_params(load_panel(conn, ids, as_of=as_of, skip_refused=True))
    for series_id, why in planned["skipped"].items():
        console.print(Text.assemble((f"{series_id} left out", "yellow"), f": {why}"))
    return {**params, **planned}


def window_count(conn, model: str, ids: list[str], params: dict[str, Any], spec: BacktestSpec, as_of) -> int:
    """How often the backtest of ``model`` on ``ids`` calls its ``on_window``, which the progress
    bar counts: as ``run_backtest`` runs it, once per distinct cutoff of each backtest (a bundle's
    group), more than ``spec.windows`` where a univariate model's series end on different dates."""
    from pefm.forecasting.backtest import cutoffs
    from pefm.forecasting.bundle import fit_data, group_data
    from pefm.forecasting.models import make_model
    from pefm.forecasting.panel import as_of_loader, load_panel
    from pefm.forecasting.training import _backtestable, backtest_groups

    panel = load_panel(conn, ids, as_of=as_of, skip_refused=model == BUNDLE)
    count = 0
    for family, family_params, group in backtest_groups(model, params, list(panel.columns)):
        estimator = make_model(family, **family_params)
        if estimator.multivariate:
            count += len(cutoffs(fit_data(estimator, group_data(panel, group)).index, spec))
        else:
            loader = as_of_loader(conn, group)
            series = [panel[s].dropna() for s in group if _backtestable(panel[s], estimator, spec, loader)]
            count += len(set().union(*(cutoffs(values.index, spec) for values in series)))
    return count


@app.command()
def train(
    model: ModelOpt = DEFAULT_MODEL,
    series: SeriesOpt = None,
    param: ParamOpt = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="train on the data as known then")] = None,
    h: HOpt = DEFAULT_HORIZON,
    windows: Annotated[int, typer.Option(min=0, help="backtest origins (0: no backtest)")] = 40,
    step: StepOpt = 1,
    refit_every: RefitOpt = 1,
) -> None:
    """Backtest a model, fit it on all the data and register it as a candidate.

    The bundle: a family per group of series, planned from the catalog."""
    from pefm.forecasting.training import train as run_train

    _distinct(series)
    spec = _spec(h, windows, step, refit_every) if windows else None
    when = moment(as_of, "--as-of")
    if when is not None and when > datetime.now(UTC):  # its version would say it knew data not yet known
        raise typer.BadParameter(f"{as_of} is after now: nothing is known as of then yet", param_hint="--as-of")
    with open_db() as db, db.connection() as conn, progress_bar() as progress:
        ids = list(series or default_series(conn, model))
        params = planned_params(conn, model, ids, _params(param, model), when)
        total = window_count(conn, model, ids, params, spec, when) if spec else None
        task = progress.add_task(f"backtesting {model}", total=total)
        version, run = run_train(
            conn,
            model,
            ids,
            params=params,
            as_of=when,
            spec=spec,
            on_window=_advance(progress, task, model),
        )
    if run is not None:
        _print_scores(run.scores)
    console.print(
        Text.assemble(
            "registered ",
            (version.id, "bold"),
            f" ({version.family}, {len(version.series_ids)} series, "
            f"data as of {version.data_as_of:%Y-%m-%d %H:%M}) as a candidate",
        )
    )


@app.command()
def backtest(
    ctx: typer.Context,
    model: ModelOpt = DEFAULT_MODEL,
    series: SeriesOpt = None,
    param: ParamOpt = None,
    version: Annotated[
        str | None,
        typer.Option(help="backtest this registered version (its model, series and parameters) and store the result"),
    ] = None,
    h: HOpt = DEFAULT_HORIZON,
    windows: Annotated[int, typer.Option(min=1, help="backtest origins")] = 40,
    step: StepOpt = 1,
    refit_every: RefitOpt = 1,
) -> None:
    """Rolling-origin backtest of a model (or a registered version) on data as known at each cutoff."""
    from pefm.config import get_settings
    from pefm.forecasting.training import run_backtest
    from pefm.storage.model_versions import get_version, set_backtest

    _distinct(series)
    if version and (
        given := [f"--{n}" for n in ("model", "series", "param") if ctx.get_parameter_source(n).name != "DEFAULT"]
    ):
        raise typer.BadParameter(f"{', '.join(given)}: the version's own are backtested", param_hint="--version")
    spec = _spec(h, windows, step, refit_every)
    with open_db() as db, db.connection() as conn:
        if version:
            stored = get_version(conn, version)
            model, params, ids, as_of = stored.family, stored.params, stored.series_ids, stored.data_as_of
        else:
            ids, as_of = list(series or default_series(conn, model)), None
            params = planned_params(conn, model, ids, _params(param, model), None)
        with progress_bar() as progress:
            task = progress.add_task(f"backtesting {model}", total=window_count(conn, model, ids, params, spec, as_of))
            run = run_backtest(
                conn,
                model,
                ids,
                spec,
                params=params,
                as_of=as_of,
                on_window=_advance(progress, task, model),
            )
        if version:
            set_backtest(conn, version, run.summary(spec))  # the MLflow mirror logs it to the version's run
    _print_scores(run.scores)
    if not version and (uri := get_settings().mlflow_tracking_uri):
        from pefm.tracking import TrackingUnavailable, log_backtest, scrubbed

        try:  # MLflow away: TrackingUnavailable in seconds (a probe first, MLflow's retries bounded)
            run_id = log_backtest(uri, model, params or {}, ids, run.summary(spec))
            console.print(f"logged to MLflow: run {run_id} of experiment pefm-backtests")
        except Exception as exc:  # the backtest stands on its own: MLflow's failure is only reported
            why = str(exc) if isinstance(exc, TrackingUnavailable) else f"{type(exc).__name__}: {exc}"
            warning("not logged to MLflow", scrubbed(why, uri))  # its message may quote the URI
    if version:
        console.print(f"stored the backtest with {version}")


@app.command()
def gate(
    candidate: Annotated[str, typer.Option(help="candidate model version")],
    serving: Annotated[str | None, typer.Option(help="serving version (default: the one serving)")] = None,
    policy: Annotated[
        Path | None, typer.Option(help="gate policy TOML (default: PEFM_GATE_POLICY or the shipped one)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report here")] = None,
) -> None:
    """Judge a candidate against the serving model on the same backtest windows; exit 1 on failure.

    The serving model is backtested again on the candidate's windows when needed."""
    from pefm.config import get_settings
    from pefm.forecasting.gating import gate_candidate
    from pefm.forecasting.registry import serving_version
    from pefm.storage.model_versions import get_version

    if json_out is not None and not json_out.parent.is_dir():  # before the report is stored
        raise typer.BadParameter(f"no directory {json_out.parent} to write the report in", param_hint="--json")
    if json_out is not None and json_out.is_dir():
        raise typer.BadParameter(f"{json_out} is a directory: name a file in it", param_hint="--json")
    with open_db() as db, db.connection() as conn:
        cand = get_version(conn, candidate)
        serv = get_version(conn, serving) if serving else serving_version(conn)
        with progress_bar() as progress:
            task = progress.add_task(f"serving {serv.family if serv else '-'} on the candidate's windows", total=None)
            report = gate_candidate(
                conn,
                cand,
                serv,
                policy=policy or get_settings().gate_policy,
                on_window=_advance(progress, task, serv.family if serv else ""),
            )
    print_gate_report(report)
    text = json.dumps(report, indent=2, default=str)
    if json_out:
        json_out.write_text(text)
    if not report["passed"]:
        console.print(Text.assemble(("gates failed", "red"), f" ({len(report['failures'])} failures)"))
        raise typer.Exit(1)
    console.print("gates passed", style="green")


def print_gate_report(report: dict) -> None:
    """The gate report as a table: every check with its test statistic and p-values."""
    table = Table(
        "rule",
        "series",
        "h",
        "n",
        "candidate",
        "serving",
        "statistic",
        "p",
        "p (Holm)",
        "result",
        title=f"gates: {report['candidate']} vs {report['serving'] or 'no serving model'}",
    )
    for c in report["checks"]:
        table.add_row(
            c["rule"],
            c["series_id"],
            str(c["step"]),
            str(c["n"]),
            f"{c['candidate']:.4g}",
            "-" if c["serving"] is None else f"{c['serving']:.4g}",
            "-" if c["statistic"] is None else f"{c['statistic']:.3g}",
            f"{c['p_value']:.3g}",
            f"{c['p_adjusted']:.3g}",
            Text("pass", style="green") if c["passed"] else Text("FAIL", style="red"),
        )
    console.print(table)
    w = report["windows"]
    console.print(
        f"windows: {len(w['cutoffs'])} cutoffs {w['cutoffs'][0]}..{w['cutoffs'][-1]}, h={w['h']}; serving backtest: "
        f"{w.get('serving_backtest') or 'none'}",
        highlight=False,
    )
    for s in report["skipped"]:
        console.print(f"skipped {s['rule']}{' for ' + s['series_id'] if 'series_id' in s else ''}: {s['reason']}")
    # the failures no row above shows (a series the candidate drops, a rule that could not run),
    # which come after the failed checks' own reasons
    for reason in report["failures"][sum(not c["passed"] for c in report["checks"]) :]:
        console.print(Text.assemble(("failed: ", "red"), reason), highlight=False)
    if divergence := report.get("divergence"):
        largest = {
            s: max((abs(d) for d in path if d is not None), default=0.0) for s, path in divergence["series"].items()
        }
        scores = ", ".join(f"{s} {v:.3g}" for s, v in sorted(largest.items(), key=lambda kv: -kv[1]))
        console.print(
            "largest divergence from the serving model on the same data, in its 95% widths (a canary "
            f"expects it, step by step): {scores or divergence.get('unmeasured') or 'none measured'}",
            highlight=False,
        )


@models_app.command("list")
def models_list(
    status: Annotated[str | None, typer.Option(help="candidate, serving, retired or rejected")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print them as JSON")] = False,
) -> None:
    """Registered model versions, newest first."""
    from pefm.storage.model_versions import STATUSES, list_versions

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"one of {', '.join(STATUSES)}, not {status!r}", param_hint="--status")
    with open_db() as db, db.connection() as conn:
        versions = list_versions(conn, status=status, forecasts=False)
    if json_out:
        print_json([_version_json(v) for v in versions])
        return
    # the id is what `pefm models promote/show` take: never cut (on an 80-column terminal it was);
    # it begins with the family and holds the UTC second it was registered, so neither has a column
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True, min_width=max((len(v.id) for v in versions), default=2))
    for name in ("status", "series", "data as of", "gates"):
        table.add_column(name, no_wrap=True)
    for v in versions:
        gates = "-" if v.gate_report is None else ("pass" if v.gate_report["passed"] else "FAIL")
        table.add_row(v.id, v.status, str(len(v.series_ids)), f"{v.data_as_of:%Y-%m-%d}", gates)
    console.print(table)


def _version_json(v) -> dict[str, Any]:
    """A version as ``pefm models list --json`` prints it (what the table shows, and more)."""
    gates = v.gate_report
    return {
        "id": v.id,
        "family": v.family,
        "status": v.status,
        "status_reason": v.status_reason,
        "series": v.series_ids,
        "data_as_of": v.data_as_of.isoformat(),
        "gates": None if gates is None else {"passed": gates["passed"], "serving": gates.get("serving")},
        "parent": v.parent_id,
        "created_at": v.created_at.isoformat(),
        "status_changed_at": v.status_changed_at.isoformat(),
    }


@models_app.command("show")
def models_show(version: str) -> None:
    """One version: lineage, data, backtest metrics and gate verdict."""
    from pefm.storage.model_versions import get_version

    with open_db() as db, db.connection() as conn:
        v = get_version(conn, version)
    console.print(Text.assemble((v.id, "bold"), f"  {v.family}  [{v.status}]"))
    for label, value in (
        ("params", json.dumps(v.params)),
        ("series", ", ".join(v.series_ids)),
        ("data as of", f"{v.data_as_of:%Y-%m-%d %H:%M:%S%z}"),
        ("data sha256", v.data_sha256),
        ("artifact sha256", v.artifact_sha256),
        ("parent", v.parent_id or "-"),
        ("created", f"{v.created_at:%Y-%m-%d %H:%M:%S%z}"),
    ):
        console.print(f"  {label:<16} {value}", highlight=False)
    if v.backtest:
        console.print(f"  backtest         {json.dumps(v.backtest['spec'])}", highlight=False)
        rows = [{"series_id": s, **m} for s, m in v.backtest["metrics"].items()]
        _print_scores(pd.DataFrame(rows).assign(model=v.family))
    if v.gate_report:
        verdict = "passed" if v.gate_report["passed"] else "failed: " + "; ".join(v.gate_report["failures"])
        console.print(f"  gates            {verdict} (vs {v.gate_report['serving'] or 'no serving model'})")


@models_app.command("promote")
def models_promote(version: str) -> None:
    """Make a version the serving model, by hand.

    The version serving before is retired. An operator's override: a version whose gates failed,
    or that was never gated, is promoted too, and so is one that leaves series the retired version
    served unserved; each is said in a yellow line. One that cannot be loaded where it would serve
    (its signature or bytes do not check out against the trusted keys: PEFM_VERIFY_KEYS, or the
    embedded server's tokens.env) is refused. Revisions pinned to a version (every one `make up`
    and rollouts start) do not change: what they serve that the registry no longer says is
    printed, as `pefm status` would say it; unpinned ones (compose's blue) follow the promotion."""
    from pefm.cli.rollout import controller
    from pefm.config import get_settings
    from pefm.forecasting.registry import ArtifactIntegrityError, promote, verified_artifact
    from pefm.rollout.spec import RolloutSpec
    from pefm.rollout.status import service_status
    from pefm.storage.model_versions import get_version
    from pefm.storage.signing import ArtifactSignatureError, trusted_keys

    # locally the traffic is checked after (on a cluster Flagger's canary moves it); a spec it cannot read: before
    service = None if get_settings().knative_namespace else RolloutSpec.configured().service
    with open_db() as db:
        with db.connection() as conn:
            get_version(conn, version)  # an unknown id says so, not that its signature is missing
            try:  # every revision and the monitor would refuse it: the registry would name what none serves
                verified_artifact(conn, version, trusted_keys(get_settings()))  # with the embedded server's keys
            except (ArtifactSignatureError, ArtifactIntegrityError) as exc:
                raise type(exc)(f"{version} is not promoted: {exc}") from None
            retired = promote(conn, version)
            promoted = get_version(conn, version)
            unserved = sorted({s for r in retired for s in get_version(conn, r).series_ids} - set(promoted.series_ids))
        console.print(f"{version} is serving" + (f"; retired {', '.join(retired)}" if retired else ""))
        report = promoted.gate_report
        if report is None or not report["passed"]:
            why = "never gated" if report is None else "its gates failed: " + "; ".join(report["failures"][:3])
            warning("promoted by hand", why)
        if unserved:
            warning("no model serves now", ", ".join(unserved))
        if service is not None:
            status = service_status(controller(db), service)
            for problem in status.problems if status.targets else []:  # no traffic block: no stack ran here
                warning("traffic unchanged", problem)


@models_app.command("keygen")
def models_keygen() -> None:
    """Print a new artifact signing key pair as environment lines.

    Base64 of the raw Ed25519 keys: PEFM_SIGNING_KEY for the trainer only, PEFM_VERIFY_KEYS for
    whoever loads models."""
    from pefm.storage.signing import generate

    private, public = generate()
    print(f"PEFM_SIGNING_KEY={private}\nPEFM_VERIFY_KEYS={public}")


@models_app.command("sign")
def models_sign(
    versions: Annotated[
        list[str] | None,
        typer.Argument(
            help="version ids (default: every one signed before its forecasts were, and every one "
            "registered unsigned before signing became mandatory and untouched since)"
        ),
    ] = None,
    force_unsigned: Annotated[
        bool,
        typer.Option(
            "--force-unsigned",
            help="sign the versions named even where registered unsigned after signing became mandatory",
        ),
    ] = False,
) -> None:
    """Sign versions with PEFM_SIGNING_KEY: again (with their forecasts, or a new key), or unsigned ones.

    By default: every version whose signature, made before the forecasts were covered, verifies,
    and every version registered unsigned before signing became mandatory (migration 0012) whose
    row nothing has written since. Whoever may write model_versions (the trainer's database role)
    can insert an unsigned row, and write any created_at: such a row is signed only when named,
    and one created after signing became mandatory, which no trainer registers, only with
    --force-unsigned as well. What will be signed is listed first. A signed row's current
    signature must verify (PEFM_VERIFY_KEYS trusting the key that made it), its forecasts must
    match their signed sha256 where one was signed, and each artifact must match its recorded
    sha256; beyond that you vouch for the rows as they are (an unsigned row's artifact, a row
    signed before its forecasts were: those forecasts), so name only rows you trust."""
    import hashlib

    from pefm.config import get_settings
    from pefm.forecasting.registry import ArtifactIntegrityError
    from pefm.storage import model_versions as table
    from pefm.storage.signing import ArtifactSignatureError, precomputed_digest, sign, signing_key, trusted_keys

    named = list(dict.fromkeys(versions or []))
    with open_db() as db, db.connection() as conn:
        key, trusted = signing_key(get_settings()), trusted_keys(get_settings())
        states = table.signing_states(conn, named or None)
        if named:
            found = {s.id for s in states}
            if missing := [v for v in named if v not in found]:
                raise table.UnknownModelError(f"unknown model version {missing[0]!r}; nothing signed")
            chosen = sorted(states, key=lambda s: named.index(s.id))
            if not force_unsigned and (late := [s for s in chosen if not s.signed and not s.before_signing]):
                s = late[0]
                raise ArtifactSignatureError(
                    f"{s.id} was registered unsigned ({_when(s.created_at)}) after signing became "
                    "mandatory: not signed (nothing was); --force-unsigned signs it if you vouch for its artifact"
                )
        else:
            chosen = [s for s in states if (s.signed and not s.current) or s.predates_signing]
            for s in states:
                if not s.signed and not s.predates_signing:
                    why = (
                        "registered unsigned after signing became mandatory: `pefm models sign "
                        f"{s.id} --force-unsigned` signs it if you vouch for its artifact"
                        if not s.before_signing
                        else f"its row was written after signing became mandatory: `pefm models sign {s.id}` "
                        "signs it if you vouch for its artifact"
                    )
                    warning("not signed", f"{s.id} ({_when(s.created_at)}, {s.family}): {why}")
        if not chosen:
            console.print("every version is signed" if all(s.signed for s in states) else "nothing signed")
            return
        listing = Table(title="to sign", box=box.SIMPLE_HEAD, pad_edge=False)
        listing.add_column("id", no_wrap=True)  # what `pefm models sign` takes: never cut
        for name in ("created", "family", "why"):
            listing.add_column(name)
        for s in chosen:
            listing.add_row(s.id, _when(s.created_at), s.family, _signing_reason(s))
        console.print(listing)
        for state in chosen:
            version_id = state.id
            # the row held until it is signed: one changed between the reads below would be signed
            conn.execute("SELECT 1 FROM model_versions WHERE id = %s FOR UPDATE", (version_id,))
            if table.signing_states(conn, [version_id]) != [state]:  # an unsigned row written since: not as listed
                raise ArtifactSignatureError(f"{version_id}: its row changed after it was listed; not signed")
            version = table.get_version(conn, version_id)
            if state.signed:
                try:
                    table.verify_signature(conn, version_id, trusted, before_forecasts=True)
                except ArtifactSignatureError as exc:
                    raise ArtifactSignatureError(f"{version_id}: {exc}; not signed again") from None
            artifact, recorded = table.read_artifact(conn, version_id)
            if hashlib.sha256(artifact).hexdigest() != recorded:
                raise ArtifactIntegrityError(f"{version_id}: the artifact does not match its sha256; not signed")
            forecasts = precomputed_digest(table.read_precomputed(conn, version_id))
            if version.precomputed_sha256 is not None and forecasts != version.precomputed_sha256:
                raise ArtifactSignatureError(
                    f"{version_id}: its precomputed forecasts do not match their signed sha256; not signed again"
                )
            signature = sign(key, version_id=version_id, family=version.family, sha256=recorded, precomputed=forecasts)
            table.set_signature(conn, version_id, signature, forecasts)
            conn.commit()
            console.print(f"{version_id}: signed with key {signature.key_id}")


def _when(ts: datetime) -> str:
    return f"{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _signing_reason(state: SigningState) -> str:
    if state.signed:
        return "signed again, with its forecasts" if not state.current else "signed again"
    return "unsigned, registered before signing" if state.before_signing else "unsigned, after signing: forced"


def _advance(progress, task, model: str):
    return lambda cutoff: progress.update(task, advance=1, description=f"{model} @ {cutoff:%Y-%m-%d}")


def _print_scores(scores: pd.DataFrame) -> None:
    """The metrics pooled over the steps, and RMSE at the first and the last step (every step's
    metrics are in the registry: ``rmse@h1`` .. ``rmse@hH``, see ``pefm.forecasting.backtest``)."""
    last = max((int(c.rpartition("@h")[2]) for c in scores.columns if c.startswith("rmse@h")), default=1)
    steps = ["rmse@h1", f"rmse@h{last}"] if last > 1 else []
    columns = [c for c in ("rmse", *steps, *SHOWN[1:]) if c in scores.columns]
    title = f"backtest (h=1..{last}: pooled over the steps, rmse also per step)" if last > 1 else "backtest"
    table = Table("model", "series", *columns, title=title)
    for row in scores.to_dict("records"):
        table.add_row(
            row["model"],
            row["series_id"],
            *("-" if pd.isna(row.get(c)) else f"{row[c]:.3f}" for c in columns),
        )
    console.print(table)


@app.command("forecast")
def forecast_command(
    series: Annotated[list[str], typer.Argument(help="series ids")],
    horizon: Annotated[int, typer.Option("--horizon", "-h", help="steps ahead, each series at its frequency")] = 8,
    levels: Annotated[str, typer.Option(help="interval levels, comma-separated")] = "80,95",
    space: Annotated[
        str | None,
        typer.Option(help="level (the series' units) or model (transformed); default level where it inverts"),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="forecast as made then, from the data known then")
    ] = None,
    version: Annotated[str | None, typer.Option(help="model version (default: the serving one)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the JSON POST /v1/forecast answers")] = False,
) -> None:
    """Forecast series with the serving model: the answer POST /v1/forecast gives, as a table."""
    import dataclasses

    from pefm.config import get_settings
    from pefm.serving.cache import open_cache
    from pefm.serving.freshness import changed_since_training, condition_on_latest
    from pefm.serving.http import ApiError
    from pefm.serving.inference import ModelServer, check_request, forecast_part, series_space
    from pefm.serving.whatif import known_changed

    request = {"series_ids": list(series), "horizon": horizon, "levels": _levels(levels), "space": space}
    if as_of:
        request["as_of"] = as_of
    with open_db() as db:
        settings = dataclasses.replace(get_settings(), model_version=version)
        server = ModelServer(settings, db, open_cache(settings, None))
        try:
            server.load()
            ids, h, lv, when, _, asked = check_request(request)
            changed = changed_since_training(db, server.version)
            stale = [s for s in ids if s in changed]
            if settings.recondition and stale:  # and as it does, on the latest data
                if server.wait_for_model() is None:
                    raise ValueError(f"the model could not be loaded: {server.model_error}")
                server.recondition(condition_on_latest(server.model, db, stale))
            parts = []
            for series_id in ids:
                if series_id not in server.meta:
                    raise ApiError(409, f"model {server.version.id} does not forecast {series_id}")
                chosen = series_space(series_id, server.meta[series_id]["transform"], asked)
                state = server.series[series_id]
                text = None if when else server.precomputed_json(series_id, state, chosen, h, lv)
                if text is None:
                    server.wait_for_model()
                    changed = known_changed(server, series_id, when) if when else None
                    text = server.model_json(series_id, state, chosen, h, lv, when, changed, None)
                data_as_of = when or state.data_as_of
                parts.append(json.loads(forecast_part(series_id, chosen, server.meta[series_id], data_as_of, text)))
        except ApiError as exc:
            details = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in exc.details)
            raise ValueError(f"{exc.error}{' (' + details + ')' if details else ''}") from None
    if json_out:
        print_json({"model_version": server.version.id, "forecasts": parts})
        return
    for part in parts:
        _print_forecast(part, server.version.id, when)


def _levels(text: str) -> list[int | str]:
    return [int(v) if v.strip().isdigit() else v for v in text.split(",")]


def _significant(value: float, digits: int = 4) -> str:
    """``value`` to about ``digits`` significant digits, without an exponent: 13,035 or 2.870."""
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    return f"{value:,.{max(0, digits - 1 - magnitude)}f}"


def _print_forecast(part: dict[str, Any], version_id: str, as_of) -> None:
    rows = part["forecast"]
    bounds = [k for k in rows[0] if k not in ("ds", "mean")]
    when = f", as of {as_of:%Y-%m-%d}" if as_of else ""
    table = Table(
        "date",
        "mean",
        *bounds,
        title=f"{part['series_id']} ({part['space']} space: {part['unit']}){when}",
        caption=f"{version_id}; transform {part['transform']}",
    )
    for row in rows:
        table.add_row(row["ds"][:10], *(_significant(row[k]) for k in ("mean", *bounds)))
    console.print(table)
