import numpy as np
import pandas as pd
import pytest

from pefm.data.frequency import Frequency
from pefm.data.transforms import apply_transform


def test_log_diff_annualizes_by_the_frequency():
    y = pd.Series([100.0, 101.0, 103.0], index=pd.date_range("2000-01-01", periods=3, freq="QS"))
    growth = apply_transform(y, "log_diff_ann", Frequency.QUARTERLY)
    assert growth.tolist() == pytest.approx([400 * np.log(1.01), 400 * np.log(103 / 101)])
    assert growth.index[0] == pd.Timestamp("2000-04-01")


def test_log_return_is_in_percent_and_diff_is_plain():
    y = pd.Series([10.0, 11.0], index=pd.date_range("2000-01-03", periods=2, freq="B"))
    assert apply_transform(y, "log_return", Frequency.BUSINESS_DAILY).iloc[0] == pytest.approx(100 * np.log(1.1))
    assert apply_transform(y, "diff", Frequency.BUSINESS_DAILY).iloc[0] == pytest.approx(1.0)
    assert apply_transform(y, "none", Frequency.BUSINESS_DAILY).equals(y)


def test_log_transforms_refuse_non_positive_values_and_unknown_names_are_refused():
    y = pd.Series([1.0, -1.0], name="x")
    with pytest.raises(ValueError, match="positive"):
        apply_transform(y, "log_return", Frequency.DAILY)
    with pytest.raises(ValueError, match="unknown transform"):
        apply_transform(y, "boxcox", Frequency.DAILY)


def test_a_change_across_a_missing_period_is_missing_not_a_one_period_change():
    """October missing: November's two months of growth, annualized x12 as one, had doubled the rate."""
    months = pd.date_range("2025-07-01", periods=6, freq="MS").delete(3)
    y = pd.Series(100.0 * np.exp(0.003 * np.array([0, 1, 2, 4, 5])), index=months)
    growth = apply_transform(y, "log_diff_ann", Frequency.MONTHLY)
    assert (
        growth.round(6).tolist()[:2] == [3.6, 3.6]
        and np.isnan(growth["2025-11-01"])
        and growth["2025-12-01"] == pytest.approx(3.6)
    )
    weekly = pd.Series([1.0, 2.0, 4.0], index=pd.to_datetime(["2025-01-06", "2025-01-13", "2025-01-27"]))
    assert apply_transform(weekly, "diff", Frequency.WEEKLY).isna().tolist() == [False, True]
    # business days skip holidays and weekends by nature: their changes stand
    days = pd.Series([1.0, 2.0, 4.0], index=pd.to_datetime(["2024-12-24", "2024-12-26", "2024-12-30"]))
    assert apply_transform(days, "diff", Frequency.BUSINESS_DAILY).tolist() == [1.0, 2.0]


def test_the_newest_change_stays_even_across_a_gap():
    """Forecasts start from the newest value: without its change the model's cutoff fell before the
    gap while the level anchor was the newest stored value, and forecasts began at known periods."""
    months = pd.to_datetime(["2019-09-01", "2019-10-01", "2019-12-01"])
    y = pd.Series([219.1, 220.3, 222.9], index=months)
    changes = apply_transform(y, "diff", Frequency.MONTHLY, keep_newest=True)
    assert changes.index[-1] == pd.Timestamp("2019-12-01") and changes.iloc[-1] == pytest.approx(2.6)
    assert np.isnan(apply_transform(y, "diff", Frequency.MONTHLY).iloc[-1])  # a benchmark scores none
