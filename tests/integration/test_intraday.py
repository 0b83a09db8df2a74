"""Intraday series on a real PostgreSQL (plain: the TimescaleDB path runs in ci.yml): minute bars
and ticks in their own table, read as of a moment, and aggregated to daily bars."""

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from pefm.data.frequency import Frequency
from pefm.storage.bars import daily_bars, refresh_daily_bars, stored_daily_bars
from pefm.storage.observations import (
    Event,
    known_alike,
    read_frame,
    read_series,
    write_events,
    write_observations,
)
from pefm.storage.series import SeriesInUseError, SeriesMeta, upsert_series

V1 = datetime(2026, 3, 3, 22, 0, tzinfo=UTC)
V2 = datetime(2026, 3, 4, 22, 0, tzinfo=UTC)
BARS = SeriesMeta(id="spy.1min", name="SPY one-minute closes", frequency=Frequency.MINUTE, unit="USD")


def session(day: str, rng: np.random.Generator) -> pd.DataFrame:
    """One NYSE session of minute bars (14:30 to 20:59 UTC), a random walk."""
    stamps = pd.date_range(f"{day} 14:30", f"{day} 20:59", freq="1min")
    values = 500 + np.cumsum(rng.normal(0, 0.2, len(stamps)))
    return pd.DataFrame({"series_id": BARS.id, "ts": stamps, "value": values})


@pytest.fixture
def minute(conn: psycopg.Connection) -> pd.DataFrame:
    """Two sessions stored at V1, one bar of the first revised at V2: the data as known now."""
    upsert_series(conn, BARS)
    rng = np.random.default_rng(7)
    frame = pd.concat([session("2026-03-02", rng), session("2026-03-03", rng)], ignore_index=True)
    assert write_observations(conn, frame, vintage=V1).inserted == len(frame)
    fix = frame.iloc[[100]].assign(value=frame["value"].iloc[100] + 25.0)  # a bad print, corrected upwards
    assert write_observations(conn, fix, vintage=V2).revised == 1
    return frame.assign(value=frame["value"].mask(frame.index == 100, fix["value"].iloc[0]))


def counts(conn) -> tuple[int, int]:
    return tuple(
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("observations", "intraday_observations")
    )


def test_minute_bars_live_in_their_own_table_and_read_back_as_of_a_moment(conn, minute):
    assert counts(conn) == (0, len(minute) + 1)
    now = read_series(conn, BARS.id)
    assert now.attrs["frequency"] is Frequency.MINUTE
    np.testing.assert_array_equal(now.to_numpy(), minute["value"].to_numpy())
    assert list(now.index) == list(minute["ts"])
    before = read_series(conn, BARS.id, as_of=V1 + timedelta(hours=1))
    assert before.iloc[100] == pytest.approx(now.iloc[100] - 25.0) and before.drop(before.index[100]).equals(
        now.drop(now.index[100])
    )
    assert read_series(conn, BARS.id, as_of=V1 - timedelta(seconds=1)).empty
    window = read_series(conn, BARS.id, start="2026-03-03 15:00", end="2026-03-03 15:04")
    assert list(window.index.strftime("%H:%M")) == ["15:00", "15:01", "15:02", "15:03", "15:04"]


def expected_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Daily bars computed by pandas from the values as known, independently of the SQL."""
    days = frame.set_index("ts")["value"].groupby(lambda ts: ts.normalize())
    out = pd.DataFrame(
        {"open": days.first(), "high": days.max(), "low": days.min(), "close": days.last(), "observations": days.size()}
    )
    out.index.name = "day"
    return out


def test_a_correction_between_two_moments_is_seen_by_the_data_check(conn, minute):
    """What kept as-of forecasts and the canary's probe ask (``known_alike``): an intraday series'
    data are in their own table, and a correction there at V2 makes the moments around it differ."""
    made = datetime.now(UTC)  # after every write of the fixture
    assert not known_alike(conn, [BARS.id], V1 + timedelta(hours=1), V2 + timedelta(hours=1), since=made)
    assert known_alike(conn, [BARS.id], V2 + timedelta(hours=1), V2 + timedelta(hours=2), since=made)


def test_daily_bars_take_each_minutes_latest_vintage_as_of_any_moment(conn, minute):
    bars = daily_bars(conn, BARS.id)
    pd.testing.assert_frame_equal(bars.drop(columns="last_ts"), expected_bars(minute), check_freq=False)
    assert list(bars["last_ts"].dt.strftime("%H:%M")) == ["20:59", "20:59"]
    as_first_known = minute.assign(value=minute["value"].mask(minute.index == 100, minute["value"].iloc[100] - 25.0))
    pd.testing.assert_frame_equal(
        daily_bars(conn, BARS.id, as_of=V1).drop(columns="last_ts"), expected_bars(as_first_known), check_freq=False
    )
    assert daily_bars(conn, BARS.id, start="2026-03-03").index.strftime("%Y-%m-%d").tolist() == ["2026-03-03"]


def test_the_materialized_bars_are_the_same_bars_after_a_refresh(conn, minute):
    assert stored_daily_bars(conn, [BARS.id]).empty  # as of the last refresh: before any data
    refresh_daily_bars(conn)
    stored = stored_daily_bars(conn, [BARS.id]).loc[BARS.id]
    pd.testing.assert_frame_equal(stored, daily_bars(conn, BARS.id), check_freq=False)


def test_a_period_series_has_no_daily_bars(conn):
    upsert_series(conn, SeriesMeta(id="gdp", name="GDP", frequency=Frequency.QUARTERLY))
    with pytest.raises(ValueError, match="not intraday"):
        daily_bars(conn, "gdp")


def test_ticks_and_period_data_share_a_group_commit_each_in_its_table(conn):
    ticks = SeriesMeta(id="eurusd.ticks", name="EUR/USD trades", frequency=Frequency.TICK)
    gdp = SeriesMeta(id="gdp", name="GDP", frequency=Frequency.QUARTERLY)
    upsert_series(conn, ticks)
    upsert_series(conn, gdp)
    t0 = datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=UTC)
    stamps = [t0, t0 + timedelta(microseconds=1), t0 + timedelta(seconds=2.5)]
    events = [
        Event([ticks.id] * 3, stamps, [1.0841, 1.0842, 1.0840], V1),
        Event([gdp.id], [datetime(2025, 10, 1, tzinfo=UTC)], [30_000.0], V1),
    ]
    with conn.transaction():
        results = write_events(conn, events, intraday={ticks.id})
    assert [r.inserted for r in results] == [3, 1]
    assert counts(conn) == (1, 3)
    frame = read_frame(conn, [ticks.id, gdp.id])
    assert frame[ticks.id].dropna().index.tolist() == [pd.Timestamp(s).tz_localize(None) for s in stamps]
    assert frame[gdp.id].dropna().tolist() == [30_000.0]
    again = write_events(conn, [Event([ticks.id], [stamps[0]], [1.0841], V2)], intraday={ticks.id})
    assert (again[0].inserted, again[0].unchanged) == (0, 1)  # classified against the intraday table
    with pytest.raises(SeriesInUseError):  # its data are stored as ticks
        upsert_series(conn, SeriesMeta(id=ticks.id, name="EUR/USD", frequency=Frequency.DAILY))


def test_the_cli_prints_the_bars_as_of_a_moment_and_refreshes_the_view(conn, minute, cli_env):
    from tests.integration.test_cli import run

    conn.commit()  # the fixture's writes, visible to the command's own connection
    now = daily_bars(conn, BARS.id)
    shown = run(cli_env, "series", "bars", BARS.id, "--refresh")
    assert shown.returncode == 0, shown.stderr
    first = now.iloc[0]
    prices = [f"{first[c]:,.4f}" for c in ("open", "high", "low", "close")]
    row = r"\s+│\s+".join(["2026-03-02", *map(re.escape, prices), "390", "20:59:00"])
    assert re.search(row, shown.stdout), shown.stdout
    assert not stored_daily_bars(conn, [BARS.id]).empty  # refreshed by the command
    then = run(cli_env, "series", "bars", BARS.id, "--as-of", V1.isoformat())
    high_then = daily_bars(conn, BARS.id, as_of=V1)["high"].iloc[0]
    assert then.returncode == 0 and f"{high_then:,.4f}" in then.stdout
    listed = run(cli_env, "series", "show", BARS.id, "--tail", "1")
    assert "780 (2026-03-02 14:30 .. 2026-03-03 20:59)" in listed.stdout
    unknown = run(cli_env, "series", "bars", "nope")
    assert unknown.returncode == 1 and "unknown series: nope" in unknown.stderr


def test_intraday_series_are_not_trained_on(conn, minute):
    """Stored and served as data, not forecast: training registered a version whose backtest,
    stored by date, merged a day's windows into one."""
    from pefm.forecasting.backtest import BacktestSpec
    from pefm.forecasting.base import ForecastInputError
    from pefm.forecasting.training import run_backtest, train

    with pytest.raises(ForecastInputError, match=r"intraday series are not forecast yet: spy\.1min"):
        train(conn, "naive", ["spy.1min"], spec=None)
    with pytest.raises(ForecastInputError, match="not forecast yet"):
        run_backtest(conn, "naive", ["spy.1min"], BacktestSpec(h=2, windows=3))
    assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == 0
