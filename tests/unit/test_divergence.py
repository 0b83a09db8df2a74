"""The divergence score of the rollout probes: forecasts joined on their target dates."""

import pandas as pd


def test_divergence_compares_forecasts_of_the_same_target_dates():
    from pefm.rollout.probes import forecast_divergence

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
