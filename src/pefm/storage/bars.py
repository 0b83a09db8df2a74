"""Daily bars (open, high, low, close, count) of intraday series, by UTC day.

Defined once, in SQL (migration 0014's ``intraday_daily_bars``): each timestamp's value is its
latest vintage known at the moment asked, so a corrected tick changes its bar instead of joining
it. ``daily_bars`` reads one series as of any moment; the materialized view ``daily_bars`` holds
every series' bars as known at its last refresh, for reads across series.
"""

from __future__ import annotations

import pandas as pd
import psycopg

from pefm.storage.observations import Moment, UnknownSeriesError, _as_utc, _utc_naive
from pefm.storage.series import get_series

COLUMNS = ["open", "high", "low", "close", "observations", "last_ts"]


def daily_bars(
    conn: psycopg.Connection, series_id: str, *, as_of: Moment = None, start: Moment = None, end: Moment = None
) -> pd.DataFrame:
    """The series' daily bars as known at ``as_of`` (default: now), days in [start, end], indexed
    by UTC-naive day. ValueError for a series that is not intraday."""
    meta = get_series(conn, series_id)
    if meta is None:
        raise UnknownSeriesError([series_id])
    if not meta.frequency.intraday:
        raise ValueError(f"series {series_id!r} is {meta.frequency.label}, not intraday: it has no daily bars")
    rows = conn.execute(
        f"""SELECT day, {", ".join(COLUMNS)} FROM intraday_daily_bars(%(as_of)s)
            WHERE series_id = %(id)s AND day >= %(start)s AND day <= %(end)s ORDER BY day""",
        {
            "id": series_id,
            "as_of": _as_utc(as_of) if as_of is not None else "infinity",
            "start": _as_utc(start) if start is not None else "-infinity",
            "end": _as_utc(end) if end is not None else "infinity",
        },
    ).fetchall()
    return _frame(rows)


def stored_daily_bars(conn: psycopg.Connection, series_ids: list[str] | None = None) -> pd.DataFrame:
    """The materialized bars (as of the last refresh), indexed by (series_id, day)."""
    rows = conn.execute(
        f"""SELECT series_id, day, {", ".join(COLUMNS)} FROM daily_bars
            WHERE %(ids)s::text[] IS NULL OR series_id = ANY(%(ids)s) ORDER BY series_id, day""",
        {"ids": series_ids},
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["series_id", "day", *COLUMNS])
    return _typed(frame).set_index(["series_id", "day"])


def refresh_daily_bars(conn: psycopg.Connection) -> None:
    """Bring the materialized bars up to now (readers keep the previous bars meanwhile)."""
    conn.execute("SELECT refresh_daily_bars()")


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return _typed(pd.DataFrame(rows, columns=["day", *COLUMNS])).set_index("day")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["day"] = _utc_naive(frame["day"])
    frame["last_ts"] = _utc_naive(frame["last_ts"])
    frame["observations"] = frame["observations"].astype("int64")
    return frame.astype({c: "float64" for c in ("open", "high", "low", "close")})
