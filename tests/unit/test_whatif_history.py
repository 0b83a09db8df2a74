"""What-if history against the series it extends: on the series' own sessions, and joining it
period by period (a gap or a holiday was read as one more step, and forecast from)."""

import numpy as np
import pandas as pd
import pytest

from pefm.data.calendars import calendar_attrs
from pefm.data.frequency import Frequency
from pefm.serving.http import ApiError
from pefm.serving.whatif import _with_history


def panel() -> pd.DataFrame:
    sessions = pd.DatetimeIndex(["2018-12-26", "2018-12-27", "2018-12-28", "2018-12-31"])
    frame = pd.DataFrame({"spx": np.array([0.5, -0.2, 0.1, 0.3])}, index=sessions)
    frame.attrs = {
        "anchors": {"spx": 2500.0},
        "transforms": {"spx": "log_return"},
        "frequencies": {"spx": Frequency.BUSINESS_DAILY.value},
        **calendar_attrs({"spx": "XNYS"}),
    }
    return frame


def unread() -> pd.Series:
    raise AssertionError("a history over a series without a gap reads no stored levels")


def refusal(history: list[dict]) -> dict:
    with pytest.raises(ApiError) as info:
        _with_history(panel(), "spx", history, Frequency.BUSINESS_DAILY, unread)
    assert info.value.status == 422
    [detail] = info.value.details
    return detail


def test_history_on_a_holiday_or_skipping_a_session_is_refused_naming_the_entry():
    assert "XNYS" in refusal([{"ts": "2019-01-01", "value": 1.0}])["message"]  # New Year's Day: closed
    skipped = refusal([{"ts": "2019-01-02", "value": 1.0}, {"ts": "2019-01-04", "value": 1.0}])
    assert skipped["field"] == "history[1].ts" and "leaves 2019-01-03 missing" in skipped["message"]
    before = refusal([{"ts": "2018-12-24", "value": 1.0}])
    assert before["field"] == "history[0].ts" and "before the series' first value (2018-12-26)" in before["message"]


def test_history_that_joins_the_series_extends_or_replaces_it():
    extended = _with_history(panel(), "spx", [{"ts": "2019-01-02", "value": 1.0}], Frequency.BUSINESS_DAILY, unread)
    assert extended["spx"].iloc[-1] == 1.0 and extended.index[-1] == pd.Timestamp("2019-01-02")
    replaced = _with_history(panel(), "spx", [{"ts": "2018-12-28", "value": 2.0}], Frequency.BUSINESS_DAILY, unread)
    assert replaced.loc["2018-12-28", "spx"] == 2.0 and len(replaced) == 4
