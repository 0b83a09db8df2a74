import pandas as pd
import pytest

from pefm.data.frequency import (
    Frequency,
    off_frequency,
    parse_frequency,
    period_end,
    with_frequency,
)


@pytest.mark.parametrize(
    ("freq", "good", "bad"),
    [
        (Frequency.QUARTERLY, ["1959-01-01", "2009-07-01"], ["1959-02-01", "1959-04-02"]),
        (Frequency.MONTHLY, ["2018-11-01"], ["2018-11-15"]),
        (Frequency.ANNUAL, ["2000-01-01"], ["2000-07-01"]),
        (Frequency.BUSINESS_DAILY, ["2018-12-31"], ["2018-12-29"]),  # a Saturday
        (Frequency.DAILY, ["2018-12-29"], ["2018-12-29 12:00"]),
        (Frequency.MINUTE, ["2026-03-02 14:31"], ["2026-03-02 14:31:30", "2026-03-02 14:31:00.001"]),
        (Frequency.FIVE_MINUTES, ["2026-03-02 14:35", "2026-03-02 00:00"], ["2026-03-02 14:36"]),
        (Frequency.FIFTEEN_MINUTES, ["2026-03-02 14:45"], ["2026-03-02 14:40"]),
        (Frequency.THIRTY_MINUTES, ["2026-03-02 14:30"], ["2026-03-02 14:15"]),
        (Frequency.HOURLY, ["2026-03-02 14:00"], ["2026-03-02 14:30"]),
        (Frequency.TICK, ["2026-03-02 14:31:07.123456"], ["2026-03-02 14:31:07.1234567"]),  # beyond microseconds
    ],
)
def test_off_frequency_flags_exactly_the_timestamps_that_are_not_period_starts(freq, good, bad):
    index = pd.DatetimeIndex(good + bad)
    assert off_frequency(index, freq).tolist() == [False] * len(good) + [True] * len(bad)


def test_weekly_series_keep_one_weekday():
    index = pd.DatetimeIndex(["2024-01-05", "2024-01-12", "2024-01-18"])
    assert off_frequency(index, Frequency.WEEKLY).tolist() == [False, False, True]


def test_a_value_is_known_at_the_start_of_the_next_period():
    q = period_end(pd.DatetimeIndex(["1999-10-01"]), Frequency.QUARTERLY)
    b = period_end(pd.DatetimeIndex(["2018-12-28"]), Frequency.BUSINESS_DAILY)  # a Friday
    assert q[0] == pd.Timestamp("2000-01-01")
    assert b[0] == pd.Timestamp("2018-12-31")


def test_regular_frequency_is_claimed_only_without_gaps():
    full = pd.date_range("2000-01-01", periods=8, freq="QS")
    assert with_frequency(pd.DatetimeIndex(list(full)), Frequency.QUARTERLY).freq is not None
    gappy = full.delete(3)
    assert with_frequency(pd.DatetimeIndex(list(gappy)), Frequency.QUARTERLY).freq is None


def test_parse_frequency_takes_codes_and_names_and_lists_choices_on_error():
    assert parse_frequency("q") is Frequency.QUARTERLY
    assert parse_frequency("business daily") is Frequency.BUSINESS_DAILY
    with pytest.raises(ValueError, match=r"Q \(quarterly\)"):
        parse_frequency("fortnightly")


def test_intraday_frequencies_step_by_their_bar_and_ticks_have_no_period():
    bars = pd.DatetimeIndex(["2026-03-02 14:30", "2026-03-02 14:35", "2026-03-02 14:40"])
    assert period_end(bars, Frequency.FIVE_MINUTES)[0] == pd.Timestamp("2026-03-02 14:35")
    assert with_frequency(bars, Frequency.FIVE_MINUTES).freq == pd.offsets.Minute(5)
    assert [f.intraday for f in (Frequency.HOURLY, Frequency.TICK, Frequency.DAILY)] == [True, True, False]
    ticks = pd.DatetimeIndex(["2026-03-02 14:30:00.5", "2026-03-02 14:30:07"])
    assert period_end(ticks, Frequency.TICK).equals(ticks)  # a tick is known at its own time
    assert with_frequency(ticks, Frequency.TICK).freq is None
    with pytest.raises(ValueError, match="no regular period"):
        _ = Frequency.TICK.periods_per_year
    assert Frequency.MINUTE.periods_per_year == 525_600
    assert parse_frequency("5MIN") is Frequency.FIVE_MINUTES and parse_frequency("hourly") is Frequency.HOURLY


def test_weekly_points_keep_the_weekday_of_a_stored_point():
    """With an anchor (a stored timestamp of the series), every point takes its weekday, the first too."""
    index = pd.DatetimeIndex(["2024-01-19", "2024-01-20"])
    assert off_frequency(index, Frequency.WEEKLY, anchor=pd.Timestamp("2024-01-06").to_pydatetime()).tolist() == [
        True,
        False,
    ]
