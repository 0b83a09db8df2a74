"""Drift benchmark: how often a whole panel raises a false alarm on stable data, and when the
2000s breaks are flagged and breach.

1. Stable panels, input drift: checks of an 8-series panel of stable series of mixed kinds
   (AR(1) with phi in [0, 0.8], Gaussian or Student-t(4) shocks, levels or transformed values),
   through the monitor's input tests and its Benjamini-Hochberg step; the share of checks with any alarm
   is the per-check panel false-alarm rate (target: at most 5%).
2. Stable panels, end to end: the same kinds of series stored in a database (ARMA(1,1) in
   differences, integrated series), an AR model trained and served, then new points arriving one
   at a time, each followed by the monitor's full check (input, prediction and accuracy signals);
   per-check panel false-alarm rate and breaches.
3. Replay: a model trained on macrodata up to 1999Q4 serves while 2000Q1-2009Q3 arrive quarter
   by quarter (each known when its quarter ends); the first quarter each series is flagged and
   the first breach that names it.

Usage: python bench/drift.py [--json PATH] [--checks N] [--panels N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import Progress

from pefm.config import Settings
from pefm.data.bundled import bundled
from pefm.data.loading import load_bundled
from pefm.drift.calibration import stable_input_false_alarms, stationary_ar1
from pefm.drift.monitor import check
from pefm.drift.policy import DriftPolicy
from pefm.forecasting.backtest import BacktestSpec
from pefm.forecasting.panel import MACRO_PANEL
from pefm.forecasting.registry import promote
from pefm.forecasting.training import train
from pefm.local.secrets import use_local_secrets
from pefm.storage.database import open_database
from pefm.storage.observations import write_observations
from pefm.storage.series import SeriesMeta, upsert_series

SERIES = 8
HISTORY = 120  # quarters the served model is trained on
ARRIVING = 40  # quarters that arrive after it, each followed by a check


def stable_end_to_end(policy: DriftPolicy, panels: int, progress: Progress) -> dict:
    """Per-check panel false alarms of the real monitor on stable stored series."""
    checks = alarms = breaches = 0
    flagged_signals: dict[str, int] = {}
    task = progress.add_task("stable panels, end to end", total=panels * ARRIVING)
    for panel in range(panels):
        rng = np.random.default_rng(1000 + panel)
        with (
            tempfile.TemporaryDirectory() as tmp,
            open_database(Settings(home=Path(tmp)), schema="migrate") as db,
            db.connection() as conn,
        ):
            use_local_secrets(Settings(home=Path(tmp)))  # the signing key of the models it trains
            frame = _stable_panel(conn, rng)
            first = frame[frame["ts"] < frame["ts"].unique()[HISTORY]]
            write_observations(conn, first)  # each value known from the end of its quarter
            conn.commit()
            ids = sorted(frame["series_id"].unique())
            version, _ = train(conn, "ar", ids, spec=BacktestSpec(h=1, windows=12))
            promote(conn, version.id)
            conn.commit()
            for quarter in frame["ts"].unique()[HISTORY : HISTORY + ARRIVING]:
                rows = frame[frame["ts"] == quarter]
                write_observations(conn, rows)
                conn.commit()
                report = check(conn, policy)
                checks += 1
                alarms += bool(report["drifted_series"])
                breaches += report["breach"]
                for entry in report["series"].values():
                    for signal in _signals(entry):
                        if signal[1]:
                            flagged_signals[signal[0]] = flagged_signals.get(signal[0], 0) + 1
                progress.advance(task)
    return {
        "checks": checks,
        "alarms": alarms,
        "false_alarm_rate": round(alarms / checks, 4),
        "breaches": breaches,
        "alarms_by_signal": flagged_signals,
    }


def _signals(entry: dict) -> list[tuple[str, bool]]:
    out = [(f["feature"], f["drifted"]) for f in entry["input"]]
    if entry.get("prediction"):
        out.append(("prediction", entry["prediction"]["drifted"]))
    if entry.get("accuracy"):
        out.append(("accuracy", entry["accuracy"]["drifted"]))
    return out


def _stable_panel(conn, rng: np.random.Generator) -> pd.DataFrame:
    """SERIES stable quarterly series stored with their catalog entries: stationary ARMA levels
    (the monitor looks at their changes) and integrated series modelled in differences."""
    dates = pd.date_range("1970-01-01", periods=HISTORY + ARRIVING, freq="QS")
    rows = []
    for i in range(SERIES):
        values = stationary_ar1(rng, len(dates), heavy=bool(i % 2))
        transform = "diff" if i % 4 < 2 else "none"
        level = 100 + np.cumsum(values) if transform == "diff" else 50 + values
        series_id = f"stable{i}"
        upsert_series(conn, SeriesMeta(series_id, f"stable series {i}", "Q", transform=transform))
        rows += [
            {"series_id": series_id, "ts": ts, "value": v, "vintage": ts + pd.offsets.QuarterBegin(startingMonth=1)}
            for ts, v in zip(dates, level, strict=True)
        ]
    conn.commit()
    return pd.DataFrame(rows)


def replay(policy: DriftPolicy, progress: Progress) -> tuple[dict[str, str], dict[str, str], dict[str, dict]]:
    items = bundled(list(MACRO_PANEL))
    full = {b.meta.id: b.load() for b in items}
    first: dict[str, str] = {}
    breach: dict[str, str] = {}
    timeline: dict[str, dict] = {}
    quarters = pd.date_range("2000-01-01", "2009-07-01", freq="QS")
    task = progress.add_task("2000s replay", total=len(quarters))
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_database(Settings(home=Path(tmp)), schema="migrate") as db,
        db.connection() as conn,
    ):
        use_local_secrets(Settings(home=Path(tmp)))
        load_bundled(conn, items)
        conn.execute("DELETE FROM observations WHERE ts >= '2000-01-01'")
        conn.commit()
        version, _ = train(conn, "ar", list(MACRO_PANEL), spec=BacktestSpec(h=1, windows=20))
        promote(conn, version.id)
        for quarter in quarters:
            rows = pd.DataFrame([{"series_id": s, "ts": quarter, "value": full[s].loc[quarter]} for s in MACRO_PANEL])
            write_observations(conn, rows, vintage=quarter + pd.offsets.QuarterBegin(startingMonth=1))
            conn.commit()
            label = f"{quarter.year}Q{(quarter.month - 1) // 3 + 1}"
            report = check(conn, policy)
            timeline[label] = {"drifted": report["drifted_series"], "breach": report["breach"]}
            for series_id in report["drifted_series"]:
                first.setdefault(series_id, label)
                if report["breach"]:
                    breach.setdefault(series_id, label)
            progress.advance(task)
    return first, breach, timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--checks", type=int, default=500, help="stable input-drift panel checks")
    parser.add_argument("--panels", type=int, default=3, help=f"stable end-to-end panels ({ARRIVING} checks each)")
    args = parser.parse_args()
    policy = DriftPolicy.load()
    with Progress(transient=True) as progress:
        started = time.perf_counter()
        task = progress.add_task("stable panels, input drift", total=1)
        flagged, rate = stable_input_false_alarms(policy, args.checks, series=SERIES, seed=2026)
        progress.advance(task)
        input_seconds = time.perf_counter() - started
        started = time.perf_counter()
        end_to_end = stable_end_to_end(policy, args.panels, progress)
        e2e_seconds = time.perf_counter() - started
        first, breach, timeline = replay(policy, progress)
    print(f"per-check false-alarm rate of a whole {SERIES}-series stable panel (target <= 0.05, alpha {policy.alpha}):")
    print("| stable panel checks | checks | with an alarm | rate | breaches |")
    print("|---|---|---|---|---|")
    print(f"| input drift ({policy.reference}/{policy.current} windows) | {args.checks} | {flagged} | {rate:.3f} | - |")
    print(
        f"| end to end: monitor on a served AR model, all signals | {end_to_end['checks']} | {end_to_end['alarms']} "
        f"| {end_to_end['false_alarm_rate']:.3f} | {end_to_end['breaches']} |"
    )
    by_signal = end_to_end["alarms_by_signal"]
    print(f"(input {input_seconds:.0f} s, end to end {e2e_seconds:.0f} s; alarms by signal {by_signal})")
    print()
    print("2000s replay (AR trained to 1999Q4, a check after each quarter):")
    print("| series | first flagged | first breach |")
    print("|---|---|---|")
    for series_id in MACRO_PANEL:
        print(f"| {series_id} | {first.get(series_id, 'never')} | {breach.get(series_id, 'never')} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "alpha": policy.alpha,
                    "stable_input": {"checks": args.checks, "alarms": flagged, "false_alarm_rate": round(rate, 4)},
                    "stable_end_to_end": end_to_end,
                    "windows": {"reference": policy.reference, "current": policy.current},
                    "first_flagged": first,
                    "first_breach": breach,
                    "timeline": timeline,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
