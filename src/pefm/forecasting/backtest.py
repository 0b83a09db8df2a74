"""Rolling-origin backtests (time-series cross-validation).

At each cutoff the model sees only the data known at that cutoff (``as_of`` loader: the storage
layer's vintages; default: the data up to the cutoff), forecasts ``h`` steps, and is scored
against the latest values. Rows carry ``cutoff``, as in statsforecast's ``cross_validation``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pefm.forecasting import metrics
from pefm.forecasting.base import DEFAULT_LEVELS, BaseForecaster, ForecastInputError

AsOfLoader = Callable[[pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class BacktestSpec:
    """Where the origins fall and how the model is refitted.

    The last ``windows`` origins, ``step`` periods apart, each followed by ``h`` known values.
    ``window="expanding"`` trains on everything up to the cutoff, ``"sliding"`` on the last
    ``train_size`` points. ``refit_every=k`` re-estimates parameters at every k-th origin and in
    between only conditions the model on the newer data (``Forecaster.update``).
    """

    h: int = 1
    windows: int = 40
    step: int = 1
    window: str = "expanding"
    train_size: int | None = None
    refit_every: int = 1
    levels: tuple[int, ...] = DEFAULT_LEVELS

    def __post_init__(self) -> None:
        if self.h < 1 or self.windows < 1 or self.step < 1 or self.refit_every < 1:
            raise ForecastInputError("h, windows, step and refit_every must be positive")
        if self.window not in ("expanding", "sliding"):
            raise ForecastInputError(f"window must be expanding or sliding, not {self.window!r}")
        if self.window == "sliding" and not self.train_size:
            raise ForecastInputError("a sliding window needs train_size")

    @classmethod
    def from_dict(cls, data: dict) -> BacktestSpec:
        """The spec a registry version stored with its backtest (``asdict`` of one; JSON made the
        levels a list)."""
        return cls(**{**data, "levels": tuple(data.get("levels", DEFAULT_LEVELS))})


def cutoffs(index: pd.DatetimeIndex, spec: BacktestSpec) -> pd.DatetimeIndex:
    """The backtest origins: the last ``windows`` positions, ``step`` apart, leaving ``h`` after."""
    last = len(index) - spec.h - 1
    positions = [last - i * spec.step for i in range(spec.windows)][::-1]
    if positions[0] < 1:
        raise ForecastInputError(
            f"{len(index)} points cannot hold {spec.windows} windows of step {spec.step} and h={spec.h}"
        )
    return index[positions]


def backtest(
    model: BaseForecaster,
    data: pd.Series | pd.DataFrame,
    spec: BacktestSpec,
    *,
    as_of: AsOfLoader | None = None,
    label: str | None = None,
    on_window: Callable[[pd.Timestamp], None] | None = None,
) -> pd.DataFrame:
    """Backtest ``model`` (used as a template: it is cloned, never mutated) on ``data``.

    ``data`` holds the latest values (the truth a forecast is scored against); a univariate
    model on a frame is run per column. Returns one row per (series, cutoff, step):
    ``model`` (``label``, default the model's name), ``series_id, cutoff, ds, y, mean, lo-80, ...``.
    """
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    groups = [list(frame.columns)] if model.multivariate else [[c] for c in frame.columns]
    # each series' origins on its own dates: series of one panel may end at different times
    origins = {",".join(map(str, cols)): list(cutoffs(frame[cols].dropna(how="all").index, spec)) for cols in groups}
    fitted: dict[str, BaseForecaster] = {}
    rows = []
    for cutoff in sorted(set().union(*origins.values())):
        known = as_of(cutoff) if as_of is not None else frame
        known = known.loc[:cutoff]
        for columns in groups:
            key = ",".join(map(str, columns))
            if cutoff not in origins[key]:
                continue
            refit = origins[key].index(cutoff) % spec.refit_every == 0
            train = known[columns].dropna()
            if spec.window == "sliding":
                train = train.iloc[-spec.train_size :]
            train.attrs = dict(frame.attrs)
            if refit or key not in fitted:
                fitted[key] = model.clone().fit(train if model.multivariate else train[columns[0]])
            else:
                fitted[key].update(train if model.multivariate else train[columns[0]])
            rows.append(fitted[key].predict(spec.h, spec.levels).assign(cutoff=cutoff))
        if on_window:
            on_window(cutoff)
    out = pd.concat(rows, ignore_index=True)
    out["y"] = _actuals(frame, out)
    out.insert(0, "model", label or model.name)
    first = ["model", "series_id", "cutoff", "ds", "y", "mean"]
    return out[first + [c for c in out.columns if c not in first]]


def _actuals(frame: pd.DataFrame, forecasts: pd.DataFrame) -> np.ndarray:
    """The value each forecast row is scored against: the k-th observation of its series after
    its cutoff, k being the row's step. Matching by position rather than by date keeps market
    series honest: the step after a Friday is Monday's close, and after a holiday the next
    session's, whatever date the calendar offset named."""
    actual = np.full(len(forecasts), np.nan)
    step = forecasts.groupby(["series_id", "cutoff"]).cumcount().to_numpy()
    for series_id, rows in forecasts.groupby("series_id").indices.items():
        history = frame[series_id].dropna()
        start = history.index.searchsorted(forecasts["cutoff"].to_numpy()[rows], side="right")
        position = start + step[rows]
        inside = position < len(history)
        actual[rows[inside]] = history.to_numpy()[position[inside]]
    return actual


def score(
    results: pd.DataFrame,
    data: pd.Series | pd.DataFrame,
    *,
    returns: set[str] | frozenset[str] = frozenset(),
    cost: float = 0.0,
) -> pd.DataFrame:
    """Metrics per (model, series) of a backtest: RMSE, MAE, MASE, sMAPE (where the series stays
    away from zero), coverage and Winkler per level, directional accuracy; and for the series
    named in ``returns``, the annualized Sharpe of the sign strategy (``cost`` per unit of
    turnover) next to buy-and-hold."""
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    levels = sorted(int(c[3:]) for c in results.columns if c.startswith("lo-"))
    out = []
    for (model, series_id), group in results.dropna(subset=["y"]).groupby(["model", "series_id"]):
        group = group.sort_values(["cutoff", "ds"])
        history = frame[series_id].dropna()
        train = history.loc[: group["cutoff"].min()].to_numpy()
        freq = frame.attrs.get("frequencies", {}).get(series_id) or frame.attrs.get("frequency")
        row = {"model": model, "series_id": series_id, "n": len(group)}
        # MASE scaled by the in-sample one-step naive error (m=1: the series are non-seasonal)
        row.update(metrics.point_metrics(group["y"], group["mean"], train, season=1))
        bounds = {lv: (group[f"lo-{lv}"], group[f"hi-{lv}"]) for lv in levels}
        row.update(metrics.interval_metrics(group["y"], bounds))
        previous = history.reindex(group["cutoff"]).to_numpy()
        row["directional_accuracy"] = metrics.directional_accuracy(group["y"], group["mean"], previous)
        if series_id in returns:
            one_step = group.drop_duplicates("cutoff", keep="first")
            periods = _periods_per_year(freq)
            row["sharpe"] = metrics.sign_strategy_sharpe(
                one_step["y"], one_step["mean"], cost=cost, periods_per_year=periods
            )
            row["sharpe_buy_and_hold"] = metrics.buy_and_hold_sharpe(one_step["y"], periods_per_year=periods)
        out.append(row)
    return pd.DataFrame(out)


def _periods_per_year(freq) -> int:
    from pefm.data.frequency import Frequency

    if isinstance(freq, Frequency):
        return freq.periods_per_year
    return 252


def relative_rmse(scores: pd.DataFrame, baseline: str = "naive") -> pd.DataFrame:
    """RMSE of each model divided by the baseline's, per series (rows) and model (columns)."""
    table = scores.pivot(index="series_id", columns="model", values="rmse")
    if baseline not in table.columns:
        raise ValueError(f"the scores hold no {baseline!r} model to compare with")
    return table.div(table[baseline], axis=0)


def median_ratio(ratios: pd.DataFrame) -> pd.Series:
    """Median over series of each model's RMSE ratio."""
    return ratios.median(axis=0).sort_values()
