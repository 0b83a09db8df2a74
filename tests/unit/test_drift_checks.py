"""The drift checks on simulated data: quiet on stable windows, loud on a break."""

import numpy as np
import pandas as pd

from pefm.drift.calibration import stable_false_positives
from pefm.drift.checks import evidently_drift, features
from pefm.drift.policy import DriftPolicy


def test_stable_windows_raise_drift_in_at_most_5_percent_of_checks():
    flagged, rate = stable_false_positives(DriftPolicy.load(), checks=200, seed=11)
    assert rate <= 0.05, f"{flagged} of 200 stable checks flagged drift"


def test_a_level_shift_and_a_volatility_jump_are_flagged():
    rng = np.random.default_rng(3)
    policy = DriftPolicy.load()
    calm = rng.normal(0, 1, 41)
    broken = np.r_[calm, rng.normal(-3, 3, 12)]  # a recession: lower growth, far more volatile
    frame = features(pd.Series(broken), "log_diff_ann")
    results, snapshot = evidently_drift(
        frame.iloc[:40],
        frame.iloc[40:],
        [("value", "wasserstein", policy.value_threshold), ("volatility", "wasserstein", policy.volatility_threshold)],
    )
    assert [r["drifted"] for r in results] == [True, True]
    assert snapshot["metrics"][0]["config"]["method"] == "wasserstein"


def test_levels_are_differenced_and_p_value_methods_flag_below_the_threshold():
    level = pd.Series([5.0, 5.5, 6.0, 6.5, 7.0])
    assert features(level, "none")["value"].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert features(level, "log_diff_ann")["value"].tolist() == [5.5, 6.0, 6.5, 7.0]
    rng = np.random.default_rng(0)
    reference, current = pd.DataFrame({"value": rng.normal(0, 1, 60)}), pd.DataFrame({"value": rng.normal(3, 1, 30)})
    [ks], _ = evidently_drift(reference, current, [("value", "ks", 0.05)])
    assert ks["drifted"] and ks["score"] < 0.05


def test_report_rows_flatten_every_signal():
    from pefm.drift.monitor import report_rows

    series = {
        "gdp": {
            "input": [{"feature": "value", "method": "wasserstein", "score": 2.0, "threshold": 1.3, "drifted": True}],
            "accuracy": {"ratio": 1.5, "threshold": 2.0, "drifted": False},
            "prediction": {"method": "wasserstein", "score": 0.2, "threshold": 1.3, "drifted": False},
        }
    }
    assert report_rows(series) == [
        {"series": "gdp", "feature": "value", "method": "wasserstein", "score": 2.0, "threshold": 1.3, "drifted": True},
        {
            "series": "gdp",
            "feature": "realized / backtest RMSE",
            "method": "ratio",
            "score": 1.5,
            "threshold": 2.0,
            "drifted": False,
        },
        {
            "series": "gdp",
            "feature": "served forecasts",
            "method": "wasserstein",
            "score": 0.2,
            "threshold": 1.3,
            "drifted": False,
        },
    ]
