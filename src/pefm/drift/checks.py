"""The drift signals of one series: features, Evidently scores, the model's one-step forecasts."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pandas as pd


def features(series: pd.Series, transform: str) -> pd.DataFrame:
    """Per period: ``value`` (the series, or its first difference when it is modelled as a level)
    and ``volatility`` (|first difference|)."""
    change = series.diff()
    value = series if transform != "none" else change
    return pd.DataFrame({"value": value, "volatility": change.abs()}).dropna()


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, tests: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run an Evidently 0.7 report of ValueDrift(column, method) for each (column, method); one
    result per test (its score, and the reference and current values it compared) and the
    snapshot as a dict. Whether a score is drift is decided by the caller, from its p-value."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = sorted({column for column, _ in tests})
    definition = DataDefinition(numerical_columns=columns)
    report = Report([ValueDrift(column=c, method=m) for c, m in tests])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(  # Evidently takes CURRENT first: both passed by keyword
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        ).dict()
    results = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        results.append(
            {
                "feature": config["column"],
                "method": config["method"],
                "score": float(metric["value"]),
                "reference_n": len(reference),
                "current_n": len(current),
                "reference": reference[config["column"]].round(6).tolist(),
                "current": current[config["column"]].round(6).tolist(),
            }
        )
    return results, snapshot


def one_step_forecasts(
    model, panel: pd.DataFrame, series_id: str, trained_until: pd.Timestamp, last: int | None = None
) -> pd.DataFrame:
    """For each value that arrived after the model's training data (the ``last`` of them only):
    the served model's one-step forecast of it, conditioned on the data before it (parameters
    fixed), the actual value and the error (actual - forecast). Indexed by timestamp. A value the
    data before it do not reach in one step has none: a joint model's data end at its series'
    common last date, so where one series runs ahead of another its next step is not that value's
    date (it was paired with the forecast of an earlier one)."""
    from pefm.forecasting.panel import member_data

    history = panel[series_id].dropna()
    after = history.index[history.index > trained_until]
    after = after[-last:] if last else after
    member = copy.deepcopy(model.for_series(series_id))
    data = member_data(member, panel, series_id)
    forecasts = {}
    for ts in after:
        known = data.loc[data.index < ts]
        known.attrs = dict(data.attrs)
        frame = member.update(known).predict(1)
        step = frame.loc[frame["series_id"] == series_id].iloc[0]
        if step["ds"] == ts:
            forecasts[ts] = step["mean"]
    out = pd.DataFrame({"forecast": pd.Series(forecasts, dtype="float64")})
    out["actual"] = history.reindex(out.index)
    out["error"] = out["actual"] - out["forecast"]
    return out


def predicted_changes(forecasts: pd.Series, history: pd.Series) -> pd.Series:
    """Each one-step forecast less the value before its date: what a model of a level predicts the
    change to be. The levels of a persistent series wander off their training window with no
    drift at all, as the series does; these are comparable across time, as the input signal's
    first differences are."""
    previous = history.shift(1).reindex(forecasts.index)
    return (forecasts - previous).dropna()


def rmse(values: np.ndarray) -> float:
    """Root mean square, scaled first so that errors of huge but finite values do not overflow."""
    values = np.asarray(values, dtype=float)
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    return scale * float(np.sqrt(np.mean(np.square(values / scale))))
