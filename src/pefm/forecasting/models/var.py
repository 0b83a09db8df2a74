"""Vector autoregression for a panel of stationary series (statsmodels VAR), lag order by AIC."""

from __future__ import annotations

import numpy as np
from statsmodels.tsa.api import VAR

from pefm.forecasting.base import BaseForecaster, Bounds, ForecastInputError, require_int
from pefm.forecasting.models._statsmodels import quiet


class VectorAutoregression(BaseForecaster):
    """Each series regressed on ``p`` lags of every series plus a constant; p <= max_lags by AIC.

    Fit it on a DataFrame of series that are roughly stationary (growth rates, rates, spreads);
    the intervals are the analytic ones of the VAR's MA representation.
    """

    name = "var"
    multivariate = True
    min_length = 20

    def __init__(self, max_lags: int = 4):
        self.max_lags = max_lags

    def check_params(self) -> None:
        require_int(self.name, "max_lags", self.max_lags, 1)

    def _fit(self, values: np.ndarray) -> None:
        n, k = values.shape
        if k < 2:
            raise ForecastInputError("var needs at least two series")
        max_lags = max(1, min(self.max_lags, (n - 1) // (k + 1) - 1))
        with quiet():
            model = VAR(values)
            try:
                self.results_ = model.fit(maxlags=max_lags, ic="aic", trend="c")
            except np.linalg.LinAlgError as exc:
                raise ForecastInputError(f"var could not be fitted: {exc}") from None
        if self.results_.k_ar == 0:  # AIC chose no lags: keep one, a VAR(0) forecasts nothing
            with quiet():
                self.results_ = model.fit(1, trend="c")
        self.lags_ = self.results_.k_ar
        self.last_ = values[-self.lags_ :].copy()

    def _update(self, values: np.ndarray) -> None:
        self.last_ = values[-self.lags_ :].copy()

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, Bounds]:
        bounds = {}
        mean = None
        for level in levels:
            mean, lo, hi = self.results_.forecast_interval(self.last_, steps=h, alpha=1 - level / 100)
            bounds[level] = (lo, hi)
        assert mean is not None
        return mean, bounds
