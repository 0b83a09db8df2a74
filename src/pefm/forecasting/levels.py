"""Forecasts in a series' own units: the model-space forecast mapped back through its transform.

Models forecast the transformed series (model space: growth rates, changes, returns). In level
space (the stored values' units):

- the point forecast is the inverse transform of the model-space mean path, anchored at the last
  stored level: ``y_T + cumsum(mean)`` for ``diff``, ``y_T * exp(cumsum(mean) / c)`` for the log
  transforms (``c = 100 * periods_per_year`` for ``log_diff_ann``, ``100`` for ``log_return``).
  For a log transform this is the median of the level when the log changes are symmetric, not
  its mean (no lognormal bias correction);
- the intervals come from the running sums of the model-space steps, which a level is its
  anchor moved by. Where the model is calibrated (``forecasting/calibration.py``) they are
  conformal intervals of the running sums themselves: the model's own rolling-origin errors,
  summed over the steps, give a quantile per step (``Forecaster.running_sums``), so the level
  intervals are calibrated on the quantity they describe and hold at their level as well as the
  model-space ones, whatever the dependence between the steps' errors. The inverse transforms
  are monotone, so each bound maps through them exactly; at step 1 the level interval is the
  model-space interval mapped. A model without calibration (too little data) gets them by
  simulation: its sample paths (``Forecaster.sample_paths``) are cumulated and inverted, and
  each bound is the matching quantile of the simulated levels.

``none`` is its own inverse: level space is model space and the model's intervals are used as
they are.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from pefm.data.frequency import Frequency
from pefm.data.transforms import TRANSFORMS
from pefm.forecasting.base import BaseForecaster

SIMULATIONS = 2000


def invert(anchor: float, steps: np.ndarray, transform: str, freq: Frequency) -> np.ndarray:
    """Levels after each model-space step (last axis) from the level ``anchor``, the inverse of
    ``apply_transform``: cumulative along the steps."""
    steps = np.asarray(steps, dtype="float64")
    if transform == "none":
        return steps.copy()
    return from_running_sums(anchor, np.cumsum(steps, axis=-1), transform, freq)


def from_running_sums(anchor: float, sums: np.ndarray, transform: str, freq: Frequency) -> np.ndarray:
    """The levels that model-space steps summing to ``sums`` lead to from ``anchor`` (a
    transform other than ``none``; monotone in ``sums``)."""
    if transform == "diff":
        return anchor + sums
    if transform == "log_diff_ann":
        return anchor * np.exp(sums / (100.0 * freq.periods_per_year))
    if transform == "log_return":
        return anchor * np.exp(sums / 100.0)
    raise ValueError(f"transform {transform!r} has no inverse")


def anchor_at(panel: pd.DataFrame, series_id: str, cutoff: pd.Timestamp) -> float:
    """The level of ``series_id`` at ``cutoff`` (where a model fitted on ``panel`` stopped), from
    the panel's last stored level (``attrs["anchors"]``) and the model-space steps after ``cutoff``."""
    transform = panel.attrs["transforms"][series_id]
    values = panel[series_id].dropna()
    if transform == "none":
        return float(values.loc[:cutoff].iloc[-1])
    later = float(values[values.index > cutoff].sum())
    freq = Frequency(panel.attrs["frequencies"][series_id])
    return float(invert(panel.attrs["anchors"][series_id], np.array([-later]), transform, freq)[-1])


def rebased_anchor(
    panel: pd.DataFrame,
    merged: pd.DataFrame,
    series_id: str,
    dates: pd.DatetimeIndex,
    stored_levels: Callable[[], pd.Series],
) -> float:
    """The last level of ``series_id`` in ``merged``: ``panel`` with its model-space values at
    ``dates`` (a what-if history, consecutive periods) replaced or added. Every stored change
    outside the history is kept, so the stored anchor moves by the history's sum less the stored
    change over the periods it covers. That change is the sum of their stored values unless a
    period there has none: across a missing period the change is NaN (the step after it spans
    several periods), and the history, which leaves no period out, supplies it. Then the change
    is read from the stored levels (``stored_levels()``, the series' values as its panel was read;
    asked only then): from the last one before the history to the last one it covers."""
    transform = panel.attrs["transforms"][series_id]
    if transform == "none":
        return float(merged[series_id].dropna().iloc[-1])
    old = panel[series_id]
    covered = dates[dates <= old.last_valid_index()]  # the newest stored step is never NaN (keep_newest)
    replaced = old.reindex(covered)
    freq = Frequency(panel.attrs["frequencies"][series_id])
    if replaced.notna().all():
        stored = float(replaced.sum())
    else:
        levels = stored_levels().dropna()
        before, through = levels[levels.index < dates[0]], levels[levels.index <= covered[-1]]
        # the transform of the two levels: the one step that spans the gap
        stored = float(TRANSFORMS[transform](pd.Series([before.iloc[-1], through.iloc[-1]]), freq).iloc[0])
    delta = float(merged.loc[dates, series_id].sum()) - stored
    return float(from_running_sums(panel.attrs["anchors"][series_id], np.array([delta]), transform, freq)[-1])


def level_forecast(
    member: BaseForecaster,
    forecast: pd.DataFrame,
    series_id: str,
    anchor: float,
    transform: str,
    freq: Frequency,
    levels: Sequence[int],
    *,
    simulations: int = SIMULATIONS,
) -> pd.DataFrame:
    """``forecast`` (one series' model-space rows, as ``predict`` makes them) in level space.
    ``member`` is the fitted model that made it (``model.for_series(series_id)``), conditioned on
    the data that end at ``anchor``; its calibrated running sums give the intervals, or without
    calibration its simulated paths (seeded by the series id: the same request gets the same
    answer)."""
    out = forecast.copy()
    if transform == "none":
        return out
    h = len(forecast)
    out["mean"] = invert(anchor, forecast["mean"].to_numpy(), transform, freq)
    row = member.series_ids_.index(series_id) if member.multivariate else 0
    sums = member.running_sums(h, levels)
    if sums is None:
        paths = member.sample_paths(h, simulations, seed=zlib.crc32(series_id.encode()))
        simulated = invert(anchor, paths[row], transform, freq)  # (simulations, h)
        bounds = {lv: np.quantile(simulated, [0.5 - lv / 200, 0.5 + lv / 200], axis=0) for lv in levels}
    else:
        bounds = {lv: [from_running_sums(anchor, b[:, row], transform, freq) for b in sums[1][lv]] for lv in levels}
    for level in levels:
        lo, hi = bounds[level]
        out[f"lo-{level}"], out[f"hi-{level}"] = np.minimum(lo, out["mean"]), np.maximum(hi, out["mean"])
    return out
