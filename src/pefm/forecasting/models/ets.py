"""Exponential smoothing state-space models (statsmodels ETSModel), chosen by AICc.

Additive errors; trend none, additive or additive damped; additive seasonality only when asked
(the bundled economic series are seasonally adjusted or transformed to growth rates).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from pefm.forecasting.base import BaseForecaster, Bounds, require_choice, season_length
from pefm.forecasting.models._statsmodels import aicc, quiet

_TRENDS = ((None, False), ("add", False), ("add", True))


class AutoETS(BaseForecaster):
    name = "ets"
    min_length = 10

    def __init__(self, seasonal: bool = False, trends: str = "auto"):
        self.seasonal = seasonal
        self.trends = trends  # "auto" (all three), or "none" for simple exponential smoothing

    def check_params(self) -> None:
        require_choice(self.name, "seasonal", self.seasonal, (False, True))
        require_choice(self.name, "trends", self.trends, ("auto", "none"))

    def _fit(self, values: np.ndarray) -> None:
        candidates = _TRENDS if self.trends == "auto" else _TRENDS[:1]
        season = season_length(self.freq_) if self.seasonal else 1
        best = None
        with quiet():
            for trend, damped in candidates:
                spec = {"error": "add", "trend": trend, "damped_trend": damped}
                if season > 1 and len(values) >= 2 * season + 2:
                    spec.update(seasonal="add", seasonal_periods=season)
                try:
                    res = ETSModel(pd.Series(values), **spec).fit(disp=False)
                except (np.linalg.LinAlgError, ValueError):
                    continue
                score = aicc(res.llf, len(res.params), len(values))
                if best is None or score < best[0]:
                    best = (score, spec, res)
        if best is None:
            raise ValueError("no ETS model could be fitted")
        _, self.spec_, self.results_ = best
        self.mse_ = float(self.results_.mse)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        n = self.results_.nobs
        with quiet():
            pred = self.results_.get_prediction(start=n, end=n + h - 1)
            mean = np.asarray(pred.predicted_mean, dtype="float64")
            bounds = {}
            for level in levels:
                frame = pred.summary_frame(alpha=1 - level / 100)
                bounds[level] = (frame["pi_lower"].to_numpy(), frame["pi_upper"].to_numpy())
        # the error variance estimated at fit: statsmodels takes the mean squared residual of the
        # data the results were last smoothed on, so an update (a what-if's outlier) would widen it
        ratio = np.sqrt(getattr(self, "mse_", self.results_.mse) / self.results_.mse) if self.results_.mse else 1.0
        return mean, {
            level: (mean - (mean - lo) * ratio, mean + (hi - mean) * ratio) for level, (lo, hi) in bounds.items()
        }

    def _impulse(self, h: int) -> np.ndarray:
        """psi_j = alpha + beta * (phi + ... + phi^j) + gamma * [j divisible by m] for additive
        errors (Hyndman et al. 2008, 6.1): a shock moves the level and trend at once, and the
        season's own state once per season, so the seasonal model's variance steps up every m."""
        params = self.results_.model._param_names, np.asarray(self.results_.params)
        named = dict(zip(*params, strict=True))
        alpha, beta = named["smoothing_level"], named.get("smoothing_trend", 0.0)
        phi = named.get("damping_trend", 1.0)
        steps = np.arange(1, h)
        damped = np.array([np.sum(phi ** np.arange(1, j + 1)) for j in steps])
        psi = alpha + beta * damped
        if "seasonal" in self.spec_:
            psi = psi + named["smoothing_seasonal"] * (steps % self.spec_["seasonal_periods"] == 0)
        return np.concatenate([[1.0], psi])

    def _origin_forecasts(self, values: np.ndarray, origins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Closed form: one smoothing pass gives the states after each point; from origin t the
        forecast is ``l_t + (phi + ... + phi^k) b_t + s`` with ``s`` the seasonal state of the
        same season, as last updated (additive ETS, Hyndman et al. 2008, 2.3)."""
        with quiet():
            states = ETSModel(pd.Series(values), **self.spec_).smooth(self.results_.params).states
        last = origins - 1  # the state after the last known point
        mean = np.repeat(states["level"].to_numpy()[last][:, None], steps, axis=1)
        if self.spec_["trend"]:
            phi = dict(zip(self.results_.model._param_names, self.results_.params, strict=True)).get("damping_trend", 1)
            damped = np.cumsum(float(phi) ** np.arange(1, steps + 1))
            mean = mean + states["trend"].to_numpy()[last][:, None] * damped
        if "seasonal" in self.spec_:
            m = self.spec_["seasonal_periods"]
            k = np.arange(1, steps + 1)
            mean = mean + states["seasonal"].to_numpy()[last[:, None] + k - m * ((k - 1) // m + 1)]
        return mean[:, :, None], self._constant_scale(origins, steps)

    def _update(self, values: np.ndarray) -> None:
        with quiet():
            self.results_ = ETSModel(pd.Series(values), **self.spec_).smooth(self.results_.params)
