"""What the statsmodels-backed models share: quiet fitting and intervals from state-space results."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
from statsmodels.tsa.statespace import kalman_filter
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


_LEAN = (
    kalman_filter.MEMORY_NO_PREDICTED_COV
    | kalman_filter.MEMORY_NO_FILTERED_COV
    | kalman_filter.MEMORY_NO_SMOOTHING
    | kalman_filter.MEMORY_NO_GAIN
)


def lean(results):
    """``results`` filtered again keeping only what forecasting needs: not the state covariance
    matrices of every point, which take states^2 x n floats (150 MB at 30 lags and 1,200 points,
    in memory and in the stored artifact). Forecasts and their intervals are the same."""
    model = results.model.clone(results.model.data.orig_endog)
    model.ssm.set_conserve_memory(_LEAN)
    with quiet():
        return model.filter(results.params, cov_type="none")


def aicc(llf: float, k: int, n: int) -> float:
    """Corrected Akaike information criterion."""
    return -2 * llf + 2 * k + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else np.inf)


class ArimaResultsMixin:
    """Predict, update and rolling-origin forecasts for models whose fitted state is statsmodels
    ARIMA results in ``results_`` with the chosen ``order_`` (p, d, q)."""

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        return forecast_bounds(self.results_, h, levels)

    def _update(self, values: np.ndarray) -> None:
        with quiet():
            self.results_ = lean(self.results_.apply(values))

    def _impulse(self, h: int) -> np.ndarray:
        # on a model without the lean results' memory settings: its simulation needs every state
        model = self.results_.model.clone(self.results_.model.data.orig_endog)
        with quiet():
            irf = model.impulse_responses(self.results_.params, steps=h - 1)
        return np.asarray(irf, dtype="float64").ravel()[:h]

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


def _invariant(matrix: np.ndarray) -> np.ndarray:
    """A state-space matrix that does not vary in time: statsmodels keeps a third axis (time)
    only when it does, and then its first slice is checked to be all there is."""
    if matrix.ndim == 3:
        if matrix.shape[2] > 1 and not np.allclose(matrix, matrix[:, :, :1]):
            raise ValueError("time-varying state-space matrices are not supported")
        return matrix[:, :, 0]
    return matrix
