"""Series frequencies: the codes stored in ``series.frequency`` and what each one promises.

Every timestamp of a daily or longer period is the START of its period at midnight UTC (1959Q1
is 1959-01-01), as FRED publishes them. Intraday bars (one minute to one hour) are stamped at the
start of their bar, on the bar's boundary in UTC; ticks (``tick``) are irregular event times, to
the microsecond. A value is taken to be known at the end of its period (:func:`period_end`), a
tick at its own time. Intraday series are kept in their own table (``pefm.storage.observations``).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd


class Frequency(StrEnum):
    DAILY = "D"
    BUSINESS_DAILY = "B"
    WEEKLY = "W"
    MONTHLY = "M"
    QUARTERLY = "Q"
    ANNUAL = "A"
    MINUTE = "1min"
    FIVE_MINUTES = "5min"
    FIFTEEN_MINUTES = "15min"
    THIRTY_MINUTES = "30min"
    HOURLY = "1h"
    TICK = "tick"

    @property
    def intraday(self) -> bool:
        """Bars shorter than a day, or ticks: stored in the intraday table."""
        return self.value in _BAR_MINUTES or self is Frequency.TICK

    @property
    def offset(self) -> pd.DateOffset:
        """The pandas offset from one period start to the next (ticks have none: ValueError)."""
        if self is Frequency.TICK:
            raise ValueError("a tick series has no regular period")
        if self.value in _BAR_MINUTES:
            return pd.offsets.Minute(_BAR_MINUTES[self.value])
        return {
            "D": pd.offsets.Day(),
            "B": pd.offsets.BDay(),
            "W": pd.offsets.Week(),
            "M": pd.offsets.MonthBegin(),
            "Q": pd.offsets.QuarterBegin(startingMonth=1),
            "A": pd.offsets.YearBegin(),
        }[self.value]

    @property
    def periods_per_year(self) -> int:
        """Periods in a year, for annualizing (252 trading days for business daily; intraday bars
        over the calendar's whole year, since their sessions differ by market; ticks: ValueError)."""
        if self is Frequency.TICK:
            raise ValueError("a tick series has no regular period")
        if self.value in _BAR_MINUTES:
            return 365 * 24 * 60 // _BAR_MINUTES[self.value]
        return {"D": 365, "B": 252, "W": 52, "M": 12, "Q": 4, "A": 1}[self.value]

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


_BAR_MINUTES = {"1min": 1, "5min": 5, "15min": 15, "30min": 30, "1h": 60}


def parse_frequency(code: str) -> Frequency:
    """A Frequency from its code (``Q``, ``5min``) or name (``quarterly``, ``five minutes``);
    ValueError names the choices."""
    text = code.strip().lower()
    for freq in Frequency:
        if text in (freq.value.lower(), freq.label):
            return freq
    choices = ", ".join(f"{f.value} ({f.label})" for f in Frequency)
    raise ValueError(f"unknown frequency {code!r}; expected one of {choices}")


def off_frequency(
    index: pd.DatetimeIndex | np.ndarray, freq: Frequency, calendar: str = "", anchor: object = None
) -> np.ndarray:
    """Boolean mask of the timestamps (UTC-naive) that are not period starts of ``freq``.

    Weekly series may fall on any weekday, but all on the same one: ``anchor``'s (a stored
    timestamp of the series, UTC-naive), else the first timestamp's; business days are weekdays,
    or the sessions of the series' exchange ``calendar`` (``pefm.data.calendars``); intraday bars
    start on their bar's boundary; a tick may fall on any microsecond. Plain numpy on the
    timestamps, so one streamed observation is checked as cheaply as a file is.
    """
    stamps = np.asarray(index, dtype="datetime64[ns]")
    if freq is Frequency.TICK:
        return stamps != stamps.astype("datetime64[us]")  # PostgreSQL keeps microseconds
    if freq.value in _BAR_MINUTES:
        return stamps != stamps.astype(f"datetime64[{_BAR_MINUTES[freq.value]}m]")
    days = stamps.astype("datetime64[D]")
    bad = stamps != days
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    if freq is Frequency.BUSINESS_DAILY and calendar:
        from pefm.data.calendars import off_sessions

        bad |= off_sessions(days, calendar)
    elif freq is Frequency.BUSINESS_DAILY:
        bad |= weekday >= 5
    elif freq is Frequency.WEEKLY and len(stamps):
        day = weekday[0] if anchor is None else (np.datetime64(anchor, "D").astype(np.int64) + 3) % 7
        bad |= weekday != day
    elif freq in (Frequency.MONTHLY, Frequency.QUARTERLY, Frequency.ANNUAL):
        months = days.astype("datetime64[M]")
        bad |= days != months
        month = months.astype(np.int64) % 12  # January is 0
        if freq is Frequency.QUARTERLY:
            bad |= month % 3 != 0
        elif freq is Frequency.ANNUAL:
            bad |= month != 0
    return bad


def period_end(index: pd.DatetimeIndex, freq: Frequency) -> pd.DatetimeIndex:
    """The start of the next period for each timestamp: when its value can first be known."""
    idx = pd.DatetimeIndex(index)
    if freq is Frequency.TICK:
        return idx
    if freq is Frequency.WEEKLY:
        return idx + pd.Timedelta(days=7)
    return idx + freq.offset


def with_frequency(index: pd.DatetimeIndex, freq: Frequency) -> pd.DatetimeIndex:
    """``index`` with its pandas ``freq`` set when it is a gapless run of periods, else unchanged."""
    if len(index) < 2 or freq is Frequency.TICK:
        return index
    offset = pd.offsets.Week(weekday=index[0].dayofweek) if freq is Frequency.WEEKLY else freq.offset
    try:
        return pd.DatetimeIndex(index, freq=offset)
    except ValueError:  # gaps (market holidays, missing values): no regular frequency to claim
        return index
