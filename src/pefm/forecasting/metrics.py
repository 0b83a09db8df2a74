"""Forecast evaluation metrics: point, interval, direction, trading and forecast-comparison tests.

Every function takes array-likes (lists, numpy arrays, pandas Series), converts them to 1-D
float64 arrays and raises ``ValueError`` on empty input, NaN or infinite values, or arrays whose
lengths do not match. Scores are plain Python floats.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from statsmodels.tsa.stattools import diebold_mariano_test


def _arr(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _arrs(**named: ArrayLike) -> list[np.ndarray]:
    arrays = [_arr(x, name) for name, x in named.items()]
    lengths = {name: len(a) for name, a in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
    return arrays


def _bounds(y: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> list[np.ndarray]:
    y_, lo_, hi_ = _arrs(y=y, lo=lo, hi=hi)
    if np.any(lo_ > hi_):
        raise ValueError("interval lower bound exceeds upper bound")
    return [y_, lo_, hi_]


# --- point forecasts -------------------------------------------------------------------------


def rmse(y: ArrayLike, yhat: ArrayLike) -> float:
    """Root mean squared error, sqrt(mean((y - yhat)^2)), in the units of ``y``."""
    y_, f = _arrs(y=y, yhat=yhat)
    return float(np.sqrt(np.mean((y_ - f) ** 2)))


def mae(y: ArrayLike, yhat: ArrayLike) -> float:
    """Mean absolute error, mean(|y - yhat|), in the units of ``y``."""
    y_, f = _arrs(y=y, yhat=yhat)
    return float(np.mean(np.abs(y_ - f)))


def mase(y: ArrayLike, yhat: ArrayLike, y_train: ArrayLike, season: int = 1) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006).

    MAE of the forecast divided by the in-sample MAE of the seasonal naive forecast on
    ``y_train``: mean(|y_train[season:] - y_train[:-season]|). Below 1 means the forecast beats
    the in-sample seasonal naive. Raises ValueError if ``y_train`` has no more than ``season``
    points or the scale is 0 (a constant or exactly periodic training series).
    """
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    train = _arr(y_train, "y_train")
    if len(train) <= season:
        raise ValueError(f"y_train needs more than season={season} points, got {len(train)}")
    scale = float(np.mean(np.abs(train[season:] - train[:-season])))
    if scale == 0.0:
        raise ValueError("MASE scale is 0: the seasonal naive fits y_train exactly")
    return mae(y, yhat) / scale


def smape(y: ArrayLike, yhat: ArrayLike) -> float:
    """Symmetric MAPE in percent: 100 * mean(2|y - yhat| / (|y| + |yhat|)), between 0 and 200.

    A point where both ``y`` and ``yhat`` are 0 contributes 0 (a perfect forecast). Only
    meaningful for series that stay away from zero; see :func:`stays_away_from_zero`.
    """
    y_, f = _arrs(y=y, yhat=yhat)
    num = 2.0 * np.abs(y_ - f)
    den = np.abs(y_) + np.abs(f)
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * np.mean(terms))


def stays_away_from_zero(y: ArrayLike, min_abs_ratio: float = 0.1) -> bool:
    """True when sMAPE is meaningful for ``y``: every value has the same strict sign (no zeros,
    no sign change) and min(|y|) >= min_abs_ratio * mean(|y|)."""
    y_ = _arr(y, "y")
    if not (np.all(y_ > 0) or np.all(y_ < 0)):
        return False
    a = np.abs(y_)
    return bool(a.min() >= min_abs_ratio * a.mean())


# --- interval forecasts ----------------------------------------------------------------------


def coverage(y: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Fraction of ``y`` inside the closed interval [lo, hi], between 0 and 1."""
    y_, lo_, hi_ = _bounds(y, lo, hi)
    return float(np.mean((y_ >= lo_) & (y_ <= hi_)))


def winkler(y: ArrayLike, lo: ArrayLike, hi: ArrayLike, level: float) -> float:
    """Mean Winkler interval score for a central ``level``% interval (lower is better).

    With alpha = 1 - level/100 each point scores the width hi - lo, plus (2/alpha)(lo - y) when
    y < lo, plus (2/alpha)(y - hi) when y > hi.
    """
    return float(np.mean(interval_scores(y, lo, hi, level)))


def interval_scores(y: ArrayLike, lo: ArrayLike, hi: ArrayLike, level: float) -> np.ndarray:
    """The Winkler (interval) score of each point, whose mean is :func:`winkler`: a proper scoring
    rule, so intervals can be compared point by point (e.g. by :func:`loss_differential_test`)."""
    if not 0 < level < 100:
        raise ValueError(f"level must be in (0, 100), got {level}")
    y_, lo_, hi_ = _bounds(y, lo, hi)
    alpha = 1.0 - level / 100.0
    return (hi_ - lo_) + (2.0 / alpha) * (np.maximum(lo_ - y_, 0.0) + np.maximum(y_ - hi_, 0.0))


def pinball(y: ArrayLike, q: ArrayLike, quantile: float) -> float:
    """Mean pinball (quantile) loss of ``q`` as the ``quantile`` forecast of ``y`` (lower is better):
    mean(max(quantile * (y - q), (quantile - 1) * (y - q))), ``quantile`` in (0, 1).

    The lower bound of a central L% interval is the (1 - L/100)/2 quantile and the upper bound the
    1 - (1 - L/100)/2 one; the Winkler score of the interval is 2/alpha times the sum of the two
    bounds' pinball losses (alpha = 1 - L/100).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    y_, q_ = _arrs(y=y, q=q)
    diff = y_ - q_
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def interval_pinball(y: ArrayLike, bounds: Mapping[int, tuple[ArrayLike, ArrayLike]]) -> float:
    """Mean pinball loss over every quantile the interval bounds stand for (for each level L in
    ``bounds``: lo as the (1 - L/100)/2 quantile, hi as the 1 - (1 - L/100)/2 one), each quantile
    weighted alike."""
    if not bounds:
        raise ValueError("bounds is empty")
    losses = []
    for level, (lo, hi) in bounds.items():
        if not 0 < level < 100:
            raise ValueError(f"level must be in (0, 100), got {level}")
        _bounds(y, lo, hi)
        tail = (1.0 - level / 100.0) / 2.0
        losses += [pinball(y, lo, tail), pinball(y, hi, 1.0 - tail)]
    return float(np.mean(losses))


# --- direction -------------------------------------------------------------------------------


def directional_accuracy(y: ArrayLike, yhat: ArrayLike, y_prev: ArrayLike) -> float:
    """For level series: fraction of steps where sign(yhat - y_prev) == sign(y - y_prev).

    ``y_prev`` is the last observed level before each target (a scalar is used for every step).
    A forecast of no change counts as wrong when the actual moved, and vice versa.
    """
    y_, f = _arrs(y=y, yhat=yhat)
    prev = np.asarray(y_prev, dtype=np.float64)
    prev = _arr(np.full(len(y_), float(prev)) if prev.ndim == 0 else prev, "y_prev")
    if len(prev) != len(y_):
        raise ValueError(f"length mismatch: y has {len(y_)} points, y_prev has {len(prev)}")
    return float(np.mean(np.sign(f - prev) == np.sign(y_ - prev)))


# --- trading ---------------------------------------------------------------------------------


def strategy_returns(returns: ArrayLike, forecasts: ArrayLike, cost: float = 0.0) -> np.ndarray:
    """Per-period returns of the sign strategy, net of trading costs.

    position_t = sign(forecast_t) in {-1, 0, +1}, taken before return_t is realized, and
    strategy_t = position_t * return_t - cost * |position_t - position_{t-1}| with
    position_{-1} = 0, so entering the first position is charged too and a flip from -1 to +1
    costs twice. ``cost`` is in the units of ``returns`` (percent log-returns: 0.05 = 5 bp).
    """
    if not (np.isfinite(cost) and cost >= 0):
        raise ValueError(f"cost must be a finite non-negative number, got {cost}")
    r, f = _arrs(returns=returns, forecasts=forecasts)
    pos = np.sign(f)
    turnover = np.abs(np.diff(pos, prepend=0.0))
    return pos * r - cost * turnover


def sharpe_ratio(returns: ArrayLike, periods_per_year: int = 252) -> float:
    """Annualized Sharpe ratio with a zero risk-free rate: mean / std(ddof=1) * sqrt(periods_per_year).

    Returns 0.0 when all returns are identical (std 0), e.g. a strategy that never trades, rather
    than inf or NaN. Needs at least 2 returns.
    """
    r = _arr(returns, "returns")
    if len(r) < 2:
        raise ValueError("sharpe_ratio needs at least 2 returns")
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    sd = float(np.std(r, ddof=1))
    if np.ptp(r) == 0 or sd == 0.0:
        return 0.0
    return float(np.mean(r) / sd * np.sqrt(periods_per_year))


def sign_strategy_sharpe(
    returns: ArrayLike, forecasts: ArrayLike, cost: float = 0.0, periods_per_year: int = 252
) -> float:
    """Annualized Sharpe ratio of :func:`strategy_returns` (the sign strategy net of ``cost``)."""
    return sharpe_ratio(strategy_returns(returns, forecasts, cost), periods_per_year)


def buy_and_hold_sharpe(returns: ArrayLike, periods_per_year: int = 252) -> float:
    """Annualized Sharpe ratio of holding +1 throughout, i.e. of ``returns`` themselves.

    The single entry cost is negligible over an evaluation window and is ignored.
    """
    return sharpe_ratio(returns, periods_per_year)


# --- forecast comparison ---------------------------------------------------------------------


def diebold_mariano(
    y: ArrayLike, yhat_model: ArrayLike, yhat_benchmark: ArrayLike, h: int = 1, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Diebold-Mariano test of equal squared-error loss; returns (statistic, p-value).

    Uses ``statsmodels.tsa.stattools.diebold_mariano_test`` on the loss differential
    d_t = (y - yhat_model)^2 - (y - yhat_benchmark)^2 with h - 1 Newey-West (Bartlett) lags and
    the Harvey-Leybourne-Newbold (1997) small-sample correction, so the p-value comes from a
    Student t with n - 1 degrees of freedom. A positive statistic means the model has higher loss
    than the benchmark. ``alternative``: "two-sided", "greater" (the model's loss is higher) or
    "less". If the two forecasts have equal loss at every point the statistic is 0 and the
    p-value 1; a constant non-zero differential gives a statistic of +/-inf.
    """
    y_, a, b = _arrs(y=y, yhat_model=yhat_model, yhat_benchmark=yhat_benchmark)
    return loss_differential_test((y_ - a) ** 2, (y_ - b) ** 2, h, alternative)


def loss_differential_test(
    loss_model: ArrayLike, loss_benchmark: ArrayLike, h: int = 1, alternative: str = "two-sided"
) -> tuple[float, float]:
    """The Diebold-Mariano test (HLN-corrected, h - 1 Newey-West lags) of equal mean loss for any
    per-point losses, e.g. :func:`interval_scores`; returns (statistic, p-value) as
    :func:`diebold_mariano` does."""
    if h < 1:
        raise ValueError(f"h must be >= 1, got {h}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    a, b = _arrs(loss_model=loss_model, loss_benchmark=loss_benchmark)
    n = len(a)
    if n < 2 or n <= h:
        raise ValueError(f"a Diebold-Mariano test needs more than max(1, h={h}) points, got {n}")
    d = a - b
    if np.ptp(d) == 0:
        if d[0] == 0:
            return 0.0, 1.0
        statistic = float(np.copysign(np.inf, d[0]))
    else:
        # the losses stand in for the forecasts, with a criterion that returns them unchanged
        statistic = float(
            diebold_mariano_test(
                np.zeros(n), a, b, lags=h - 1, criterion=lambda _, loss: loss, harvey_adj=True, horizon=h
            ).statistic
        )
    return statistic, _p_value(statistic, alternative, lambda x: stats.t.sf(x, n - 1))


def sharpe_difference(
    returns_a: ArrayLike, returns_b: ArrayLike, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Test of equal Sharpe ratios of two return series over the same periods (Jobson & Korkie
    1981 with Memmel's 2003 correction); returns (z, p-value).

    With per-period Sharpe ratios SR_a, SR_b, their correlation rho and T periods, the variance
    of SR_a - SR_b is (2 - 2 rho + (SR_a^2 + SR_b^2 - 2 SR_a SR_b rho^2) / 2) / T. It assumes
    returns that are serially independent and jointly normal: for the sign strategies of two
    forecasts of the same series the correlation term removes most of the common noise, which is
    what makes the comparison far sharper than two separate Sharpe ratios. ``alternative``:
    "two-sided", "greater" (a's Sharpe is higher) or "less". A strategy that never trades has a
    Sharpe ratio of 0; identical series give (0, 1).
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    a, b = _arrs(returns_a=returns_a, returns_b=returns_b)
    t = len(a)
    if t < 3:
        raise ValueError(f"sharpe_difference needs at least 3 periods, got {t}")
    if np.array_equal(a, b):
        return 0.0, 1.0
    sd_a, sd_b = float(np.std(a, ddof=1)), float(np.std(b, ddof=1))
    sr_a = float(np.mean(a)) / sd_a if sd_a > 0 else 0.0
    sr_b = float(np.mean(b)) / sd_b if sd_b > 0 else 0.0
    rho = float(np.corrcoef(a, b)[0, 1]) if sd_a > 0 and sd_b > 0 else 0.0
    variance = (2 - 2 * rho + 0.5 * (sr_a**2 + sr_b**2 - 2 * sr_a * sr_b * rho**2)) / t
    if variance <= 0:
        return 0.0, 1.0
    z = (sr_a - sr_b) / np.sqrt(variance)
    return float(z), _p_value(float(z), alternative, stats.norm.sf)


def coverage_test(inside: int, n: int, level: float) -> float:
    """One-sided exact binomial p-value that intervals meant to cover ``level`` percent cover less:
    P(X <= inside) for X ~ Binomial(n, level / 100)."""
    if not 0 < level < 100:
        raise ValueError(f"level must be in (0, 100), got {level}")
    if not 0 <= inside <= n or n < 1:
        raise ValueError(f"need 0 <= inside <= n and n >= 1, got inside={inside}, n={n}")
    return float(stats.binomtest(inside, n, level / 100, alternative="less").pvalue)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control over all the tests given):
    reject test i at level alpha when its adjusted p-value is <= alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p)
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def _p_value(statistic: float, alternative: str, survival) -> float:
    if alternative == "greater":
        return float(survival(statistic))
    if alternative == "less":
        return float(survival(-statistic))
    return float(min(1.0, 2 * survival(abs(statistic))))


# --- bundles ---------------------------------------------------------------------------------


def point_metrics(y: ArrayLike, yhat: ArrayLike, y_train: ArrayLike, season: int = 1) -> dict[str, float]:
    """Keys ``rmse`` and ``mae``, plus ``mase`` only when the seasonal naive errs somewhere on
    ``y_train`` (a series held flat, such as a policy rate, has no scale: one had stopped a whole
    backtest), and ``smape`` only when ``stays_away_from_zero(y_train)``."""
    out = {"rmse": rmse(y, yhat), "mae": mae(y, yhat)}
    train = np.asarray(y_train, dtype=np.float64)
    if len(train) > season and np.any(train[season:] != train[:-season]):
        out["mase"] = mase(y, yhat, train, season)
    if stays_away_from_zero(y_train):
        out["smape"] = smape(y, yhat)
    return out


def interval_metrics(y: ArrayLike, bounds: Mapping[int, tuple[ArrayLike, ArrayLike]]) -> dict[str, float]:
    """For each level L in ``bounds`` (ascending), keys ``coverage-L`` and ``winkler-L``; then
    ``pinball`` (:func:`interval_pinball` over all of them) when ``bounds`` is not empty.

    ``bounds`` maps a central interval level in percent to its (lo, hi) arrays.
    """
    out: dict[str, float] = {}
    for level in sorted(bounds):
        lo, hi = bounds[level]
        out[f"coverage-{level}"] = coverage(y, lo, hi)
        out[f"winkler-{level}"] = winkler(y, lo, hi, level)
    if bounds:
        out["pinball"] = interval_pinball(y, bounds)
    return out
