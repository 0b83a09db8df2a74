"""A drift check: every series the serving model forecasts, all signals, one stored report.

Each signal is a test with a p-value (see ``significance``): input drift on two features (the
value and its volatility), prediction drift (the model's one-step forecasts since training
against its backtest forecasts) and realized accuracy (one-step errors since training against
the backtest's one-step errors). A check flags signals by the Benjamini-Hochberg procedure over
every test of the check (series x signals): a panel without drift raises an alarm in at most
``alpha`` of checks, however many series it has, while a break that moves many signals at once
is seen. A series drifts when any of its signals does. A breach is drift in ``consecutive``
checks in a row of the same model version that each saw new data of what its signals read (a
check on the same data as the one before counts once, and so does one after a revision of a value
no signal reads); retraining follows a breach outside the cool-down.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from pefm.config import get_settings
from pefm.drift.checks import evidently_drift, features, one_step_forecasts, predicted_changes, rmse
from pefm.drift.policy import DriftPolicy
from pefm.drift.significance import Null, accuracy_p_value, flag, sequence_null, window_nulls
from pefm.forecasting.gates import backtest_frame
from pefm.forecasting.panel import load_panel
from pefm.forecasting.registry import load_model, serving_version
from pefm.forecasting.training import data_sha256
from pefm.storage import retrain_events
from pefm.storage.model_versions import ModelVersion, get_version
from pefm.storage.signing import trusted_keys


class NothingToMonitor(LookupError):
    """No model version serves (a database not bootstrapped yet): there is nothing to check."""


def monitored_version(conn: psycopg.Connection) -> ModelVersion:
    """The version drift checks watch: the serving one."""
    serving = serving_version(conn)
    if serving is None:
        raise NothingToMonitor("no serving model to monitor: promote one first")
    return serving


def check(
    conn: psycopg.Connection,
    policy: DriftPolicy,
    *,
    version_id: str | None = None,
    series: list[str] | None = None,
    counted: bool = True,
) -> dict[str, Any]:
    """Compute, store and return a drift report for the serving model (or ``version_id``): every
    series it forecasts, or those of ``series`` (such a check is reported, never counted towards a
    breach: the streak is of checks of the whole model). A series whose values its transform now
    refuses is left out, with the reason under ``skipped``, and the others are checked.
    ``counted=False``: reported, not counted either (a check under a policy of the caller's own,
    not the monitor's, would make or break the monitor's streak)."""
    version = get_version(conn, version_id) if version_id else monitored_version(conn)
    model = load_model(conn, version.id, trusted_keys(get_settings()))
    reference_panel = load_panel(conn, version.series_ids, as_of=version.data_as_of, skip_refused=True)
    current_panel = load_panel(conn, version.series_ids, skip_refused=True)
    skipped = {**reference_panel.attrs.get("refused", {}), **current_panel.attrs.get("refused", {})}
    ids = [s for s in version.series_ids if (not series or s in series) and s not in skipped]
    transforms = current_panel.attrs["transforms"]
    one_step = _backtest_one_step(version)
    results, snapshots, tests = {}, {}, []
    for series_id in ids:
        history = current_panel[series_id].dropna()
        # the model's training data: as known when it was trained, up to where its fit ended
        # (later ingests may carry earlier vintages, so the as-of read alone is not enough)
        trained_until = _trained_until(model, series_id)
        trained = reference_panel[series_id].dropna().loc[:trained_until]
        new_points = int((history.index > trained_until).sum())
        level = transforms[series_id] == "none"
        reference = features(trained, transforms[series_id]).iloc[-policy.reference :]
        current = features(history, transforms[series_id]).iloc[-policy.current :]
        entry: dict[str, Any] = {"input": [], "prediction": None, "accuracy": None}
        if len(current) >= policy.min_points and len(reference) >= policy.current:
            entry["input"], snapshots[series_id] = evidently_drift(
                reference, current, [("value", "wasserstein"), ("volatility", "wasserstein")]
            )
            nulls = window_nulls(
                reference["value"].to_numpy(),
                new_points,
                len(current),
                level=level,
                simulations=policy.simulations,
                seed_text=series_id,
            )
            for signal in entry["input"]:
                signal["p_value"] = nulls[signal["feature"]].p_value(signal["score"])
                tests.append((signal, nulls[signal["feature"]]))
        # the checks use the latest `current` forecasts and `accuracy_window` errors: forecasting
        # every point since training cost a check more with every day the model served
        steps = one_step_forecasts(
            model, current_panel, series_id, trained_until, last=max(policy.current, policy.accuracy_window)
        )
        backtest = one_step[one_step["series_id"] == series_id]
        reference_forecasts = pd.Series(backtest["mean"].to_numpy(), index=pd.DatetimeIndex(backtest["ds"]))
        forecasts = steps["forecast"]
        if level:  # the changes they predict, as the input signal takes a level's changes
            reference_forecasts = predicted_changes(reference_forecasts, trained)
            forecasts = predicted_changes(forecasts, history)
        # the backtest's last one-step target comes h - 1 periods before the end of training
        gap = int((history.index > reference_forecasts.index.max()).sum()) if len(reference_forecasts) else 0
        entry["prediction"], null = _prediction(series_id, reference_forecasts.to_numpy(), forecasts, gap, policy)
        if entry["prediction"] is not None:
            tests.append((entry["prediction"], null))
        entry["accuracy"] = _accuracy(series_id, backtest["error"].to_numpy(), steps, policy)
        if entry["accuracy"] is not None:
            tests.append((entry["accuracy"], None))
        entry["last_ts"] = f"{history.index[-1]:%Y-%m-%d}"
        # for the streak, what its signals read: a revision of a value none reads (one before both
        # windows) is no new data of it, one that can move a score or its null is
        entry["data_sha256"] = _read_sha256(
            {
                "reference": reference,
                "current": current,
                "points": pd.DataFrame({"new": [new_points], "gap": [gap]}),
                "reference forecasts": reference_forecasts.to_frame("forecast"),
                "backtest errors": backtest.set_index("ds")[["error"]],
                "steps": steps[["actual"]].assign(forecast=_as_read(steps)),
            }
        )
        results[series_id] = entry
    flag(tests, policy.alpha)
    for entry in results.values():
        entry["drifted"] = bool(
            any(f["drifted"] for f in entry["input"])
            or (entry["prediction"] or {}).get("drifted")
            or (entry["accuracy"] or {}).get("drifted")
        )
    drifted = [s for s, e in results.items() if e["drifted"]]
    whole = counted and not series and not skipped
    digest = data_sha256(current_panel[ids]) if whole else None  # None: not part of a streak
    persisted = _persisted(conn, version.id, {s: results[s]["data_sha256"] for s in drifted}, policy.consecutive)
    breach = whole and bool(persisted)
    evidence = {s: results[s]["data_sha256"] for s in persisted}  # a one-off alarm elsewhere is none
    results, snapshots = _finite(results), _finite(snapshots)  # JSON has no inf: a value of 1e308 is data
    row = conn.execute(
        """INSERT INTO drift_reports (model_version, data_as_of, series, drifted_series, breach, evidently,
                                      data_sha256)
           VALUES (%s, now(), %s, %s, %s, %s, %s) RETURNING id, created_at""",
        (version.id, Jsonb(results), drifted, breach, Jsonb(snapshots), digest),
    ).fetchone()
    conn.commit()
    return {
        "id": row[0],
        "created_at": row[1].isoformat(),
        "model_version": version.id,
        "series": results,
        "drifted_series": drifted,
        "breach": breach,
        "evidence": evidence if breach else {},
        "tests": len(tests),
        "alpha": policy.alpha,
        "skipped": skipped,
    }


def _persisted(conn: psycopg.Connection, version_id: str, drifted: dict[str, str], consecutive: int) -> list[str]:
    """The series that drifted in this check (``drifted``: each one's digest of what its signals
    read now) and, with the version's earlier checks of the whole model, in ``consecutive`` checks
    in a row that each saw new data of it (a run of checks on the same data of it counts once, and
    only if each of them found drift: a verdict can flip on unchanged data, since
    Benjamini-Hochberg's cut-off moves with the other series' data). Per series: new data in one
    series made another's unchanged drift a breach. Checks stored before the digests were per
    series stand for all of theirs with the whole model's."""
    earlier: dict[str, list[tuple[str | None, bool | None]]] = {series_id: [] for series_id in drifted}
    for series_id, data, was_drifted in conn.execute(
        """SELECT s.id, coalesce(r.series -> s.id ->> 'data_sha256', r.data_sha256),
                  (r.series -> s.id ->> 'drifted')::boolean
           FROM (SELECT id, series, data_sha256 FROM drift_reports
                 WHERE model_version = %s AND data_sha256 IS NOT NULL ORDER BY id DESC LIMIT 500) AS r
           CROSS JOIN unnest(%s::text[]) AS s(id)
           ORDER BY r.id DESC""",
        (version_id, list(drifted)),
    ):
        earlier[series_id].append((data, was_drifted))
    persisted = []
    for series_id, digest in drifted.items():
        seen, streak = digest, 1
        for data, was_drifted in earlier[series_id]:
            if streak >= consecutive or not was_drifted:
                break
            if data != seen:  # new data of it: one more check in the streak
                seen, streak = data, streak + 1
        if streak >= consecutive:
            persisted.append(series_id)
    return persisted


def _read_sha256(read: dict[str, pd.DataFrame]) -> str:
    """A hash of what one series' signals read (each part by name), its numbers to 12 significant
    digits; the one-step forecasts as ``_as_read`` gives them, not the errors and changes the
    signals take (these follow from them and the actuals)."""
    parts = {name: part for name, part in read.items() if not part.empty}  # none read: nothing to hash
    return hashlib.sha256(pd.concat(parts).to_csv(float_format="%.12g").encode()).hexdigest()


FORECAST_QUANTUM = 1e-4
"""The share of the actuals' spread the digest reads the one-step forecasts to (``_as_read``)."""


def _as_read(steps: pd.DataFrame) -> pd.Series:
    """The one-step forecasts as the digest reads them: in whole ``FORECAST_QUANTUM`` of the
    actuals' standard deviation. A model that filters the whole history (statsmodels' state space:
    ar, arima, ets) moves them by some 1e-9 of their size when a value decades back is revised
    (ETS's to ~1e-12 of the spread at 12 significant digits, which made such a revision new
    data), and that moves no score; a revision of the values they condition on moves them by a
    share of the spread."""
    spread = float(np.nan_to_num(steps["actual"].std())) or 1.0
    return (steps["forecast"] / (spread * FORECAST_QUANTUM)).round()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (nested in dicts and lists) made None."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _trained_until(model, series_id: str) -> pd.Timestamp:
    return model.for_series(series_id).cutoff_


def _backtest_one_step(version: ModelVersion) -> pd.DataFrame:
    """The version's one-step backtest forecasts and errors, per series (what the model did on
    data like its training data): ``series_id, ds, mean, error``; empty without stored forecasts."""
    if not (version.backtest or {}).get("forecasts"):
        return pd.DataFrame(columns=["series_id", "ds", "mean", "error"])
    rows = backtest_frame(version.backtest)
    rows = rows[rows["step"] == 1]
    return rows.assign(error=rows["y"] - rows["mean"])[["series_id", "ds", "mean", "error"]]


def _prediction(
    series_id: str, reference: np.ndarray, forecasts: pd.Series, gap: int, policy: DriftPolicy
) -> tuple[dict[str, Any] | None, Null | None]:
    """The model's one-step forecasts since training against its one-step backtest forecasts
    (for a level: the changes they predict); ``gap``: the points after the reference's last."""
    current = forecasts.to_frame("forecast").iloc[-policy.current :]
    if len(current) < policy.min_points or len(reference) < policy.min_points or np.std(reference) == 0:
        return None, None
    [result], _ = evidently_drift(pd.DataFrame({"forecast": reference}), current, [("forecast", "wasserstein")])
    null = sequence_null(
        reference, gap, len(current), simulations=policy.simulations, seed_text=f"{series_id}/forecast"
    )
    result["p_value"] = null.p_value(result["score"])
    return result, null


def _accuracy(series_id: str, backtest: np.ndarray, steps: pd.DataFrame, policy: DriftPolicy) -> dict[str, Any] | None:
    """The model's one-step errors since training against its one-step backtest errors; none with
    fewer than the policy's ``accuracy_min_errors`` (``pefm.drift.policy.MIN_ERRORS`` at least) errors."""
    errors = steps["error"].dropna().to_numpy()[-policy.accuracy_window :]
    if len(errors) < policy.accuracy_min_errors or len(backtest) < policy.min_points:
        return None
    realized, promised = rmse(errors), rmse(backtest)
    return {
        "realized_rmse": realized,
        "backtest_rmse": promised,
        "ratio": realized / max(promised, 1e-12),
        "method": "permutation",
        "errors": len(errors),
        "backtest_errors": len(backtest),
        "p_value": accuracy_p_value(
            errors, backtest, permutations=policy.simulations, seed_text=f"{series_id}/accuracy"
        ),
    }


def report_rows(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A report's signals as Evidently-style rows: series, feature, method, score, threshold, drifted."""
    rows = []
    for series_id, entry in series.items():
        signals = [(f["feature"], f) for f in entry["input"]]
        if entry.get("accuracy"):
            signals.append(
                (
                    "realized / backtest RMSE",
                    {**entry["accuracy"], "score": entry["accuracy"]["ratio"]},
                )
            )
        if entry.get("prediction"):
            signals.append(("one-step forecasts", entry["prediction"]))
        rows += [
            {
                "series": series_id,
                "feature": feature,
                "method": s["method"],
                "score": s["score"],
                "threshold": s["threshold"],
                "p_value": s.get("p_value"),
                "drifted": bool(s["drifted"]),
            }
            for feature, s in signals
        ]
    return rows


def due_for_retraining(conn: psycopg.Connection, report: dict[str, Any], policy: DriftPolicy) -> tuple[bool, str]:
    """Whether a breach should start retraining now, and why (or why not)."""
    if not report["breach"]:
        return False, "no breach"
    last = retrain_events.cool_down_since(conn)
    if last is not None and datetime.now(UTC) - last < timedelta(hours=policy.cooldown_hours):
        return False, f"cool-down: last retraining (trained or requested) at {last:%Y-%m-%d %H:%M}"
    # the breach found again on the data a request was made on (every schedule's check while
    # nothing arrives) is no new evidence: it requested one more retraining each cool-down
    made = retrain_events.last_request(conn)
    if made.get("evidence") and (made.get("model_version"), made["evidence"]) == (
        report.get("model_version"),
        report.get("evidence"),
    ):
        given_up = retrain_events.given_up_request(conn)
        if given_up is None:
            return False, "a retraining was requested on these data already"
        return (
            True,
            f"drift in {', '.join(report['evidence'])}, asked again: the last request was {given_up.describe()}",
        )
    return True, f"drift in {', '.join(report['evidence'])} for {policy.consecutive} checks"
