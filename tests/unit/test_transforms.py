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
