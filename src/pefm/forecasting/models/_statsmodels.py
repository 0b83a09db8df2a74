"""What the statsmodels-backed models share: quiet fitting and intervals from state-space results."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
from threadpoolctl import ThreadpoolController

from pefm.forecasting.base import Bounds

_THREADPOOLS = ThreadpoolController()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Fit quietly and single-threaded: silence statsmodels' convergence and specification
    chatter, and keep BLAS to one thread. These models multiply tiny matrices, where BLAS
    threads only add overhead, and where a busy machine makes them spin (measured here: 100x
    slower ARIMA searches with two BLAS threads on two loaded cores)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), _THREADPOOLS.limit(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")
        yield


def forecast_bounds(results, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
    """Mean and intervals of an h-step forecast from statsmodels state-space results."""
    with quiet():
        forecast = results.get_forecast(h)
        mean = np.asarray(forecast.predicted_mean, dtype="float64")
        bounds = {}
        for level in levels:
            ci = np.asarray(forecast.conf_int(alpha=1 - level / 100), dtype="float64")
            bounds[level] = (ci[:, 0], ci[:, 1])
    return mean, bounds


def aicc(llf: float, k: int, n: int) -> float:
    """Corrected Akaike information criterion."""
    return -2 * llf + 2 * k + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else np.inf)


class ArimaResultsMixin:
    """Predict, update and one-step filter for models whose fitted state is statsmodels ARIMA
    results in ``results_`` with the chosen ``order_`` (p, d, q)."""

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        return forecast_bounds(self.results_, h, levels)

    def _update(self, values: np.ndarray) -> None:
        with quiet():
            self.results_ = self.results_.apply(values)

    def _impulse(self, h: int) -> np.ndarray:
        return np.asarray(self.results_.impulse_responses(steps=h - 1), dtype="float64").ravel()[:h]

    def _origin_forecasts(self, values: np.ndarray, origins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Closed form: one Kalman filter pass over ``values`` with the parameters fixed; from
        origin t the state predicted for point t is carried forward by the transition matrix
        (``Z T^k a_t`` plus the intercepts: the trend's, on the data's own time index)."""
        with quiet():
            filtered = self.results_.apply(values)
        ssm = filtered.model.ssm
        design, transition = _invariant(ssm["design"]), _invariant(ssm["transition"])
        state_intercept = _invariant(ssm["state_intercept"][:, None])[:, 0]
        obs_intercept = np.atleast_2d(ssm["obs_intercept"])[0]  # (1,) or, with a trend, one per point
        state = filtered.filter_results.predicted_state[:, origins]  # (states, origins)
        mean = np.empty((len(origins), steps))
        for k in range(steps):
            at = np.minimum(origins + k, len(obs_intercept) - 1)  # past the data: no target to score
            mean[:, k] = (design @ state)[0] + obs_intercept[at]
            state = transition @ state + state_intercept[:, None]
        return mean[:, :, None], self._constant_scale(origins, steps)

    def _one_step(self, values: np.ndarray) -> np.ndarray:
        with quiet():
            fitted = np.asarray(self.results_.apply(values).fittedvalues, dtype="float64")
        fitted[: self.order_[0] + self.order_[1]] = np.nan  # before enough lags exist
        return fitted


def _invariant(matrix: np.ndarray) -> np.ndarray:
    """A state-space matrix that does not vary in time: statsmodels keeps a third axis (time)
    only when it does, and then its first slice is checked to be all there is."""
    if matrix.ndim == 3:
        if matrix.shape[2] > 1 and not np.allclose(matrix, matrix[:, :, :1]):
            raise ValueError("time-varying state-space matrices are not supported")
        return matrix[:, :, 0]
    return matrix
