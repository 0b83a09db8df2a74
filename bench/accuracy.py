"""Accuracy benchmark: PEFM vs statsforecast, measured in one run, on two sets (``--set``).

``macro`` (issue 3): the quarterly macro panel, h=1, the last 40 quarters as 40 expanding
windows, refit at every window. Reported: RMSE / naive RMSE per series and the median over
series, and wall seconds per model (each model's full backtest; statsforecast's models are
first fitted once, untimed, on a small synthetic series: ``broad_run.warm_up``). Then S&P 500 daily log
returns over the last 1000 trading days (2015-2018): annualized Sharpe of each model's sign
strategy (5 bp per unit of turnover) next to buy-and-hold; every model alike trained on the
last 750 days (about three years), refit every 20 days, conditioned on new data in between.
Plus the torch model's training time on the panel.

The data come from the storage layer (an embedded PostgreSQL in a temporary directory, loaded
with the bundled datasets).

``broad`` (issue 16): the 37 real series of ``broad_set.py`` (quarterly, monthly, weekly,
business-daily, annual), h = 1..8 from the last 24 expanding origins, refit at every origin:
PEFM's default family for each series (what the serving bundle gives its group) and PEFM's naive
against statsforecast AutoARIMA, AutoETS, AutoTheta and Naive, with their own and with conformal
intervals (protocol: ``broad_run.py``; metrics: ``broad_score.py``). Then the targets, pass/fail.
CPU and wall seconds are summed over the scored series only (those every model forecast and was
scored on), so that a model failing on a series is not charged less than the others.

Usage: python bench/accuracy.py [--set all|broad|macro] [--json PATH] [--models a,b] [--quick]
       [--workers N] [--windows W] [--arima-conformal] [--series CSV]
``--quick``: 10 windows and 250 days on the macro panel without statsforecast; 6 windows and 8
series (one or two a frequency) on the broad set.
``--series CSV``: run the broad protocol on series of your own instead of the broad set (a check
that a result generalises). A long CSV, one row per observation: ``series_id,ds,value,frequency``
and optionally ``transform`` (default ``none``) and ``season_length`` (default 4 quarterly, 12
monthly, 1 otherwise); dates are period starts (``broad_set.series_from_csv``). A series with a
gap (an empty value, or a period without a row; business-daily series excepted, whose missing
days read as holidays) is benchmarked on its last unbroken stretch, with a warning naming the
line. A series too short for the protocol is left out, named with the reason, before anything
runs. With ``--quick``, every series of the file, from 6 origins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
import broad_run
import broad_score
from broad_set import QUICK_IDS, broad_set, frames_by_frequency, series_from_csv
from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.data.loading import load_bundled
from pefm.forecasting import metrics
from pefm.forecasting.backtest import BacktestSpec, backtest, median_ratio, relative_rmse
from pefm.forecasting.base import ForecastInputError
from pefm.forecasting.bundle import DEFAULT_FAMILY
from pefm.forecasting.models import MODEL_NAMES, make_model
from pefm.forecasting.panel import MACRO_PANEL, load_panel
from pefm.storage.database import open_database
from statsforecast_anchor import run_statsforecast

console = Console(width=200)
DEFAULT_MODEL = DEFAULT_FAMILY[0]  # the family the serving bundle forecasts the quarterly panel with
SF_MODELS = ("AutoARIMA", "AutoETS", "AutoTheta", "Naive")
COST = 0.05  # percent of the position per unit of turnover: 5 bp


def load_data(home: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The quarterly macro panel and the S&P 500 log returns, through the storage layer."""
    with open_database(Settings(home=home), schema="migrate") as db, db.connection() as conn:
        load_bundled(conn, bundled([*MACRO_PANEL, "sp500"]))
        panel = load_panel(conn, MACRO_PANEL)
        returns = load_panel(conn, ["sp500"])["sp500"].dropna()
    returns.attrs = {"frequency": Frequency.BUSINESS_DAILY}
    return panel, returns


def run_ours(name: str, panel: pd.DataFrame, spec: BacktestSpec) -> tuple[pd.DataFrame, float]:
    model = make_model(name)
    data = panel.dropna() if model.multivariate else panel
    start = time.perf_counter()
    results = backtest(model, data, spec, label=name)
    return results, time.perf_counter() - start


def rmse_table(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for name, frame in results.items():
        for series_id, group in frame.dropna(subset=["y"]).groupby("series_id"):
            rows.append({"model": name, "series_id": series_id, "rmse": metrics.rmse(group["y"], group["mean"])})
    return pd.DataFrame(rows)


def sp500_sharpe(names: list[str], returns: pd.Series, days: int) -> dict[str, float]:
    spec = BacktestSpec(h=1, windows=days, refit_every=20, window="sliding", train_size=750)
    out: dict[str, float] = {}
    for name in names:
        model = make_model(name)
        if model.multivariate and name != "mlp":
            continue
        try:
            with console.status(f"sp500: {name}"):
                results = backtest(model, returns.to_frame(), spec, label=name)
        except ForecastInputError as exc:
            console.print(f"[yellow]{name} refused the S&P 500 returns: {exc}")
            continue
        out[name] = metrics.sign_strategy_sharpe(results["y"], results["mean"], cost=COST)
    tail = returns.iloc[-days:]
    out["buy_and_hold"] = metrics.buy_and_hold_sharpe(tail)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--set", choices=("all", "broad", "macro"), default="all", help="which benchmark(s) to run")
    parser.add_argument("--models", help="comma-separated PEFM models for the macro panel (default: all)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (fewer windows and series)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="broad-set processes")
    parser.add_argument("--windows", type=int, help=f"broad-set origins (default {broad_run.WINDOWS})")
    parser.add_argument(
        "--series",
        type=Path,
        help="benchmark these series (a long CSV: series_id,ds,value,frequency[,transform,season_length]) "
        "instead of the broad set",
    )
    parser.add_argument(
        "--arima-conformal", action="store_true", help="also run AutoARIMA with conformal intervals (slow)"
    )
    args = parser.parse_args()
    if args.models and (unknown := [n for n in args.models.split(",") if n not in MODEL_NAMES]):
        parser.error(f"--models: unknown {', '.join(map(repr, unknown))}; expected some of {', '.join(MODEL_NAMES)}")
    if args.series is not None:
        if args.set == "macro":
            parser.error("--series replaces the broad set: use it with --set broad or all")
        try:
            args.entries = series_from_csv(args.series)
        except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            parser.error(f"--series: {exc}")
    else:
        args.entries = broad_set(QUICK_IDS if args.quick else None)
    if args.set in ("all", "broad"):
        args.windows = args.windows or (broad_run.QUICK_WINDOWS if args.quick else broad_run.WINDOWS)
        for entry in args.entries:
            if entry.note:
                console.print(f"[yellow]{entry.note}")
        args.left_out = broad_run.too_short(args.entries, args.windows)
        for sid, reason in args.left_out.items():
            console.print(f"[yellow]{sid} left out: {reason}")
        args.entries = [e for e in args.entries if e.id not in args.left_out]
        if not args.entries:
            parser.error("no series is long enough for the broad protocol (see above)")
    started = time.perf_counter()
    out: dict = {"set": args.set, "quick": args.quick, "series_file": args.series and str(args.series)}
    macro_median = None
    if args.set in ("all", "macro"):
        macro = run_macro(args)
        macro["macro_wall_seconds"] = round(time.perf_counter() - started, 1)
        console.print(f"macro panel wall time {macro['macro_wall_seconds']:.0f} s")
        out.update(macro)
        macro_median = macro["default_median_rmse_ratio"]
    if args.set in ("all", "broad"):
        out["broad"] = run_broad(args, macro_median)
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    console.print(f"wall time {out['wall_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def run_macro(args) -> dict:
    """The macro-panel part (h=1, issue 3): its tables, and its JSON keys."""
    names = args.models.split(",") if args.models else list(MODEL_NAMES)
    if DEFAULT_MODEL not in names:  # what the serving bundle forecasts this panel with
        names.append(DEFAULT_MODEL)
    if "naive" not in names:
        names.insert(0, "naive")
    windows, days = (10, 250) if args.quick else (40, 1000)
    spec = BacktestSpec(h=1, windows=windows, refit_every=1)

    with tempfile.TemporaryDirectory(prefix="pefm-bench-") as home:
        panel, returns = load_data(Path(home))

    results: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    refused: dict[str, str] = {}  # a model that refuses the panel (e.g. GARCH: not returns) is reported, not fatal
    for name in names:
        try:
            with console.status(f"backtesting {name}"):
                results[name], seconds[name] = run_ours(name, panel, spec)
        except ForecastInputError as exc:
            refused[name] = str(exc)
            console.print(f"[yellow]{name} refused the macro panel: {exc}")
            continue
        console.print(f"{name}: {seconds[name]:.1f} s")
    if not args.quick:
        with console.status("statsforecast: warm-up (untimed)"):
            # first use costs (imports; numba's JIT in statsforecast versions built on numba) paid
            # once here, on a small synthetic series, so the seconds below are the models' own and
            # the first model timed is not charged for all of it (the broad run's workers do the same)
            for error in broad_run.warm_up([(f"sf_{m}", m, False) for m in SF_MODELS]):
                console.print(f"[red]statsforecast warm-up failed, its seconds below include it: {error}")
        with console.status("statsforecast"):
            anchors = run_statsforecast(panel, h=1, windows=windows, season_length=1, models=SF_MODELS)
        for key, anchor in anchors.items():
            results[key] = anchor.forecasts.assign(model=key)
            seconds[key] = anchor.seconds
            console.print(f"{key}: {anchor.seconds:.1f} s")

    ratios = relative_rmse(rmse_table(results), baseline="naive")
    medians = median_ratio(ratios)
    torch_seconds = time_torch(panel)
    sharpe = sp500_sharpe([n for n in names if n != "var"], returns, days)
    report(ratios, medians, seconds, torch_seconds, sharpe, windows, days)
    sf = [m for m in medians.index if m.startswith("sf_")]
    return {
        "protocol": {"h": 1, "windows": windows, "refit_every": 1, "sp500_days": days, "cost": COST},
        "default_model": DEFAULT_MODEL,
        "median_rmse_ratio": medians.round(4).to_dict(),
        "default_median_rmse_ratio": round(float(medians[DEFAULT_MODEL]), 4),
        "best_statsforecast_median_rmse_ratio": round(float(medians[sf].min()), 4) if sf else None,
        "rmse_ratio": ratios.round(4).to_dict(),
        "backtest_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "torch_train_seconds": round(torch_seconds, 2),
        "sp500_sharpe": {k: round(v, 3) for k, v in sharpe.items()},
        "refused": refused,
    }


def run_broad(args, macro_median: float | None) -> dict:
    """The broad-set part (issue 16): backtests in worker processes, scores, tables, targets."""
    entries, windows = args.entries, args.windows
    frames = frames_by_frequency(entries)
    seasons = {e.id: e.season_length for e in entries}
    histories = {sid: frame[sid].dropna() for frame in frames.values() for sid in frame.columns}
    jobs = broad_run.plan_jobs(frames, seasons, arima_conformal=args.arima_conformal)
    console.print(
        f"broad set: {len(entries)} series, h=1..{broad_run.H}, {windows} expanding origins (step 1, refit at "
        f"each), {len(jobs)} jobs on {args.workers} worker processes"
    )
    labels = broad_score.model_order({j.label for j in jobs})
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = {m: progress.add_task(m, total=sum(j.label == m for j in jobs)) for m in labels}

        def done(outcome: broad_run.Outcome) -> None:
            progress.advance(tasks[outcome.label])
            if outcome.error:
                progress.console.print(
                    f"[red]{outcome.label} failed on {','.join(outcome.series_ids)}: {outcome.error}"
                )

        outcomes = broad_run.run_all(jobs, windows, args.workers, done)
    wall = time.perf_counter() - started

    forecasts = {
        m: broad_run.with_steps(pd.concat([o.forecasts for o in outcomes if o.label == m and o.forecasts is not None]))
        for m in labels
        if any(o.label == m and o.forecasts is not None for o in outcomes)
    }
    forecasts, checked, misaligned = broad_run.check_alignment(forecasts)
    ok = [o for o in outcomes if o.error is None]
    failures = [{"model": "(none run)", "series_id": sid, "error": why} for sid, why in args.left_out.items()]
    failures += [
        {"model": o.label, "series_id": sid, "error": o.error} for o in outcomes if o.error for sid in o.series_ids
    ]
    scores, scoring_failures = broad_score.score_all(forecasts, histories, seasons)
    failures += misaligned + scoring_failures
    ids = [e.id for e in entries] + list(args.left_out)
    common = broad_score.common_series(scores, labels, ids, broad_run.H)
    agg = broad_score.aggregate(scores, common)
    # CPU (see broad_run.py) and wall seconds over the scored series only, as the scores are
    seconds, wall_seconds, straddling = broad_run.seconds_on(outcomes, labels, common)
    families = {sid: o.family for o in outcomes if o.label == broad_run.DEFAULT for sid in o.series_ids}
    goals = broad_score.targets(agg, seconds, macro_median)
    report_broad(agg, scores, seconds, wall_seconds, failures, common, ids, entries, families, goals, windows, wall)
    if straddling:
        console.print(f"[yellow]joint jobs counted whole, though they also cover unscored series: {straddling}")
    return {
        "protocol": {
            "h": broad_run.H,
            "windows": windows,
            "step": 1,
            "refit_every": 1,
            "window": "expanding",
            "levels": list(broad_run.LEVELS),
            "conformal_windows": "windows of h in the later half of the first origin's training data, "
            f"{broad_run.CONFORMAL_WINDOWS[0]} to {broad_run.CONFORMAL_WINDOWS[1]}",
            "baseline": broad_run.BASELINE,
            "winkler_scale": "in-sample seasonal-naive MAE up to the first origin (the MASE denominator)",
            "workers": args.workers,
        },
        "series": [
            {
                "id": e.id,
                "source": e.source,
                "frequency": e.frequency.value,
                "transform": e.transform,
                "season_length": e.season_length,
                "points": len(histories[e.id]),
                "default_family": families.get(e.id),
                "why": e.why,
                "note": e.note,
            }
            for e in entries
        ],
        "scored_series": common,
        "excluded_series": sorted(set(ids) - set(common)),
        "failures": failures,
        "alignment_rows_checked": checked,
        "backtest_seconds_over": "scored_series (successful jobs on them; job_seconds has every job)",
        "backtest_cpu_seconds": {m: round(v, 2) for m, v in seconds.items()},
        "backtest_wall_seconds": {m: round(v, 2) for m, v in wall_seconds.items()},
        "joint_jobs_counted_whole": straddling,
        "job_seconds": {
            m: {
                ",".join(o.series_ids): {"cpu": round(o.cpu_seconds, 2), "wall": round(o.seconds, 2)}
                for o in ok
                if o.label == m
            }
            for m in labels
        },
        "wall_seconds": round(wall, 1),
        **broad_score.to_json(scores, agg),
        "targets": goals,
    }


def report_broad(
    agg, scores, seconds, wall_seconds, failures, common, ids, entries, families, goals, windows, wall
) -> None:
    order = [m for m in broad_score.model_order(seconds) if m in agg.index.get_level_values("model")]
    n = len(common)
    for step, what in ((1, "h=1"), (4, "h=4"), ("avg", "averaged over h=1..8")):
        table = Table(
            "model",
            "RMSE/naive (median)",
            "MASE (median)",
            "cov 80 (median)",
            "cov 95 (median)",
            "cov 95 (lowest)",
            "Winkler 80 (mean, scaled)",
            "Winkler 95 (mean, scaled)",
            f"backtest CPU s ({n} scored series)",
            "wall s (same)",
            title=f"broad set, {what}: {n} series, {windows} expanding origins",
        )
        for m in order:
            r = agg.loc[(m, step)]
            table.add_row(
                m,
                f"{r['rmse_ratio_median']:.3f}",
                f"{r['mase_median']:.3f}",
                f"{r['coverage-80_median']:.3f}",
                f"{r['coverage-95_median']:.3f}",
                f"{r['coverage-95_min']:.3f} ({r['coverage-95_min_series']})",
                f"{r['winkler-80_mean']:.3f}",
                f"{r['winkler-95_mean']:.3f}",
                f"{seconds[m]:.1f}",
                f"{wall_seconds[m]:.1f}",
            )
        console.print(table)
    detail = Table(
        "series",
        "freq",
        "transform",
        "m",
        "family",
        "RMSE/naive h1",
        "h4",
        "avg",
        "MASE avg",
        "cov80 h1",
        "cov95 h1",
        "cov80 h4",
        "cov95 h4",
        "W95 avg",
        title=f"{broad_run.DEFAULT}, per series (Winkler scaled by the in-sample seasonal-naive MAE)",
    )
    by = scores[scores["model"] == broad_run.DEFAULT].set_index(["series_id", "step"])
    for e in entries:
        if e.id not in by.index.get_level_values(0):
            detail.add_row(e.id, e.frequency.value, e.transform, str(e.season_length), families.get(e.id, ""), "failed")
            continue
        r = {k: by.loc[(e.id, k)] for k in (1, 4, "avg")}
        detail.add_row(
            e.id,
            e.frequency.value,
            e.transform,
            str(e.season_length),
            families.get(e.id, ""),
            f"{r[1]['rmse_ratio']:.3f}",
            f"{r[4]['rmse_ratio']:.3f}",
            f"{r['avg']['rmse_ratio']:.3f}",
            f"{r['avg']['mase']:.3f}",
            f"{r[1]['coverage-80']:.2f}",
            f"{r[1]['coverage-95']:.2f}",
            f"{r[4]['coverage-80']:.2f}",
            f"{r[4]['coverage-95']:.2f}",
            f"{r['avg']['winkler-95']:.3f}",
        )
    console.print(detail)
    if failures or len(common) < len(ids):
        fail = Table("model", "series", "error", title="failures (series left out of the aggregates above)")
        for f in failures:
            fail.add_row(f["model"], f["series_id"], f["error"])
        console.print(fail)
        console.print(f"left out of the aggregates: {', '.join(sorted(set(ids) - set(common))) or 'none'}")
    else:
        console.print(f"every model forecast and was scored on all {len(ids)} series")
    goal_table = Table("target", "default", "reference", "result", title="targets")
    for g in goals:
        verdict = "[green]pass[/green]" if g["pass"] else "[red]FAIL[/red]"
        goal_table.add_row(g["target"], f"{g['default']:.4f}", g["reference"], verdict)
    console.print(goal_table)
    console.print(f"broad set wall time {wall:.0f} s")


def time_torch(panel: pd.DataFrame) -> float:
    """Wall seconds to train the global torch model on the whole panel once."""
    start = time.perf_counter()
    make_model("mlp").fit(panel.dropna())
    return time.perf_counter() - start


def report(ratios, medians, seconds, torch_seconds, sharpe, windows: int, days: int) -> None:
    order = list(medians.index)
    table = Table("series", *order, title=f"RMSE / naive RMSE, h=1, {windows} expanding windows")
    for series_id, row in ratios[order].iterrows():
        table.add_row(series_id, *(f"{v:.3f}" for v in row))
    table.add_row("[bold]median[/bold]", *(f"[bold]{medians[m]:.3f}[/bold]" for m in order))
    table.add_row("seconds", *(f"{seconds[m]:.1f}" for m in order))
    console.print(table)
    console.print(f"torch model ({'mlp'}) trains on the panel in {torch_seconds:.1f} s")
    sharpe_table = Table("model", "Sharpe (sign strategy, 5 bp)", title=f"S&P 500, last {days} trading days")
    for name, value in sharpe.items():
        sharpe_table.add_row(name, f"{value:.2f}")
    console.print(sharpe_table)


if __name__ == "__main__":
    main()
