"""Exchange calendars (pefm.data.calendars, through the exchange_calendars library): which days
are sessions, and the dates a business-daily series' forecasts get."""

import numpy as np
import pandas as pd
import pytest

from pefm.data.calendars import off_sessions, sessions_after
from pefm.data.frequency import Frequency, off_frequency
from pefm.data.validation import check_frequency
from pefm.forecasting.models.naive import Naive


def days(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[ns]")


def test_holidays_and_closures_are_not_sessions_and_weekdays_without_a_calendar_are():
    # New Year's Day, Good Friday 2019, the day of mourning for President Bush, then a session
    stamps = days("2019-01-01", "2019-04-19", "2018-12-05", "2019-01-02")
    assert off_sessions(stamps, "XNYS").tolist() == [True, True, True, False]
    assert off_frequency(stamps, Frequency.BUSINESS_DAILY, "NYSE").tolist() == [True, True, True, False]  # an alias
    assert off_frequency(stamps, Frequency.BUSINESS_DAILY).tolist() == [False] * 4
    # before the span it knows: weekdays, as without a calendar
    assert off_sessions(days("1960-01-04", "1960-01-02"), "XNYS").tolist() == [False, True]


def test_a_calendar_that_trades_on_weekends_has_its_weekend_sessions_accepted():
    # Tadawul trades Sunday to Thursday; Bombay held a special Saturday session on 2025-02-01 (the budget)
    week = days("2026-11-01", "2026-11-02", "2026-11-05", "2026-11-06", "2026-11-07", "2026-11-08")
    assert off_frequency(week, Frequency.BUSINESS_DAILY, "XSAU").tolist() == [False, False, False, True, True, False]
    assert off_frequency(days("2025-02-01"), Frequency.BUSINESS_DAILY, "XBOM").tolist() == [False]
    assert sessions_after("XSAU", pd.Timestamp("2026-11-05"), 2).strftime("%a").tolist() == ["Sun", "Mon"]


def test_a_value_on_a_holiday_is_reported_as_not_a_session():
    [issue] = check_frequency(days("2019-01-02", "2019-01-01"), Frequency.BUSINESS_DAILY, calendar="XNYS")
    assert (issue.index, issue.field, issue.message) == (1, "ts", "2019-01-01 00:00 is not a XNYS session")


def test_forecasts_of_a_series_on_a_calendar_are_dated_by_its_sessions():
    assert sessions_after("XNYS", pd.Timestamp("2018-12-31"), 3).strftime("%m-%d").tolist() == [
        "01-02",
        "01-03",
        "01-04",
    ]
    assert sessions_after("XNYS", pd.Timestamp("2018-12-29"), 1).strftime("%m-%d").tolist() == ["12-31"]  # a Saturday
    # before the calendar's span (1970 here): weekdays, not an error; its sessions once inside it
    across = sessions_after("XNYS", pd.Timestamp("1969-12-29"), 45)
    assert across[0] == pd.Timestamp("1969-12-30") and len(across) == 45 and across.is_monotonic_increasing
    assert pd.Timestamp("1970-02-20") in across and pd.Timestamp("1970-02-23") not in across  # a holiday
    assert sessions_after("XNYS", pd.Timestamp("1965-06-04"), 2).strftime("%Y-%m-%d").tolist() == [
        "1965-06-07",
        "1965-06-08",
    ]
    index = pd.bdate_range("2018-12-17", "2018-12-31").difference(pd.DatetimeIndex(["2018-12-25"]))
    y = pd.Series(np.linspace(2600.0, 2500.0, len(index)), index=index)
    y.attrs.update(frequency=Frequency.BUSINESS_DAILY, calendar="XNYS")
    dated = Naive().fit(y).predict(h=2)["ds"].dt.strftime("%Y-%m-%d").tolist()
    assert dated == ["2019-01-02", "2019-01-03"]
    y.attrs["calendar"] = ""
    assert Naive().fit(y).predict(h=1)["ds"].dt.strftime("%Y-%m-%d").tolist() == ["2019-01-01"]  # a weekday


def test_an_unknown_calendar_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown exchange calendar 'XXXX'"):
        sessions_after("XXXX", pd.Timestamp("2019-01-02"), 1)
