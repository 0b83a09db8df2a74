"""The divergence of canaries and gates: forecasts joined on their target dates, step by step,
judged by their distance from what the gates measured."""

import math

import pandas as pd
import pytest


def rows(start, means, width=4.0):
    dates = pd.date_range(start, periods=len(means), freq="QS").strftime("%Y-%m-%dT00:00:00Z")
    return [
        {"ds": d, "mean": m, "lo-95": m - width / 2, "hi-95": m + width / 2} for d, m in zip(dates, means, strict=True)
    ]


def test_divergence_compares_forecasts_of_the_same_target_dates_step_by_step():
    from pefm.forecasting.divergence import divergence_path

    blue = rows("2001-01-01", [1.0, 2.0, 3.0, 4.0])
    green = rows("2001-04-01", [2.0, 3.0, 5.0, 9.0])  # trained on one more quarter
    # by position the first pair would be 1 vs 2; by date 2001Q2..Q4 are compared: (5 - 4) / 4
    assert divergence_path(blue, green) == [0.0, 0.0, 0.25, None]  # blue has no 2002Q1
    assert divergence_path(blue, rows("2005-01-01", [1.0])) == [None]  # no date in common
    assert divergence_path(blue, rows("2001-01-01", [0.0, 2.0])) == [-0.25, 0.0]  # signed


def test_a_canary_judges_each_step_by_its_distance_from_what_the_gates_measured():
    from pefm.forecasting.divergence import REFUSED, judged_divergence

    live = {"realgdp": [2.9, 1.0], "unemp": [0.3, None], "infl": [-0.7]}
    assert judged_divergence(live, {}) == 2.9  # nothing measured: the divergence itself
    assert judged_divergence(live, {"realgdp": [2.8, 1.0]}) == 0.7  # infl, with nothing expected of it
    assert judged_divergence(live, {"realgdp": [2.8, 1.0], "infl": [-0.6]}) == pytest.approx(0.3)
    assert judged_divergence(live, {"realgdp": [2.8, 2.9], "unemp": [0.3], "infl": [-0.7]}) == pytest.approx(1.9)
    assert judged_divergence({"realgdp": [-2.9]}, {"realgdp": [2.9]}) == pytest.approx(5.8)  # the other way
    assert judged_divergence({"realgdp": [1.0, 1.2]}, {"realgdp": [1.0]}) == 1.2  # a step the gates did not reach
    assert judged_divergence({"realgdp": REFUSED}, {"realgdp": [2.8]}) == math.inf  # a refusal stays one
    assert judged_divergence({"realgdp": [None]}, {}) is None and judged_divergence({}, {}) is None
