"""Rolling-origin backtests (time-series cross-validation).

At each cutoff the model sees only the data known at that cutoff (``as_of`` loader: the storage
layer's vintages; default: the data up to the cutoff), forecasts ``h`` steps, and is scored
against the latest values. Rows carry ``cutoff``, as in statsforecast's ``cross_validation``.

Scoring by date. Step k of a window is the k-th row of the model's forecast path: its ``ds`` lies
k periods after the last point the model was trained on, which is the cutoff itself only when the
data known at the cutoff reach it. With a publication lag (data known at a cutoff ending one or
two periods before it) or a panel row dropped for a missing value, the path starts earlier, and
step 1 may be a nowcast of a period at or before the cutoff that was not yet published. Each row
is scored against the latest value at its own ``ds``; for business-daily (market) series, whose
calendar offset cannot know the holidays, step k is the k-th session counted from the window's
first ``ds`` (the first observation on or after it, then the next ones): the step after a Friday
is Monday's close, or Tuesday's when Monday is a holiday.

Metric names (``score``, the registry's ``backtest["metrics"]``). Every metric comes pooled over
all the steps under its plain name (``rmse``, ``mae``, ``mase``, ``smape``, ``coverage-80``,
``winkler-80``, ``pinball``, ``directional_accuracy``, ``n``) and per step under the same name with
``@h<k>`` (``rmse@h1`` .. ``rmse@h8``, ``coverage-95@h4``, ``n@h2``), for every step, h=1 included.
Pooled means over every scored (cutoff, step) row: when every step has the same windows (the usual
case) it is the mean of the per-step values for every metric but RMSE, whose pooled value is the
root of the mean per-step squared error; for h=1 both names hold the same number. MASE divides by
the same scale at every step: the in-sample one-step naive MAE of the series up to its first
cutoff (so ``mase@h8`` is comparable with ``mase@h1``, not with an 8-step naive). ``pinball`` is
the mean quantile loss over the quantiles the interval bounds stand for (2.5%, 10%, 90%, 97.5%
for 80% and 95% intervals). ``sharpe`` and ``sharpe_buy_and_hold`` (return series only) trade the
one-step forecasts and carry no suffix. Against the naive forecast (each window's last known value,
at every step, on the same rows): ``rmse_ratio_naive`` (RMSE over the naive's; pooled and per
step) and, per step only, ``dm_p_naive@h<k>``, the two-sided Diebold-Mariano p-value of equal
squared-error loss (HLN-corrected, k - 1 Newey-West lags: the windows' k-step errors overlap).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pefm.forecasting import metrics
from pefm.forecasting.base import DEFAULT_LEVELS, BaseForecaster, ForecastInputError
from pefm.forecasting.per_series import series_attrs

AsOfLoader = Callable[[pd.Timestamp], pd.DataFrame]
DEFAULT_HORIZON = 8
"""The steps every backtest of ``make up``, ``pefm train``/``backtest`` and retraining scores."""


@dataclass(frozen=True)
class BacktestSpec:
    """Where the origins fall and how the model is refitted.

    The last ``windows`` origins, ``step`` periods apart, each followed by ``h`` known values.
    ``h`` defaults to 1 here; the commands and jobs pass ``DEFAULT_HORIZON``.
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
            # a univariate model sees its own series' frequency and calendar, not its group's
            train.attrs = dict(frame.attrs) if model.multivariate else series_attrs(frame, columns[0])
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
    """The value each forecast row is scored against (NaN where none is known yet): the series'
    value at the row's ``ds``; for a business-daily series, the k-th observation on or after the
    first ``ds`` of its window, k being the row's step (sessions, whatever date the calendar offset
    named for a holiday)."""
    actual = np.full(len(forecasts), np.nan)
    step = steps(forecasts, ["series_id", "cutoff"]).to_numpy() - 1
    first = forecasts.groupby(["series_id", "cutoff"])["ds"].transform("min").to_numpy()
    ds = forecasts["ds"].to_numpy()
    for series_id, rows in forecasts.groupby("series_id").indices.items():
        history = frame[series_id].dropna()
        if _sessions(frame, series_id):
            position = history.index.searchsorted(first[rows], side="left") + step[rows]
            inside = position < len(history)
        else:
            position = history.index.searchsorted(ds[rows], side="left")
            inside = position < len(history)
            inside[inside] = history.index[position[inside]] == ds[rows][inside]
        actual[rows[inside]] = history.to_numpy()[position[inside]]
    return actual


def steps(rows: pd.DataFrame, window: list[str]) -> pd.Series:
    """The 1-based step of each backtest row: its rank by ``ds`` within its window (the rows
    sharing the ``window`` columns, e.g. series and cutoff)."""
    return rows.groupby(window)["ds"].rank(method="first").astype(int)


def _frequency(frame: pd.DataFrame, series_id: str):
    return (frame.attrs.get("frequencies") or {}).get(series_id) or frame.attrs.get("frequency") or frame.index.freq


def _sessions(frame: pd.DataFrame, series_id: str) -> bool:
    """Whether the series counts market sessions (business daily), whose holidays no offset knows."""
    from pefm.data.frequency import Frequency

    freq = _frequency(frame, series_id)
    if isinstance(freq, pd.DateOffset):
        return isinstance(freq, pd.offsets.BusinessDay)
    return freq is not None and str(freq) == Frequency.BUSINESS_DAILY.value


def score(
    results: pd.DataFrame,
    data: pd.Series | pd.DataFrame,
    *,
    returns: set[str] | frozenset[str] = frozenset(),
    cost: float = 0.0,
) -> pd.DataFrame:
    """Metrics per (model, series) of a backtest, pooled over the steps and per step (names: see
    the module docstring): RMSE, MAE, MASE, sMAPE (where the series stays away from zero),
    coverage and Winkler per level, pinball loss, directional accuracy; and for the series named
    in ``returns``, the annualized Sharpe of the sign strategy on the one-step forecasts (``cost``
    per unit of turnover) next to buy-and-hold."""
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    levels = sorted(int(c[3:]) for c in results.columns if c.startswith("lo-"))
    window = ["model", "series_id", "cutoff"]
    results = results.assign(step=steps(results, window), first=results.groupby(window)["ds"].transform("min"))
    out = []
    for (model, series_id), group in results.dropna(subset=["y"]).groupby(["model", "series_id"]):
        group = group.sort_values(["cutoff", "ds"])
        history = frame[series_id].dropna()
        train = history.loc[: group["cutoff"].min()].to_numpy()
        # the last value before each window's path: the level the forecast moves away from
        before = history.index.searchsorted(group["first"].to_numpy(), side="left") - 1
        group = group.assign(previous=np.where(before >= 0, history.to_numpy()[np.maximum(before, 0)], np.nan))
        row = {"model": model, "series_id": series_id, **_metrics(group, train, levels)}
        one_step = group[group["step"] == 1]
        if series_id in returns and len(one_step) >= 2:  # a Sharpe ratio needs two returns at least
            periods = _periods_per_year(_frequency(frame, series_id))
            row["sharpe"] = metrics.sign_strategy_sharpe(
                one_step["y"], one_step["mean"], cost=cost, periods_per_year=periods
            )
            row["sharpe_buy_and_hold"] = metrics.buy_and_hold_sharpe(one_step["y"], periods_per_year=periods)
        for step, part in group.groupby("step"):
            row.update({f"{name}@h{step}": value for name, value in _metrics(part, train, levels).items()})
            moved = part[part["previous"].notna()]
            if len(moved) > step:
                _, row[f"dm_p_naive@h{step}"] = metrics.diebold_mariano(
                    moved["y"], moved["mean"], moved["previous"], step
                )
        out.append(row)
    return pd.DataFrame(out)


def _metrics(rows: pd.DataFrame, train: np.ndarray, levels: list[int]) -> dict[str, float]:
    """The point, interval and direction metrics of some scored rows (``y``, ``mean``, bounds,
    ``previous``)."""
    out: dict[str, float] = {"n": len(rows)}
    # MASE scaled by the in-sample one-step naive error (m=1: the series are non-seasonal)
    out.update(metrics.point_metrics(rows["y"], rows["mean"], train, season=1))
    out.update(metrics.interval_metrics(rows["y"], {lv: (rows[f"lo-{lv}"], rows[f"hi-{lv}"]) for lv in levels}))
    moved = rows[rows["previous"].notna()]
    if len(moved):
        out["directional_accuracy"] = metrics.directional_accuracy(moved["y"], moved["mean"], moved["previous"])
        naive = metrics.rmse(moved["y"], moved["previous"])
        if naive > 0:
            out["rmse_ratio_naive"] = metrics.rmse(moved["y"], moved["mean"]) / naive
    return out


def _periods_per_year(freq) -> int:
    from pefm.data.frequency import Frequency

    if isinstance(freq, str) and freq in set(Frequency):
        return Frequency(freq).periods_per_year
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
