"""GARCH-family volatility models for daily returns (the ``arch`` package).

The series is a return in percent (``100 * diff(log price)``). The mean is a constant (or zero)
and the conditional variance follows GARCH(p, o, q): ``o > 0`` adds the GJR asymmetry (bad news
raises volatility more than good news). Shocks are Gaussian or standardized Student t.

What it promises:

- ``predict``: per step, the mean and the interval ``mean + sd_k * F^-1(level)``, where ``sd_k``
  is the analytic conditional standard deviation forecast for step k and ``F`` the fitted
  standardized shock distribution. These are intervals of each day's return, not of the
  cumulative return, and they widen after turbulent days and narrow after calm ones.
- ``update``: conditions on newer data with the parameters held fixed (``params_`` unchanged).
- ``sample_paths``: return paths simulated from the fitted model itself, so volatility
  clustering and fat tails carry into anything built from them (price-level intervals where the
  model has no calibration; calibrated, they come from its running sums' errors, scaled by the
  conditional standard deviations); reproducible for a given seed.
- ``fit`` refuses, with a ValueError that says why, a constant series, a series that does not look
  like percent returns (a mean larger than its standard deviation, as levels have; a variance
  outside [0.1, 10000), where arch's optimizer can stall at its starting values yet report
  success), and an optimization that did not converge.

Only the parameters and the conditioning data are kept; the arch model is rebuilt with the
parameters fixed whenever it is needed, which is cheap (about a millisecond for 5,000 days).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from pefm.forecasting.base import PATH_HORIZON, BaseForecaster, Bounds, ForecastInputError, require_choice, require_int
from pefm.forecasting.calibration import scale_of

_MEANS = {"constant": "Constant", "zero": "Zero"}
_VOLS = {"garch": "GARCH"}
_DISTS = {"normal": "normal", "t": "t"}
# arch's own range for well-scaled data (arch.univariate.base.ARCHModel._check_scale)
_SCALE = (0.1, 1e4)


class Garch(BaseForecaster):
    """Constant (or zero) mean with GARCH(p, o, q) conditional variance, fitted by maximum likelihood."""

    name = "garch"
    min_length = 100
    spread_can_fall = True  # after a turbulent day the conditional variance falls back

    def __init__(
        self,
        mean: str = "constant",
        vol: str = "garch",
        p: int = 1,
        o: int = 0,
        q: int = 1,
        dist: str = "t",
    ):
        self.mean = mean  # "constant" or "zero"
        self.vol = vol  # "garch": GARCH(p, o, q); o=1 makes it GJR-GARCH
        self.p = p
        self.o = o
        self.q = q
        self.dist = dist  # "normal" or "t" (standardized Student t, degrees of freedom estimated)

    # -- fit / update ----------------------------------------------------------------------
    def _fit(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype="float64")
        if np.ptp(values) == 0:
            raise ForecastInputError(f"{self.name} cannot be fitted to a constant series: its returns never vary")
        variance = float(np.var(values))
        if abs(float(np.mean(values))) > np.sqrt(variance):
            raise ForecastInputError(
                f"{self.name} expects returns in percent (100 * diff(log price)); this series' mean "
                f"{np.mean(values):.3g} exceeds its standard deviation {np.sqrt(variance):.3g}, so it looks like levels"
            )
        if not _SCALE[0] <= variance < _SCALE[1]:
            raise ForecastInputError(
                f"{self.name} expects returns in percent (100 * diff(log price)); this series' variance "
                f"{variance:.3g} is outside [{_SCALE[0]}, {_SCALE[1]:.0f}), so it looks like prices or "
                "fractional returns"
            )
        with _quiet():
            res = self._model(values).fit(disp="off", show_warning=False)
        params = np.asarray(res.params, dtype="float64")
        if res.convergence_flag != 0 or not np.isfinite(params).all() or not np.isfinite(res.loglikelihood):
            message = getattr(res.optimization_result, "message", "unknown reason")
            raise ValueError(
                f"{self.name} did not converge on this series (optimizer: {message}); "
                "try a simpler specification (p=1, o=0, q=1, dist='normal') or a longer series"
            )
        self.params_ = pd.Series(params, index=list(res.params.index), name="params")
        self.values_ = values.copy()

    def _update(self, values: np.ndarray) -> None:
        self.values_ = np.asarray(values, dtype="float64").copy()

    # -- forecasts -------------------------------------------------------------------------
    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        fixed = self._fixed()
        with _quiet():
            forecast = fixed.forecast(horizon=h, reindex=False)
        mean = np.asarray(forecast.mean, dtype="float64")[-1]
        sd = np.sqrt(np.asarray(forecast.variance, dtype="float64")[-1])
        distribution, dist_params = fixed.model.distribution, self._dist_params()
        bounds = {}
        for level in levels:
            z_lo, z_hi = distribution.ppf([0.5 - level / 200, 0.5 + level / 200], dist_params)
            bounds[level] = (mean + z_lo * sd, mean + z_hi * sd)
        return mean, bounds

    def _origin_forecasts(self, values: np.ndarray, origins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Closed form: one filter pass over ``values`` with the parameters fixed, and arch's
        analytic forecasts from every origin at once (the row of point ``t - 1`` is the forecast
        made knowing the first ``t`` points)."""
        with _quiet():
            fixed = self._model(np.asarray(values, dtype="float64")).fix(self.params_.to_numpy())
            forecast = fixed.forecast(horizon=steps, start=int(origins[0]) - 1, reindex=False)
        rows = origins - origins[0]
        mean = np.asarray(forecast.mean, dtype="float64")[rows]
        sd = np.sqrt(np.asarray(forecast.variance, dtype="float64")[rows])
        z_lo, z_hi = fixed.model.distribution.ppf([0.1, 0.9], self._dist_params())
        return mean[:, :, None], scale_of((mean + z_lo * sd, mean + z_hi * sd), mean.shape)[:, :, None]

    def sample_paths(self, h: int, n: int, seed: int = 0) -> np.ndarray:
        """``n`` return paths of ``h`` steps simulated from the fitted
        model, shape ``(1, n, h)``: each step's variance follows the GARCH recursion along the
        path, shocks are drawn from the fitted distribution, and each step is then mapped onto
        the calibrated intervals. The same seed gives the same paths."""
        if not hasattr(self, "params_"):
            raise ForecastInputError(f"{self.name} is not fitted: call fit() first")
        for label, value in (("h", h), ("n", n)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ForecastInputError(f"{label} must be a positive integer, got {value!r}")
        fixed = self._fixed()
        # arch draws the shocks through rng(size); a distribution of the fitted kind seeded with
        # our own generator makes them reproducible without touching global random state.
        shocks = type(fixed.model.distribution)(seed=np.random.default_rng(seed))
        with _quiet():
            forecast = fixed.forecast(
                horizon=max(int(h), PATH_HORIZON),  # drawn as long, then cut: the same steps at any h
                method="simulation",
                simulations=int(n),
                rng=shocks.simulate(self._dist_params()),
                reindex=False,
            )
        paths = np.asarray(forecast.simulations.values, dtype="float64")[-1][:, : int(h)]
        return self._calibrated_paths(paths.reshape(1, int(n), int(h)))

    # -- helpers ---------------------------------------------------------------------------
    def check_params(self) -> None:
        require_choice(self.name, "mean", self.mean, _MEANS)
        require_choice(self.name, "vol", self.vol, _VOLS)
        require_choice(self.name, "dist", self.dist, _DISTS)
        for label, value, low in (("p", self.p, 1), ("o", self.o, 0), ("q", self.q, 0)):
            require_int(self.name, label, value, low)

    def _model(self, values: np.ndarray) -> Any:
        from arch import arch_model

        return arch_model(
            values,
            mean=_MEANS[self.mean],
            vol=_VOLS[self.vol],
            p=int(self.p),
            o=int(self.o),
            q=int(self.q),
            dist=_DISTS[self.dist],
            rescale=False,
        )

    def _fixed(self) -> Any:
        """The arch model on the conditioning data with the fitted parameters fixed."""
        with _quiet():
            return self._model(self.values_).fix(self.params_.to_numpy())

    def _dist_params(self) -> np.ndarray:
        k = 1 if self.dist == "t" else 0
        return self.params_.to_numpy()[len(self.params_) - k :]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the likelihood's floating-point warnings at trial points the optimizer rejects.
    Failures are not hidden: ``_fit`` checks the convergence flag and the parameters instead."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
