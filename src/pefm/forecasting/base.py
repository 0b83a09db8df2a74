"""The Forecaster contract and the base class every model builds on.

A forecaster is configured by its constructor arguments (``get_params``), learns from
``fit(y)``, keeps what it learned in attributes ending in ``_``, and answers
``predict(h, levels=(80, 95))`` with a frame of columns
``series_id, ds, mean, lo-80, hi-80, lo-95, hi-95`` (one row per series and step), the
intervals nested around the mean. ``fit`` also calibrates the intervals on the model's own
rolling-origin errors, per series and step (``forecasting/calibration.py``): a model's
``_predict`` gives its own intervals, ``predict`` the calibrated ones. ``to_bytes()`` /
``from_bytes()`` round-trip a fitted model exactly; the registry checks the bytes' sha256 before
``from_bytes`` ever sees them.

Univariate models take a Series; models with ``multivariate = True`` take a DataFrame, one
column per series, on one shared index.
"""

from __future__ import annotations

import inspect
import io
import pickle
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from pefm.data.frequency import Frequency
from pefm.forecasting.calibration import calibrate, rolling_forecasts, scale_of

DEFAULT_LEVELS = (80, 95)


class ForecastInputError(ValueError):
    """The data or arguments given to a forecaster cannot be used; the message says why, and
    ``field`` names the request's field at fault where the raiser knows it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@runtime_checkable
class Forecaster(Protocol):
    name: ClassVar[str]
    multivariate: ClassVar[bool]

    def fit(self, y: pd.Series | pd.DataFrame, X: pd.DataFrame | None = None) -> Self: ...

    def predict(self, h: int, levels: Sequence[int] = DEFAULT_LEVELS) -> pd.DataFrame: ...

    def get_params(self) -> dict[str, Any]: ...

    def to_bytes(self) -> bytes: ...


Bounds = dict[int, tuple[np.ndarray, np.ndarray]]


class BaseForecaster:
    """Validation, future timestamps, the output frame and serialization for every model.

    Subclasses set ``name`` and ``min_length`` and implement ``_fit(values)`` and
    ``_predict(h, levels) -> (mean, {level: (lo, hi)})`` on numpy arrays (for multivariate
    models: 2-D, one column per series).
    """

    name: ClassVar[str] = "base"
    multivariate: ClassVar[bool] = False
    handles_gaps: ClassVar[bool] = False
    """Multivariate models that fit each series on its own span (no common dates needed)."""
    min_length: ClassVar[int] = 2
    max_horizon: ClassVar[int] = 10**6
    """The most steps one forecast can reach (a direct multi-horizon model's output width)."""
    max_season: ClassVar[int] = 10**6
    """The longest seasonal cycle (periods) a seasonal model takes."""
    spread_can_fall: ClassVar[bool] = False
    """Whether a step's forecast spread may narrow as the step grows (a conditional variance
    reverting to its mean, GARCH's). Otherwise calibrated half-widths never narrow with the step:
    the error variance of a linear process's optimal forecast, and the unconditional one of any
    stationary process's, cannot fall as the horizon grows."""

    # -- parameters ------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments and their current values."""
        params = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in params if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
        return {name: getattr(self, name) for name in names}

    def check_params(self) -> None:
        """Refuse parameter values the model cannot use, naming the parameter (ForecastInputError).
        ``make_model`` calls it, so a bad value is refused before any data are read; ``fit`` too.
        Models whose parameters have limits override it."""

    def clone(self) -> Self:
        """An unfitted model with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / predict -----------------------------------------------------------------------
    def fit(self, y: pd.Series | pd.DataFrame, X: pd.DataFrame | None = None) -> Self:
        """Learn from ``y``; raises ForecastInputError for too short a series, NaN, bad index."""
        if X is not None:
            raise ForecastInputError(f"{self.name} does not use exogenous regressors (X)")
        self.check_params()
        frame = self._as_frame(y)
        self.series_ids_ = [str(c) for c in frame.columns]
        self.freq_ = _frequency_of(y)
        self.calendar_ = y.attrs.get("calendar", "")
        self.cutoff_ = frame.index[-1]
        values = frame.to_numpy(dtype="float64")
        values = values if self.multivariate else values[:, 0]
        self._fit(values)
        self.calibration_ = calibrate(self, values)
        return self

    def predict(self, h: int, levels: Sequence[int] = DEFAULT_LEVELS) -> pd.DataFrame:
        """Forecast ``h`` steps past the end of the data with intervals at ``levels`` (percent)."""
        if not hasattr(self, "cutoff_"):
            raise ForecastInputError(f"{self.name} is not fitted: call fit() first")
        if isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1:
            raise ForecastInputError(f"h must be a positive integer, got {h!r}")
        levels = _check_levels(levels)
        mean, bounds = self._calibrated(int(h), levels)
        ds = future_index(self.cutoff_, self.freq_, int(h), getattr(self, "calendar_", ""))  # older pickles: none
        parts = []
        for j, series_id in enumerate(self.series_ids_):
            part = {"series_id": series_id, "ds": ds, "mean": mean[:, j]}
            for level in levels:
                lo, hi = (np.asarray(b, dtype="float64").reshape(h, -1)[:, j] for b in bounds[level])
                part[f"lo-{level}"], part[f"hi-{level}"] = lo, hi
            parts.append(pd.DataFrame(part))
        return pd.concat(parts, ignore_index=True)

    def _calibrated(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        """The mean, shape ``(h, series)``, and the calibrated bounds (the model's own where it
        has no calibration)."""
        calibration = getattr(self, "calibration_", None)
        own = levels if calibration is None else tuple(sorted({*levels, 80}))  # 80%: the model's scale
        mean, bounds = self._predict(h, own)
        mean = np.asarray(mean, dtype="float64").reshape(h, -1)
        if calibration is not None:
            bounds = calibration.widen(mean, bounds, levels, monotone=not self.spread_can_fall)
        return mean, bounds

    def running_sums(self, h: int, levels: Sequence[int]) -> tuple[np.ndarray, Bounds] | None:
        """The forecast of the running sums of the next ``h`` steps, shape ``(h, series)``, with
        bounds calibrated on the running sums' own rolling-origin errors: what a level (its
        anchor moved by the sum of the steps) is made of. None without such a calibration."""
        calibration = getattr(self, "calibration_", None)
        if calibration is None or calibration.running is None:
            return None
        mean, bounds = self._predict(h, (80,))
        mean = np.asarray(mean, dtype="float64").reshape(h, -1)
        return calibration.widen_running(mean, bounds, _check_levels(levels))

    def for_series(self, series_id: str) -> BaseForecaster:
        """The fitted model that forecasts ``series_id``: this one for a single or multivariate
        model; combinations of models (per series, bundles of groups) hand out their member."""
        if series_id not in getattr(self, "series_ids_", ()):
            raise ForecastInputError(f"this model was not fitted on {series_id!r}")
        return self

    def sample_paths(self, h: int, n: int, seed: int = 0) -> np.ndarray:
        """``n`` simulated future paths of ``h`` steps in model space, shape ``(series, n, h)`` in
        ``series_ids_`` order: what level-space intervals are made from.

        Default (models that cannot simulate themselves): a Gaussian copula. Each step's marginal is
        the model's calibrated forecast distribution (its quantiles at levels 50..99, interpolated),
        so the paths reproduce the model's intervals step by step. The dependence between steps is
        that of the linear process ``e_k = sum_j psi_j * shock_{k-j}``: over the calibrated steps
        with the impulse responses the model's own rolling-origin errors showed
        (``Calibration.impulse``), past them (or without calibration) with the model's own
        (``_impulse``). Models that do not know theirs get ``psi`` read off the growth of their
        interval width (``psi_j^2 = (s_{j+1}^2 - s_j^2) / s_1^2``, taken non-negative): exact
        for a random walk and for independent steps, conservative for oscillating dynamics."""
        from scipy.stats import norm

        if not hasattr(self, "cutoff_"):
            raise ForecastInputError(f"{self.name} is not fitted: call fit() first")
        mean, bounds = self._calibrated(h, _PATH_LEVELS)
        rng = np.random.default_rng(seed)
        z_grid = norm.ppf(
            np.concatenate([0.5 - np.array(_PATH_LEVELS[::-1]) / 200, [0.5], 0.5 + np.array(_PATH_LEVELS) / 200])
        )
        out = np.empty((len(self.series_ids_), n, h))
        for i in range(len(self.series_ids_)):
            quantiles = _quantile_grid(mean[:, i], bounds, i)  # (h, grid)
            psi = self._impulse(h)
            if psi is None:
                scale = np.maximum(quantiles[:, -4] - quantiles[:, 3], 1e-12)  # the 80% interval's width
                psi = np.sqrt(np.maximum(np.diff(scale**2, prepend=0.0), 0.0)) / scale[0]
            observed = self.calibration_.impulse(i) if getattr(self, "calibration_", None) is not None else None
            if observed is not None:  # the steps calibrated: the dependence the model's errors showed
                psi = psi.copy()
                psi[: len(observed)] = observed[:h]
            shocks = rng.standard_normal((n, max(h, PATH_HORIZON)))[:, :h]  # the same draws at any h
            # e_k = sum_{j<k} psi_j * shock_{k-j}, standardized: each step N(0, 1), correlated
            mixed = np.stack([shocks[:, : k + 1] @ psi[: k + 1][::-1] for k in range(h)], axis=1)
            z = mixed / np.sqrt(np.maximum(np.cumsum(psi**2), 1e-24))
            for k in range(h):
                out[i, :, k] = _interp_extrapolated(z[:, k], z_grid, quantiles[k])
        return out

    def _calibrated_paths(self, paths: np.ndarray) -> np.ndarray:
        """Paths a model simulated from its own distribution, shape ``(series, n, h)``, mapped
        step by step onto its calibrated intervals: each draw's position between the model's own
        quantiles (levels 50..99) becomes the same position between the calibrated ones."""
        if getattr(self, "calibration_", None) is None:
            return paths
        h = paths.shape[2]
        mean, own = self._predict(h, _PATH_LEVELS)
        mean = np.asarray(mean, dtype="float64").reshape(h, -1)
        calibrated = self.calibration_.widen(mean, own, _PATH_LEVELS, monotone=not self.spread_can_fall)
        out = np.empty_like(paths)
        for i in range(paths.shape[0]):
            before, after = _quantile_grid(mean[:, i], own, i), _quantile_grid(mean[:, i], calibrated, i)
            for k in range(h):
                out[i, :, k] = _interp_extrapolated(paths[i, :, k], before[k], after[k])
        return out

    def _impulse(self, h: int) -> np.ndarray | None:
        """The impulse responses ``psi_0..psi_{h-1}`` (``psi_0 = 1``) of the model's forecast
        errors: how a shock at the first step carries into later ones. None when unknown."""
        return None

    def update(self, y: pd.Series | pd.DataFrame) -> Self:
        """Condition the fitted model on ``y`` (its training data, extended by newer points, or
        a what-if's history) without re-estimating anything: its state moves (the last value, a
        filter's states), its parameters and spread stay."""
        if not hasattr(self, "cutoff_"):
            raise ForecastInputError(f"{self.name} is not fitted: call fit() first")
        frame = self._as_frame(y)
        if self.multivariate and list(map(str, frame.columns)) != list(self.series_ids_):
            frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
            if set(frame.columns) != set(self.series_ids_):
                raise ForecastInputError(f"{self.name} was fitted on {self.series_ids_}, not {list(frame.columns)}")
            frame = frame[self.series_ids_]  # by name: in another order the columns were read as each other
        self.cutoff_ = frame.index[-1]
        values = frame.to_numpy(dtype="float64")
        self._update(values if self.multivariate else values[:, 0])
        return self

    def _update(self, values: np.ndarray) -> None:
        raise NotImplementedError

    def _fit_values(self, values: np.ndarray, freq: Frequency | pd.DateOffset) -> None:
        """Fit on a bare array: how a combination fits its members on its own validated data."""
        self.check_params()
        self._check_length(len(values))
        self.freq_ = freq
        self._fit(values)

    def _fit(self, values: np.ndarray) -> None:
        raise NotImplementedError

    def _calibration_forecasts(
        self, values: np.ndarray, origins: np.ndarray, steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rolling-origin forecasts (mean, scale) from ``origins`` that calibration scores:
        a probe fitted on the data before the first origin, held fixed after it. No calibration
        target is seen by the probe's estimation: the split is by time."""
        return rolling_forecasts(self, values, self.freq_, origins, steps)

    def _origin_forecasts(self, values: np.ndarray, origins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The mean and scale (80% half-width over z_0.90) of the ``steps``-step forecast made
        from each origin ``t`` (the first ``t`` points of ``values`` known), parameters held
        fixed; shapes ``(origins, steps, series)``. The first origin is the length the model was
        fitted on. Default: condition on each origin's data and predict (this conditions the
        model: calibration runs it on a throwaway probe); models with a closed form override it."""
        means, scales = [], []
        for i, t in enumerate(origins):
            if i:
                self._update(values[:t])
            mean, bounds = self._predict(steps, (80,))
            mean = np.asarray(mean, dtype="float64").reshape(steps, -1)
            means.append(mean)
            scales.append(scale_of(bounds[80], mean.shape))
        return np.stack(means), np.stack(scales)

    def _constant_scale(self, origins: np.ndarray, steps: int) -> np.ndarray:
        """The forecast scale of a model whose uncertainty does not depend on the origin,
        repeated for each origin: what closed-form ``_origin_forecasts`` return."""
        mean, bounds = self._predict(steps, (80,))
        scale = scale_of(bounds[80], np.asarray(mean).reshape(steps, -1).shape)
        return np.broadcast_to(scale, (len(origins), *scale.shape))

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        raise NotImplementedError

    def _as_frame(self, y: pd.Series | pd.DataFrame) -> pd.DataFrame:
        if isinstance(y, pd.DataFrame):
            if not self.multivariate and y.shape[1] != 1:
                raise ForecastInputError(f"{self.name} is univariate: pass one series, not {y.shape[1]}")
            frame = y
        elif isinstance(y, pd.Series):
            frame = y.to_frame(name=y.name if y.name is not None else "y")
        else:
            raise ForecastInputError(f"y must be a pandas Series or DataFrame, not {type(y).__name__}")
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise ForecastInputError("y must have a DatetimeIndex")
        if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
            raise ForecastInputError("y's index must be increasing without duplicates")
        self._check_length(len(frame))
        values = frame.to_numpy(dtype="float64")
        if not np.isfinite(values).all():
            bad = frame.index[~np.isfinite(values).all(axis=1)][0]
            raise ForecastInputError(f"y has a missing or infinite value at {bad:%Y-%m-%d}")
        return frame

    def _check_length(self, n: int) -> None:
        if n < self.min_length:
            raise ForecastInputError(
                f"series too short for {self.name}: needs at least {self.min_length} points, got {n}"
            )

    # -- serialization ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The fitted model as bytes (pickle protocol 5); load only bytes whose hash you trust."""
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=5)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BaseForecaster:
        """The model that ``to_bytes`` wrote."""
        model = pickle.loads(data)
        if not isinstance(model, cls):
            raise TypeError(f"bytes hold a {type(model).__name__}, not a {cls.__name__}")
        return model


PATH_HORIZON = 60
"""Sample paths are drawn this many steps long (or longer) and cut: a forecast's simulated steps
do not depend on how many steps were asked for."""
_PATH_LEVELS = (50, 80, 90, 95, 99)  # Gaussian-type marginals are linear in z: a few points suffice


def _quantile_grid(mean: np.ndarray, bounds: Bounds, series: int) -> np.ndarray:
    """One series' forecast quantiles at the path levels, lowest first: shape ``(h, 11)``."""
    h = len(mean)
    lows = [np.asarray(bounds[lv][0], dtype="float64").reshape(h, -1)[:, series] for lv in _PATH_LEVELS[::-1]]
    highs = [np.asarray(bounds[lv][1], dtype="float64").reshape(h, -1)[:, series] for lv in _PATH_LEVELS]
    return np.column_stack([*lows, mean, *highs])


def _interp_extrapolated(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation through (xp, fp), extended linearly past both ends."""
    out = np.interp(x, xp, fp)
    low, high = x < xp[0], x > xp[-1]
    out[low] = fp[0] + (x[low] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    out[high] = fp[-1] + (x[high] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return out


def require_int(model: str, name: str, value: Any, low: int, high: int | None = None, *, none: bool = False) -> None:
    """Refuse ``value`` unless it is an integer in ``low..high`` (or None where ``none``)."""
    if none and value is None:
        return
    integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not integer or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        either = "None or " if none else ""
        raise ForecastInputError(f"{model}: {name} must be {either}an integer {span}, got {value!r}")


def require_number(model: str, name: str, value: Any, low: float, high: float = np.inf, *, open_low: bool) -> None:
    """Refuse ``value`` unless it is a finite number above ``low`` (or at it, unless ``open_low``)
    and below ``high``."""
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or not (value > low if open_low else value >= low) or value >= high:
        span = f"{'above' if open_low else 'at least'} {low:g}" + (f" and below {high:g}" if np.isfinite(high) else "")
        raise ForecastInputError(f"{model}: {name} must be a number {span}, got {value!r}")


def require_choice(model: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Refuse ``value`` unless it is one of ``allowed`` (a number for a number, a flag for a flag)."""
    plain = value.item() if isinstance(value, np.generic) else value  # numpy's int64(1) is a 1
    if not any(plain == a and type(plain) is type(a) for a in allowed):
        raise ForecastInputError(f"{model}: {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    out = set()
    for level in levels:
        valid = isinstance(level, int | float | np.integer) and not isinstance(level, bool)
        if not valid or level != int(level) or not 1 <= level <= 99:
            raise ForecastInputError(f"levels must be integers in 1..99, got {list(levels)!r}")
        out.add(int(level))
    if not out:
        raise ForecastInputError("levels must name at least one interval level")
    return tuple(sorted(out))


def _frequency_of(y: pd.Series | pd.DataFrame) -> Frequency | pd.DateOffset:
    """The series' Frequency (from storage) or, failing that, its pandas offset."""
    freq = y.attrs.get("frequency")
    if isinstance(freq, Frequency):
        return freq
    freqs = y.attrs.get("frequencies")
    if isinstance(freqs, dict) and len(set(freqs.values())) == 1:
        return next(iter(freqs.values()))
    index = y.index
    if index.freq is not None:
        return index.freq
    inferred = pd.infer_freq(index) if len(index) >= 3 else None
    if inferred is None:
        raise ForecastInputError("cannot tell y's frequency: set index.freq or attrs['frequency']")
    return pd.tseries.frequencies.to_offset(inferred)


def future_index(cutoff: pd.Timestamp, freq: Frequency | pd.DateOffset, h: int, calendar: str = "") -> pd.DatetimeIndex:
    """The ``h`` period starts after ``cutoff``: for a business-daily series with an exchange
    ``calendar``, its next ``h`` sessions (``pefm.data.calendars``)."""
    if calendar and freq is Frequency.BUSINESS_DAILY:
        from pefm.data.calendars import sessions_after

        return sessions_after(calendar, cutoff, h).rename("ds")
    offset = freq.offset if isinstance(freq, Frequency) else freq
    if isinstance(freq, Frequency) and freq is Frequency.WEEKLY:
        offset = pd.DateOffset(days=7)
    return pd.DatetimeIndex([cutoff + offset * (i + 1) for i in range(h)], name="ds")


def normal_bounds(mean: np.ndarray, sd: np.ndarray, levels: tuple[int, ...]) -> Bounds:
    """Gaussian intervals ``mean -/+ z * sd`` for each level."""
    from scipy.stats import norm

    out = {}
    for level in levels:
        z = norm.ppf(0.5 + level / 200)
        out[level] = (mean - z * sd, mean + z * sd)
    return out


def season_length(freq: Frequency | pd.DateOffset) -> int:
    """Periods in a seasonal cycle: 4 quarterly, 12 monthly, 5 business daily, 7 daily, 52 weekly.
    An offset by the first letter of its code, but business-anchored months, quarters and years by
    their kind (``BME``, ``BQE``, ``BYE``: their code starts with B, which is not business daily)."""
    if isinstance(freq, Frequency):
        code = freq.value
    elif isinstance(freq, pd.offsets.BusinessMonthBegin | pd.offsets.BusinessMonthEnd):
        code = "M"
    elif isinstance(freq, pd.offsets.BQuarterBegin | pd.offsets.BQuarterEnd):
        code = "Q"
    elif isinstance(freq, pd.offsets.BYearBegin | pd.offsets.BYearEnd):
        code = "A"
    else:
        code = freq.freqstr[0]
    return {"Q": 4, "M": 12, "B": 5, "D": 7, "W": 52}.get(code, 1)


def refuse_flat(name: str, values: np.ndarray) -> None:
    """ForecastInputError when ``values`` do not vary: a model estimated on their variation (AR,
    ARIMA) has nothing to estimate (statsmodels fails with NaN parameters)."""
    finite = values[np.isfinite(values)]
    if finite.size and np.ptp(finite) == 0:
        raise ForecastInputError(f"{name}: the data are constant ({finite[0]:g}): nothing to estimate")


def is_seasonal(values: np.ndarray, season: int) -> bool:
    """The M4 competition's seasonality test, on the first differences (so that a persistent
    level is not taken for a cycle): their autocorrelation at lag ``season`` exceeds its 90%
    limit ``1.645 * sqrt((1 + 2 * sum of the squared autocorrelations below it) / n)``. False for
    a season of 1 or fewer than three seasons of data."""
    values = np.diff(np.asarray(values, dtype="float64"))
    n = len(values)
    if season < 2 or n < 3 * season:
        return False
    centered = values - values.mean()
    denominator = float(centered @ centered)
    if denominator == 0:
        return False
    acf = np.array([centered[k:] @ centered[: n - k] for k in range(1, season + 1)]) / denominator
    limit = 1.645 * np.sqrt((1 + 2 * np.sum(acf[:-1] ** 2)) / n)
    return bool(abs(acf[-1]) > limit)
