"""Accuracy benchmark: every PEFM model vs statsforecast on the default panel, in one run.

Protocol (issue 3): the quarterly macro panel, h=1, the last 40 quarters as 40 expanding
windows, refit at every window. Reported: RMSE / naive RMSE per series and the median over
series, and wall seconds per model (each model's full backtest). Then S&P 500 daily log
returns over the last 1000 trading days (2015-2018): annualized Sharpe of each model's sign
strategy (5 bp per unit of turnover) next to buy-and-hold; every model alike trained on the
last 750 days (about three years), refit every 20 days, conditioned on new data in between.
Plus the torch model's training time on the panel.

The data come from the storage layer (an embedded PostgreSQL in a temporary directory, loaded
with the bundled datasets). Usage: python bench/accuracy.py [--json PATH] [--models a,b] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.data.loading import load_bundled
from pefm.forecasting import metrics
from pefm.forecasting.backtest import BacktestSpec, backtest, median_ratio, relative_rmse
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
    with open_database(Settings(home=home)) as db, db.connection() as conn:
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
        with console.status(f"sp500: {name}"):
            results = backtest(model, returns.to_frame(), spec, label=name)
        out[name] = metrics.sign_strategy_sharpe(results["y"], results["mean"], cost=COST)
    tail = returns.iloc[-days:]
    out["buy_and_hold"] = metrics.buy_and_hold_sharpe(tail)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--models", help="comma-separated PEFM models (default: all)")
    parser.add_argument("--quick", action="store_true", help="10 windows, 250 days, no statsforecast")
    args = parser.parse_args()
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
    for name in names:
        with console.status(f"backtesting {name}"):
            results[name], seconds[name] = run_ours(name, panel, spec)
        console.print(f"{name}: {seconds[name]:.1f} s")
    if not args.quick:
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
    report(ratios, medians, seconds, torch_seconds, sharpe)
    if args.json:
        sf = [m for m in medians.index if m.startswith("sf_")]
        args.json.write_text(
            json.dumps(
                {
                    "protocol": {
                        "h": 1,
                        "windows": windows,
                        "refit_every": 1,
                        "sp500_days": days,
                        "cost": COST,
                    },
                    "default_model": DEFAULT_MODEL,
                    "median_rmse_ratio": medians.round(4).to_dict(),
                    "default_median_rmse_ratio": round(float(medians[DEFAULT_MODEL]), 4),
                    "best_statsforecast_median_rmse_ratio": round(float(medians[sf].min()), 4) if sf else None,
                    "rmse_ratio": ratios.round(4).to_dict(),
                    "backtest_seconds": {k: round(v, 2) for k, v in seconds.items()},
                    "torch_train_seconds": round(torch_seconds, 2),
                    "sp500_sharpe": {k: round(v, 3) for k, v in sharpe.items()},
                },
                indent=2,
            )
        )


def time_torch(panel: pd.DataFrame) -> float:
    """Wall seconds to train the global torch model on the whole panel once."""
    start = time.perf_counter()
    make_model("mlp").fit(panel.dropna())
    return time.perf_counter() - start


def report(ratios, medians, seconds, torch_seconds, sharpe) -> None:
    order = list(medians.index)
    table = Table("series", *order, title="RMSE / naive RMSE, h=1, 40 expanding windows")
    for series_id, row in ratios[order].iterrows():
        table.add_row(series_id, *(f"{v:.3f}" for v in row))
    table.add_row("[bold]median[/bold]", *(f"[bold]{medians[m]:.3f}[/bold]" for m in order))
    table.add_row("seconds", *(f"{seconds[m]:.1f}" for m in order))
    console.print(table)
    console.print(f"torch model ({'mlp'}) trains on the panel in {torch_seconds:.1f} s")
    sharpe_table = Table("model", "Sharpe (sign strategy, 5 bp)", title="S&P 500, last 1000 trading days")
    for name, value in sharpe.items():
        sharpe_table.add_row(name, f"{value:.2f}")
    console.print(sharpe_table)


if __name__ == "__main__":
    main()
