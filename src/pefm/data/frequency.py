"""Series frequencies: the codes stored in ``series.frequency`` and what each one promises.

Every timestamp is the START of its period at midnight UTC (1959Q1 is 1959-01-01), as FRED
publishes them. A value is taken to be known at the end of its period (:func:`period_end`).
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

    @property
    def offset(self) -> pd.DateOffset:
        """The pandas offset from one period start to the next."""
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
        """Periods in a year, for annualizing (252 trading days for business daily)."""
        return {"D": 365, "B": 252, "W": 52, "M": 12, "Q": 4, "A": 1}[self.value]

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


def parse_frequency(code: str) -> Frequency:
    """A Frequency from its code (``Q``) or name (``quarterly``); ValueError names the choices."""
    text = code.strip()
    for freq in Frequency:
        if text.upper() == freq.value or text.lower() == freq.label:
            return freq
    choices = ", ".join(f"{f.value} ({f.label})" for f in Frequency)
    raise ValueError(f"unknown frequency {code!r}; expected one of {choices}")


def off_frequency(index: pd.DatetimeIndex | np.ndarray, freq: Frequency) -> np.ndarray:
    """Boolean mask of the timestamps (UTC-naive) that are not period starts of ``freq``.

    Weekly series may fall on any weekday, but all on the same one. Plain numpy on the
    timestamps, so one streamed observation is checked as cheaply as a file is.
    """
    stamps = np.asarray(index, dtype="datetime64[ns]")
    days = stamps.astype("datetime64[D]")
    bad = stamps != days
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    if freq is Frequency.BUSINESS_DAILY:
        bad |= weekday >= 5
    elif freq is Frequency.WEEKLY and len(stamps):
        bad |= weekday != weekday[0]
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
    if freq is Frequency.WEEKLY:
        return idx + pd.Timedelta(days=7)
    return idx + freq.offset


def with_frequency(index: pd.DatetimeIndex, freq: Frequency) -> pd.DatetimeIndex:
    """``index`` with its pandas ``freq`` set when it is a gapless run of periods, else unchanged."""
    if len(index) < 2:
        return index
    offset = pd.offsets.Week(weekday=index[0].dayofweek) if freq is Frequency.WEEKLY else freq.offset
    try:
        return pd.DatetimeIndex(index, freq=offset)
    except ValueError:  # gaps (market holidays, missing values): no regular frequency to claim
        return index
