"""The drift signals of one series: input drift (Evidently), prediction drift, realized accuracy."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pandas as pd

# Evidently methods that return a p-value (drift when below the threshold); the others return a
# distance (drift when at or above it).
P_VALUE_METHODS = {
    "ks",
    "t_test",
    "mannw",
    "anderson",
    "chisquare",
    "z",
    "fisher_exact",
    "cramer_von_mises",
    "g_test",
    "epps_singleton",
}


def features(series: pd.Series, transform: str) -> pd.DataFrame:
    """Per period: ``value`` (the series, or its first difference when it is modelled as a level)
    and ``volatility`` (|first difference|)."""
    change = series.diff()
    value = series if transform != "none" else change
    return pd.DataFrame({"value": value, "volatility": change.abs()}).dropna()


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, tests: list[tuple[str, str, float]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run an Evidently 0.7 report of ValueDrift(column, method, threshold) for each test;
    one result per test (with the reference and current values it compared) and the snapshot
    as a dict."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = sorted({column for column, _, _ in tests})
    definition = DataDefinition(numerical_columns=columns)
    report = Report([ValueDrift(column=c, method=m, threshold=t) for c, m, t in tests])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(  # Evidently takes CURRENT first: both passed by keyword
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        ).dict()
    results = []
    for metric in snapshot["metrics"]:
        config, score = metric["config"], float(metric["value"])
        method, threshold = config["method"], float(config["threshold"])
        drifted = score < threshold if method in P_VALUE_METHODS else score >= threshold
        results.append(
            {
                "feature": config["column"],
                "method": method,
                "score": score,
                "threshold": threshold,
                "drifted": bool(drifted),
                "reference_n": len(reference),
                "current_n": len(current),
                "reference": reference[config["column"]].round(6).tolist(),
                "current": current[config["column"]].round(6).tolist(),
            }
        )
    return results, snapshot


def realized_errors(model, panel: pd.DataFrame, series_id: str, trained_until: pd.Timestamp) -> pd.Series:
    """One-step errors (actual - forecast) of the served model on each value that arrived after
    its training data, conditioning on the data before each (parameters fixed)."""
    from pefm.forecasting.per_series import PerSeries

    history = panel[series_id].dropna()
    after = history.index[history.index > trained_until]
    errors = {}
    if isinstance(model, PerSeries):
        member = copy.deepcopy(model.for_series(series_id))
        attrs = {"frequency": panel.attrs["frequencies"][series_id]}
        for ts in after:
            known = history.loc[history.index < ts]
            known.attrs = attrs
            forecast = member.update(known).predict(1)["mean"].iloc[0]
            errors[ts] = history.loc[ts] - forecast
    else:
        fitted = copy.deepcopy(model)
        data = panel[fitted.series_ids_].dropna()
        for ts in after:
            known = data.loc[data.index < ts]
            known.attrs = dict(panel.attrs)
            frame = fitted.update(known).predict(1)
            errors[ts] = history.loc[ts] - frame.loc[frame["series_id"] == series_id, "mean"].iloc[0]
    return pd.Series(errors, dtype="float64")


def rmse(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))
