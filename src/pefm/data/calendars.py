"""Exchange calendars: the sessions of a business-daily series that trades on an exchange.

A business-daily series may name its exchange's calendar (``series.calendar``, an ISO 10383 MIC
such as ``XNYS``, or an alias such as ``NYSE``, as the maintained ``exchange_calendars`` library
knows them). Its timestamps must then be sessions of that calendar (a value stamped on a
holiday is refused), and its forecasts are dated by the sessions that follow, not by weekdays.
Without a calendar a business day is any weekday. The library is imported on first use only
(it takes most of a second), never on a function's cold start.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar


def calendar_attrs(calendars: dict[str, str]) -> dict[str, object]:
    """The attrs that describe a frame's columns' calendars (column -> calendar, '' for none):
    ``calendars``, and ``calendar`` when they all share one (the frame's own, as its frequency)."""
    shared = set(calendars.values())
    return {"calendars": dict(calendars)} | ({"calendar": shared.pop()} if len(shared) == 1 else {})


FIRST_SESSION = pd.Timestamp("1970-01-01")
"""Sessions are known from here (or the calendar's own first day, if later) to a year ahead."""


@lru_cache(maxsize=1)
def calendar_names() -> frozenset[str]:
    import exchange_calendars

    return frozenset(exchange_calendars.get_calendar_names(include_aliases=True))


@lru_cache(maxsize=16)
def exchange_calendar(code: str) -> ExchangeCalendar:
    """The calendar named ``code`` (ValueError for a name the library does not know)."""
    import exchange_calendars

    if code not in calendar_names():
        raise ValueError(f"unknown exchange calendar {code!r} (an ISO 10383 MIC such as XNYS, or an alias)")
    try:
        return exchange_calendars.get_calendar(code, start=FIRST_SESSION)
    except ValueError:  # a calendar whose rules start later than FIRST_SESSION: from its own start
        return exchange_calendars.get_calendar(code)


@lru_cache(maxsize=16)
def _session_days(code: str) -> np.ndarray:
    """The calendar's sessions as sorted day numbers (searched per event on ingest's hot path)."""
    return exchange_calendar(code).sessions.to_numpy(dtype="datetime64[D]").astype(np.int64)


def off_sessions(stamps: np.ndarray, code: str) -> np.ndarray:
    """Boolean mask of the dates (UTC-naive, midnight) that are not sessions of the calendar,
    within the span it knows; outside it, of those that fall on a weekend (the calendar's own
    weekend sessions, such as Tadawul's Sundays, count within its span)."""
    sessions = _session_days(code)
    days = np.asarray(stamps, dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)
    at = np.minimum(np.searchsorted(sessions, days), len(sessions) - 1)
    known = (days >= sessions[0]) & (days <= sessions[-1])
    weekend = (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday; Monday is 0
    return np.where(known, sessions[at] != days, weekend)


def sessions_after(code: str, cutoff: pd.Timestamp, h: int) -> pd.DatetimeIndex:
    """The ``h`` sessions that follow ``cutoff`` (UTC-naive, midnight); weekdays before the span
    the calendar knows (as :func:`off_sessions` judges dates there)."""
    cal = exchange_calendar(code)
    day = pd.Timestamp(cutoff).normalize()
    if day < cal.first_session:  # weekdays up to the span, its sessions from there
        before = pd.bdate_range(day + pd.offsets.BDay(), periods=h)
        before = before[before < cal.first_session]
        after = cal.sessions_window(cal.first_session, h - len(before)) if len(before) < h else []
        return pd.DatetimeIndex([*before, *after])
    first = cal.next_session(day) if cal.is_session(day) else cal.date_to_session(day, direction="next")
    return pd.DatetimeIndex(cal.sessions_window(first, h))
