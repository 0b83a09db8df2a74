"""ETS impulse responses against statsmodels' own forecast variance."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from pefm.forecasting.models import make_model


def seasonal_quarterly(n: int = 200, seed: int = 2) -> pd.Series:
    """Additive local level with a quarterly season that the shocks move (gamma = 0.4)."""
    rng = np.random.default_rng(seed)
    level, season, values = 10.0, [3.0, -1.0, -3.0, 1.0], []
    for t in range(n):
        e = rng.normal()
        values.append(level + 0.05 * t + season[t % 4] + e)
        level += 0.2 * e
        season[t % 4] += 0.4 * e
    return pd.Series(values, index=pd.date_range("1970-01-01", periods=n, freq="QS"))


@pytest.mark.parametrize("trend, damped", [(None, False), ("add", False), ("add", True)])
def test_the_impulse_responses_give_statsmodels_forecast_variance(trend, damped):
    """sigma^2 * (psi_0^2 + ... + psi_{k-1}^2) is the k-step forecast variance. Without the
    seasonal term the variance from the impulse responses stayed flat where statsmodels' steps up
    at k = 5 and 9 (a shock reaches the season's state once a year)."""
    y = seasonal_quarterly()
    model = make_model("ets_seasonal").fit(y)
    spec = {"error": "add", "trend": trend, "damped_trend": damped, "seasonal": "add", "seasonal_periods": 4}
    model.spec_, model.results_ = spec, ETSModel(pd.Series(y.to_numpy()), **spec).fit(disp=False)
    h = 10
    _, bounds = model._predict(h, (80,))
    sd = (bounds[80][1] - bounds[80][0]) / (2 * norm.ppf(0.9))
    psi = model._impulse(h)
    assert psi[4] > psi[3] + 0.1  # the season's smoothing weight, at a year
    np.testing.assert_allclose(sd[0] * np.sqrt(np.cumsum(psi**2)), sd, rtol=1e-6)
