"""The divergence score of canaries and gates: forecasts joined on their target dates, judged
beyond what the gates measured."""

import math

import pandas as pd
import pytest


def test_divergence_compares_forecasts_of_the_same_target_dates():
    from pefm.forecasting.divergence import forecast_divergence

    def rows(start, means, width=4.0):
        dates = pd.date_range(start, periods=len(means), freq="QS").strftime("%Y-%m-%dT00:00:00Z")
        return [
            {"ds": d, "mean": m, "lo-95": m - width / 2, "hi-95": m + width / 2}
            for d, m in zip(dates, means, strict=True)
        ]

    blue = rows("2001-01-01", [1.0, 2.0, 3.0, 4.0])
    green = rows("2001-04-01", [2.0, 3.0, 5.0, 9.0])  # trained on one more quarter
    # by position the first pair would be 1 vs 2; by date 2001Q2..Q4 are compared: |5 - 4| / 4
    assert forecast_divergence(blue, green) == 0.25
    assert forecast_divergence(blue, rows("2005-01-01", [1.0])) is None  # no date in common


def test_a_canary_judges_each_series_beyond_what_its_gates_measured():
    from pefm.forecasting.divergence import beyond_expected

    live = {"realgdp": 2.9, "unemp": 0.3, "infl": 0.7}
    assert beyond_expected(live, {}) == 2.9  # nothing measured: the score itself
    assert beyond_expected(live, {"realgdp": 2.8}) == 0.7  # infl, with nothing expected of it, is the worst
    assert beyond_expected(live, {"realgdp": 2.8, "infl": 0.6}) == pytest.approx(0.3)
    assert beyond_expected({"realgdp": 1.0}, {"realgdp": 2.8}) == 0.0  # closer than measured: no excess
    assert beyond_expected({"realgdp": math.inf}, {"realgdp": 2.8}) == math.inf  # a refusal stays one
    assert beyond_expected({}, {"realgdp": 2.8}) is None  # no forecasts compared: no value
