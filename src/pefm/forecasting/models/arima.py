"""ARIMA models fitted by exact maximum likelihood (statsmodels).

``arima``: automatic order selection. Differencing d from repeated KPSS tests (as auto.arima's
ndiffs), then Hyndman and Khandakar's stepwise search over (p, q) <= (max_p, max_q): start from
(2,2), (0,0), (1,0), (0,1), move to the best neighbour (p or q changed by one) while it improves
AICc. A constant (d=0) or drift (d=1) is included.

``airline``: the seasonal ARIMA(0, d, 1)(0, 1, 1)_m of Box and Jenkins (1970), the airline model
(X-13ARIMA-SEATS' default), one fit with no order search. The seasonal difference and seasonal
moving average absorb a seasonal pattern that drifts (a moving average coefficient near -1 leaves
a fixed one); d comes from the KPSS tests on the seasonally differenced series (auto.arima's order:
the seasonal difference first). Only for cycles of up to 24 periods: a longer one (52 weeks)
makes 106 states per fit, where Fourier terms are the tool (Hyndman and Athanasopoulos,
FPP3 12.1).
"""

from __future__ import annotations

import numpy as np
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.stattools import kpss

from pefm.forecasting.base import (
    BaseForecaster,
    ForecastInputError,
    refuse_flat,
    require_int,
    require_number,
    season_length,
)
from pefm.forecasting.models._statsmodels import ArimaResultsMixin, aicc, lean, quiet


class AutoARIMA(ArimaResultsMixin, BaseForecaster):
    name = "arima"
    min_length = 16

    def __init__(self, max_p: int = 3, max_q: int = 2, max_d: int = 1, alpha: float = 0.05):
        self.max_p = max_p
        self.max_q = max_q
        self.max_d = max_d
        self.alpha = alpha

    def check_params(self) -> None:
        require_int(self.name, "max_p", self.max_p, 0)
        require_int(self.name, "max_q", self.max_q, 0)
        check_differencing(self)

    def _fit(self, values: np.ndarray) -> None:
        self.d_ = kpss_differences(values, self.max_d, self.alpha)
        self.trend_ = {0: "c", 1: "t"}.get(self.d_, "n")
        n = len(values) - self.d_
        scores: dict[tuple[int, int], tuple[float, object]] = {}

        def score(p: int, q: int) -> float:
            if (p, q) not in scores:
                try:
                    res = ARIMA(values, order=(p, self.d_, q), trend=self.trend_).fit(cov_type="none")
                    ic = np.inf if _near_unit_root(res) else aicc(res.llf, len(res.params), n)
                    scores[(p, q)] = (ic, res)
                except (np.linalg.LinAlgError, ValueError):
                    scores[(p, q)] = (np.inf, None)
            return scores[(p, q)][0]

        with quiet():
            starts = [(2, 2), (0, 0), (1, 0), (0, 1)]
            best = min(self._allowed(starts), key=lambda pq: score(*pq))
            while True:
                p, q = best
                neighbours = [(p + dp, q + dq) for dp, dq in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1))]
                candidate = min(self._allowed(neighbours), key=lambda pq: score(*pq), default=best)
                if score(*candidate) >= score(*best):
                    break
                best = candidate
        if not np.isfinite(scores[best][0]):
            raise ValueError("no ARIMA order could be fitted")
        self.order_ = (best[0], self.d_, best[1])
        self.results_ = lean(scores[best][1])
        self.candidates_tried_ = len(scores)

    def _allowed(self, orders: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(p, q) for p, q in orders if 0 <= p <= self.max_p and 0 <= q <= self.max_q]


class AirlineARIMA(ArimaResultsMixin, BaseForecaster):
    name = "airline"
    min_length = 12  # two quarterly cycles and four points; longer cycles need more (``_fit``)
    max_season = 24  # see the module docstring

    def __init__(self, max_d: int = 1, alpha: float = 0.05):
        self.max_d = max_d
        self.alpha = alpha

    def check_params(self) -> None:
        check_differencing(self)

    def _fit(self, values: np.ndarray) -> None:
        m = season_length(self.freq_)
        if not 2 <= m <= self.max_season:
            raise ForecastInputError(f"airline models cycles of 2 to {self.max_season} periods, not {m}")
        if len(values) < 2 * m + 4:
            raise ForecastInputError(f"airline needs at least {2 * m + 4} points for a cycle of {m}, got {len(values)}")
        d = kpss_differences(values[m:] - values[:-m], self.max_d, self.alpha)
        self.order_ = (0, d, 1)
        self.seasonal_order_ = (0, 1, 1, m)
        with quiet():
            model = ARIMA(values, order=self.order_, seasonal_order=self.seasonal_order_, trend="n")
            self.results_ = lean(model.fit(cov_type="none"))


def check_differencing(model: AutoARIMA | AirlineARIMA) -> None:
    """``max_d`` and the KPSS test's ``alpha``, which both ARIMA models take."""
    require_int(model.name, "max_d", model.max_d, 0, 2)
    require_number(model.name, "alpha", model.alpha, 0, 1, open_low=True)


def kpss_differences(values: np.ndarray, max_d: int, alpha: float) -> int:
    """How many first differences make ``values`` stationary by repeated KPSS tests at level
    ``alpha`` (auto.arima's ndiffs), at most ``max_d``. ForecastInputError for flat data, which no
    ARIMA estimates (KPSS's statistic is 0/0 there)."""
    refuse_flat("arima", values)
    d, work = 0, values
    with quiet():
        while d < max_d and len(work) > 10:
            _, p_value, *_ = kpss(work, regression="c", nlags="auto")
            if p_value >= alpha:
                break
            d, work = d + 1, np.diff(work)
    return d


def _near_unit_root(res) -> bool:
    """Whether an AR or MA root of a fit lies within 1.01 of the unit circle: a fit at the edge of
    stationarity or invertibility, whose likelihood and forecast variance are not to be trusted
    (auto.arima rejects such candidates the same way, Hyndman and Khandakar 2008)."""
    roots = np.concatenate([np.atleast_1d(res.arroots), np.atleast_1d(res.maroots)])
    return bool(roots.size) and float(np.min(np.abs(roots))) < 1.01
