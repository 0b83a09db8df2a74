"""Scores of the broad run: per model, series and horizon; aggregated over series; the targets.

Per (model, series, step k), over the run's origins, with ``pefm.forecasting.metrics``:

- ``rmse_ratio``: RMSE / RMSE of PEFM's naive at the same step (the same values as sf_Naive's);
- ``mase``: MAE / in-sample MAE of the seasonal naive (the series' season length) on the data up to
  the first origin;
- ``coverage-80``, ``coverage-95``: share of the actual values inside the interval;
- ``winkler-80``, ``winkler-95``: mean Winkler score divided by the same in-sample seasonal-naive
  MAE as MASE's (so it is scale-free and the same divisor for every model).

``avg`` (the "averaged over h" row) is each series' mean of the eight steps' values. Aggregates
over series: the median of ``rmse_ratio``, ``mase`` and the coverages, the lowest series'
95% coverage, and the mean of the scaled Winkler scores. They are taken over the series that
every model forecast and scored in full, so that every row of a table is comparable; the series
left out, and why, are listed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from broad_run import BASELINE, DEFAULT, LEVELS, with_steps
from pefm.forecasting import metrics

METRICS = ("rmse", "rmse_ratio", "mase", "coverage-80", "coverage-95", "winkler-80", "winkler-95")
AGGREGATES = (
    "rmse_ratio_median",
    "mase_median",
    "coverage-80_median",
    "coverage-95_median",
    "coverage-95_min",
    "winkler-80_mean",
    "winkler-95_mean",
)


def score_series(forecasts: pd.DataFrame, history: pd.Series, season: int) -> pd.DataFrame:
    """One model's scores on one series, a row per step. ValueError on NaN bounds, and when the
    series has no in-sample scale (MASE's and the scaled Winkler's divisor): too few points up
    to the first origin, or the seasonal naive fits them exactly (a rate held flat); MASE alone
    would be left out (``metrics.point_metrics``), but the Winkler scores cannot go unscaled."""
    train = history.dropna().loc[: forecasts["cutoff"].min()].to_numpy()
    m = season
    if len(train) <= m:
        raise ValueError(f"no in-sample scale: {len(train)} points up to the first origin, season length {m}")
    scale = metrics.mae(train[m:], train[:-m])
    if scale == 0:
        raise ValueError(
            f"no in-sample scale: the seasonal naive (season length {m}) fits all {len(train)} points "
            "up to the first origin exactly"
        )
    rows = []
    for step, g in forecasts.groupby("step"):
        point = metrics.point_metrics(g["y"], g["mean"], train, season=m)
        bounds = {lv: (g[f"lo-{lv}"], g[f"hi-{lv}"]) for lv in LEVELS}
        row = {"step": int(step), "rmse": point["rmse"], "mase": point.get("mase", np.nan)}
        row.update(metrics.interval_metrics(g["y"], bounds))
        for lv in LEVELS:
            row[f"winkler-{lv}"] /= scale
        rows.append(row)
    return pd.DataFrame(rows)


def score_all(
    forecasts: dict[str, pd.DataFrame], histories: dict[str, pd.Series], seasons: dict[str, int]
) -> tuple[pd.DataFrame, list[dict]]:
    """Scores of every (model, series, step) plus the ``avg`` step, and the (model, series) pairs
    that could not be scored, with the reason."""
    parts, failures = [], []
    for label, frame in forecasts.items():
        for sid, group in with_steps(frame).groupby("series_id"):
            try:
                scores = score_series(group, histories[sid], seasons[sid])
            except ValueError as exc:
                failures.append({"model": label, "series_id": sid, "error": f"scoring: {exc}"})
                continue
            parts.append(scores.assign(model=label, series_id=sid))
    if not parts:  # nothing scored: the failures say why, and the run still reports them
        return pd.DataFrame(columns=["model", "series_id", "step", *METRICS]), failures
    long = pd.concat(parts, ignore_index=True)
    base = long[long["model"] == BASELINE].set_index(["series_id", "step"])["rmse"]
    keys = pd.MultiIndex.from_frame(long[["series_id", "step"]])
    long["rmse_ratio"] = long["rmse"].to_numpy() / base.reindex(keys).to_numpy()
    avg = long.groupby(["model", "series_id"])[list(METRICS)].mean().reset_index().assign(step="avg")
    long["step"] = long["step"].astype(object)
    return pd.concat([long, avg], ignore_index=True)[["model", "series_id", "step", *METRICS]], failures


def common_series(scores: pd.DataFrame, models: list[str], series_ids: list[str], steps: int) -> list[str]:
    """The series every model has all ``steps`` steps of, with no metric missing."""
    full = scores[scores["step"] != "avg"].dropna(subset=list(METRICS))
    counts = full.groupby(["series_id", "model"]).size()
    return [s for s in series_ids if all(counts.get((s, m), 0) == steps for m in models)]


def aggregate(scores: pd.DataFrame, series_ids: list[str]) -> pd.DataFrame:
    """Per (model, step): the aggregates over ``series_ids`` (see the module docstring)."""
    kept = scores[scores["series_id"].isin(series_ids)]
    grouped = kept.groupby(["model", "step"])
    out = pd.DataFrame(
        {
            "rmse_ratio_median": grouped["rmse_ratio"].median(),
            "mase_median": grouped["mase"].median(),
            "coverage-80_median": grouped["coverage-80"].median(),
            "coverage-95_median": grouped["coverage-95"].median(),
            "coverage-95_min": grouped["coverage-95"].min(),
            "coverage-95_min_series": kept.loc[grouped["coverage-95"].idxmin(), "series_id"].to_numpy(),
            "winkler-80_mean": grouped["winkler-80"].mean(),
            "winkler-95_mean": grouped["winkler-95"].mean(),
            "series": grouped.size(),
        }
    )
    return out


def targets(agg: pd.DataFrame, seconds: dict[str, float], macro_median: float | None) -> list[dict]:
    """The lead's targets, each with the default's value, what it is compared with, and pass/fail
    (none when no series was scored by every model: the failures say why)."""
    if agg.empty:
        return []
    sf_point = [m for m in agg.index.get_level_values("model").unique() if m.startswith("sf_") and "conformal" not in m]
    conformal = [m for m in agg.index.get_level_values("model").unique() if m.endswith("_conformal")]
    rows = []

    def add(name: str, value: float, reference: str, ok: bool) -> None:
        rows.append({"target": name, "default": round(float(value), 4), "reference": reference, "pass": bool(ok)})

    for step in (1, 4):
        best = min(sf_point, key=lambda m: agg.loc[(m, step), "rmse_ratio_median"])
        ref = agg.loc[(best, step), "rmse_ratio_median"]
        value = agg.loc[(DEFAULT, step), "rmse_ratio_median"]
        add(f"median RMSE/naive, h={step}", value, f"<= {ref:.4f} ({best})", value <= ref)
    for step in (1, 4):
        for lv in LEVELS:
            value = agg.loc[(DEFAULT, step), f"coverage-{lv}_median"]
            add(
                f"median coverage {lv}%, h={step}",
                value,
                f"{lv / 100 - 0.05:.2f}..{lv / 100 + 0.05:.2f}",
                abs(value - lv / 100) <= 0.05 + 1e-9,
            )
        value = agg.loc[(DEFAULT, step), "coverage-95_min"]
        who = agg.loc[(DEFAULT, step), "coverage-95_min_series"]
        add(f"lowest series' coverage 95%, h={step} ({who})", value, ">= 0.80", value >= 0.80)
    intervals = sf_point + conformal  # the best of statsforecast's intervals, its own or conformal
    for lv in LEVELS:
        col = f"winkler-{lv}_mean"
        if intervals:
            best = min(intervals, key=lambda m: agg.loc[(m, "avg"), col])
            ref = agg.loc[(best, "avg"), col]
            value = agg.loc[(DEFAULT, "avg"), col]
            add(f"mean scaled Winkler {lv}%, avg over h", value, f"<= {ref:.4f} ({best})", value <= ref)
    if "sf_AutoARIMA" in seconds:
        value, ref = seconds[DEFAULT], seconds["sf_AutoARIMA"]
        add("backtest CPU seconds (scored series)", value, f"<= {ref:.1f} (sf_AutoARIMA)", value <= ref)
    if macro_median is not None:
        add("macro panel median RMSE/naive, h=1", macro_median, "<= 0.88", macro_median <= 0.88)
    return rows


def model_order(labels) -> list[str]:
    """Default first, then the baseline, then the anchors (own intervals before conformal)."""
    rest = sorted(m for m in labels if m not in (DEFAULT, BASELINE))
    rest.sort(key=lambda m: m.endswith("_conformal"))
    return [m for m in (DEFAULT, BASELINE) if m in labels] + rest


def to_json(scores: pd.DataFrame, agg: pd.DataFrame) -> dict:
    """Aggregates per model and horizon, and every series' scores, as JSON-ready dicts."""

    def clean(x):
        return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), 4)

    per_model: dict = {}
    for (model, step), row in agg.iterrows():
        entry = {k: clean(row[k]) for k in AGGREGATES}
        entry["coverage-95_min_series"] = row["coverage-95_min_series"]
        entry["series"] = int(row["series"])
        per_model.setdefault(model, {})[f"h{step}" if step != "avg" else "avg"] = entry
    per_series: dict = {}
    for _, row in scores.iterrows():
        key = f"h{row['step']}" if row["step"] != "avg" else "avg"
        per_series.setdefault(row["model"], {}).setdefault(row["series_id"], {})[key] = {
            k: clean(row[k]) for k in METRICS
        }
    return {"aggregates": per_model, "per_series": per_series}
