"""Autoregression on levels (d=0) or first differences (d=1), order chosen by AIC.

The fast member of the ARIMA family: the order comes from OLS fits (statsmodels
``ar_select_order``), the coefficients from Burg's method, no numerical optimization. Intervals
are those of the equivalent ARIMA(p, d, 0), so they widen correctly when d=1.
"""

from __future__ import annotations

import numpy as np
from statsmodels.tsa.ar_model import ar_select_order
from statsmodels.tsa.arima.model import ARIMA

from pefm.forecasting.base import BaseForecaster, refuse_flat, require_choice, require_int
from pefm.forecasting.models._statsmodels import ArimaResultsMixin, lean, quiet


class AutoRegressive(ArimaResultsMixin, BaseForecaster):
    """ARIMA(p, d, 0) with a constant (d=0) or drift (d=1); p in 1..max_lag by AIC.

    ``max_lag`` defaults to ``10 log10(n)`` (n the points modelled), the search range of R's
    ``ar()``: it grows slowly with the sample (20 lags at 100 points, 30 at 1,000, so a year of
    monthly lags and the long cycles of annual data are within reach), never past n / 4.
    """

    name = "ar"
    min_length = 12

    def __init__(self, d: int = 0, max_lag: int | None = None):
        self.d = d
        self.max_lag = max_lag

    def check_params(self) -> None:
        require_choice(self.name, "d", self.d, (0, 1))
        require_int(self.name, "max_lag", self.max_lag, 0, none=True)  # None or 0: 10 log10(n)

    def _fit(self, values: np.ndarray) -> None:
        work = np.diff(values) if self.d else values
        refuse_flat(self.name, work)
        max_lag = self.max_lag or int(10 * np.log10(len(work)))
        max_lag = max(1, min(max_lag, len(work) // 4))
        with quiet():
            selected = ar_select_order(work, maxlag=max_lag, ic="aic", trend="c")
            self.order_ = (max(selected.ar_lags or [1]), self.d, 0)
            model = ARIMA(values, order=self.order_, trend="c" if self.d == 0 else "t")
            self.results_ = lean(model.fit(method="burg", cov_type="none"))  # no standard errors needed
