"""A drift check: every series the serving model forecasts, all signals, one stored report.

A series drifts when any signal does. The report is a breach when drift has persisted for
``consecutive`` checks of the same model version; retraining follows a breach outside the
cool-down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from pefm.drift.checks import evidently_drift, features, realized_errors, rmse
from pefm.drift.policy import DriftPolicy
from pefm.forecasting.panel import load_panel
from pefm.forecasting.registry import load_model
from pefm.storage.model_versions import ModelVersion, get_version, list_versions


def serving_version(conn: psycopg.Connection) -> ModelVersion:
    serving = list_versions(conn, status="serving")
    if not serving:
        raise LookupError("no serving model to monitor: promote one first")
    return serving[0]


def check(
    conn: psycopg.Connection, policy: DriftPolicy, *, version_id: str | None = None, series: list[str] | None = None
) -> dict[str, Any]:
    """Compute, store and return a drift report for the serving model (or ``version_id``)."""
    version = get_version(conn, version_id) if version_id else serving_version(conn)
    ids = [s for s in version.series_ids if not series or s in series]
    model = load_model(conn, version.id)
    reference_panel = load_panel(conn, version.series_ids, as_of=version.data_as_of)
    current_panel = load_panel(conn, version.series_ids)
    transforms = current_panel.attrs["transforms"]
    results, snapshots = {}, {}
    for series_id in ids:
        # the model's training data: as known when it was trained, up to where its fit ended
        # (later ingests may carry earlier vintages, so the as-of read alone is not enough)
        trained = reference_panel[series_id].dropna().loc[: _trained_until(model, series_id)]
        reference = features(trained, transforms[series_id]).iloc[-policy.reference :]
        current = features(current_panel[series_id].dropna(), transforms[series_id]).iloc[-policy.current :]
        entry: dict[str, Any] = {"input": [], "prediction": None, "accuracy": None}
        if len(current) >= 4 and len(reference) >= policy.current:
            entry["input"], snapshots[series_id] = evidently_drift(
                reference,
                current,
                [
                    ("value", policy.input_method, policy.value_threshold),
                    ("volatility", policy.input_method, policy.volatility_threshold),
                ],
            )
        entry["prediction"] = _prediction_drift(conn, version.id, series_id, policy)
        entry["accuracy"] = _accuracy(model, version, current_panel, series_id, trained.index[-1], policy)
        entry["drifted"] = bool(
            any(f["drifted"] for f in entry["input"])
            or (entry["prediction"] or {}).get("drifted")
            or (entry["accuracy"] or {}).get("drifted")
        )
        entry["last_ts"] = f"{current_panel[series_id].dropna().index[-1]:%Y-%m-%d}"
        results[series_id] = entry
    drifted = [s for s, e in results.items() if e["drifted"]]
    breach = bool(drifted) and _persisted(conn, version.id, policy.consecutive - 1)
    row = conn.execute(
        """INSERT INTO drift_reports (model_version, data_as_of, series, drifted_series, breach, evidently)
           VALUES (%s, now(), %s, %s, %s, %s) RETURNING id, created_at""",
        (version.id, Jsonb(results), drifted, breach, Jsonb(snapshots)),
    ).fetchone()
    conn.commit()
    return {
        "id": row[0],
        "created_at": row[1].isoformat(),
        "model_version": version.id,
        "series": results,
        "drifted_series": drifted,
        "breach": breach,
    }


def _persisted(conn: psycopg.Connection, version_id: str, previous: int) -> bool:
    if previous <= 0:
        return True
    rows = conn.execute(
        "SELECT cardinality(drifted_series) > 0 FROM drift_reports WHERE model_version = %s ORDER BY id DESC LIMIT %s",
        (version_id, previous),
    ).fetchall()
    return len(rows) == previous and all(r[0] for r in rows)


def _prediction_drift(conn, version_id: str, series_id: str, policy: DriftPolicy) -> dict[str, Any] | None:
    """Served one-step forecasts: the latest ``min_samples`` against the ones before them."""
    rows = conn.execute(
        """SELECT (forecast -> 0 ->> 'mean')::float8 FROM predictions
           WHERE model_version = %s AND series_id = %s AND NOT what_if ORDER BY ts DESC LIMIT %s""",
        (version_id, series_id, 2 * policy.prediction_min_samples),
    ).fetchall()
    values = np.array([r[0] for r in rows if r[0] is not None])
    n = policy.prediction_min_samples
    if len(values) < 2 * n or np.std(values[n:]) == 0:
        return None
    current, reference = pd.DataFrame({"served": values[:n]}), pd.DataFrame({"served": values[n:]})
    [result], _ = evidently_drift(
        reference, current, [("served", policy.prediction_method, policy.prediction_threshold)]
    )
    return result


def _trained_until(model, series_id: str) -> pd.Timestamp:
    from pefm.forecasting.per_series import PerSeries

    return model.for_series(series_id).cutoff_ if isinstance(model, PerSeries) else model.cutoff_


def _accuracy(
    model,
    version: ModelVersion,
    panel: pd.DataFrame,
    series_id: str,
    trained_until: pd.Timestamp,
    policy: DriftPolicy,
) -> dict[str, Any] | None:
    expected = ((version.backtest or {}).get("metrics") or {}).get(series_id, {}).get("rmse")
    if not expected:
        return None
    errors = realized_errors(model, panel, series_id, trained_until).iloc[-policy.accuracy_window :]
    if len(errors) < policy.accuracy_min_errors:
        return None
    realized = rmse(errors.to_numpy())
    ratio = realized / expected
    return {
        "realized_rmse": realized,
        "backtest_rmse": expected,
        "ratio": ratio,
        "threshold": policy.accuracy_ratio,
        "errors": len(errors),
        "drifted": bool(ratio >= policy.accuracy_ratio),
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
                    {**entry["accuracy"], "method": "ratio", "score": entry["accuracy"]["ratio"]},
                )
            )
        if entry.get("prediction"):
            signals.append(("served forecasts", entry["prediction"]))
        rows += [
            {
                "series": series_id,
                "feature": feature,
                "method": s["method"],
                "score": s["score"],
                "threshold": s["threshold"],
                "drifted": bool(s["drifted"]),
            }
            for feature, s in signals
        ]
    return rows


def due_for_retraining(conn: psycopg.Connection, report: dict[str, Any], policy: DriftPolicy) -> tuple[bool, str]:
    """Whether a breach should start retraining now, and why (or why not)."""
    if not report["breach"]:
        return False, "no breach"
    row = conn.execute("SELECT max(ts) FROM retrain_events WHERE step = 'start'").fetchone()
    if row[0] is not None and datetime.now(UTC) - row[0] < timedelta(hours=policy.cooldown_hours):
        return False, f"cool-down: last retraining started at {row[0]:%Y-%m-%d %H:%M}"
    return True, f"drift in {', '.join(report['drifted_series'])} for {policy.consecutive} checks"
