import threading
import time
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pytest

from pefm.data.frequency import Frequency
from pefm.storage.observations import (
    Event,
    UnknownSeriesError,
    VintageConflictError,
    last_changed,
    read_frame,
    read_series,
    write_events,
    write_observations,
)
from pefm.storage.series import SeriesInUseError, SeriesMeta, get_series, list_series, upsert_series

GDP = SeriesMeta(id="gdp", name="GDP", frequency=Frequency.QUARTERLY, unit="bn")
V1 = datetime(2020, 4, 30, tzinfo=UTC)
V2 = datetime(2020, 5, 28, tzinfo=UTC)


def obs(series_id: str, values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"series_id": series_id, "ts": pd.to_datetime(list(values)), "value": list(values.values())})


def row_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM observations").fetchone()[0]


@pytest.fixture
def gdp(conn: psycopg.Connection) -> SeriesMeta:
    assert upsert_series(conn, GDP) is True
    return GDP


def test_series_metadata_upsert_creates_then_updates(conn, gdp):
    assert upsert_series(conn, SeriesMeta(**{**gdp.__dict__, "unit": "trn"})) is False
    assert get_series(conn, "gdp").unit == "trn"
    assert [s.id for s in list_series(conn)] == ["gdp"]
    assert get_series(conn, "nope") is None


def test_a_frequency_change_racing_the_first_observations_is_refused(db, gdp):
    """A PUT waiting for the row a first write holds saw, once it had the row, the snapshot from
    before the write committed: it changed the frequency of a series that had data by then."""
    changed = SeriesMeta(**{**gdp.__dict__, "frequency": Frequency.MONTHLY})
    outcome: list[object] = []
    with db.connection() as writer, db.connection() as other:
        with writer.transaction():
            write_observations(writer, obs("gdp", {"2020-01-01": 1.0}), vintage=V1)  # holds gdp FOR SHARE

            def change() -> None:
                try:
                    outcome.append(upsert_series(other, changed))
                except SeriesInUseError as exc:
                    outcome.append(exc)

            racing = threading.Thread(target=change)
            racing.start()
            time.sleep(0.5)  # long enough to be waiting for the row
            assert outcome == [] and racing.is_alive()
        racing.join(10)  # the writer committed
    assert len(outcome) == 1 and isinstance(outcome[0], SeriesInUseError), outcome
    with db.connection() as conn:
        assert get_series(conn, "gdp").frequency is Frequency.QUARTERLY


def test_a_write_slower_to_its_lock_gets_the_later_vintage(db, gdp):
    """Two writes of one observation without a vintage: the one whose transaction began first but
    reached the series' lock last commits last, and must be the latest value (with the
    transaction's start as its vintage it was hidden behind the other, and rewrote the past)."""
    with db.connection() as slow, db.connection() as fast:
        with slow.transaction():
            slow.execute("SELECT 1")  # its transaction has begun (parsing a large upload, say)
            time.sleep(0.05)
            write_observations(fast, obs("gdp", {"2020-01-01": 2.0}))
            write_observations(slow, obs("gdp", {"2020-01-01": 3.0}))
        latest = read_series(slow, "gdp")
    assert latest.loc["2020-01-01"] == 3.0


@pytest.mark.parametrize("path", ["frame", "events"])
def test_a_backdated_write_slower_to_its_lock_moves_when_the_data_last_changed(db, gdp, path):
    """``ingested_at`` is stamped once the write holds its series' locks, as a vintage is. A
    backdated write whose transaction began before another write of the same group but committed
    after it must move "when what was known then last changed" (``last_changed``: the key of kept
    as-of answers); stamped with its transaction's start it fell behind the other and moved
    nothing, so an answer kept from before it stayed in use."""
    other = SeriesMeta(id="gnp", name="GNP", frequency=Frequency.QUARTERLY, unit="bn")
    with db.connection() as slow, db.connection() as fast:
        upsert_series(fast, other)
        with slow.transaction():
            slow.execute("SELECT 1")  # its transaction has begun (waiting on a series row, say)
            time.sleep(0.05)
            write_observations(fast, obs("gnp", {"2020-01-01": 2.0}), vintage=V1)
            before = last_changed(fast, ["gdp", "gnp"], V2)
            if path == "frame":
                write_observations(slow, obs("gdp", {"2020-01-01": 3.0}), vintage=V1)
            else:
                slow.execute("SELECT 1 FROM series WHERE id = 'gdp' FOR SHARE")
                stamp = datetime(2020, 1, 1, tzinfo=UTC)
                assert write_events(slow, [Event(["gdp"], [stamp], [3.0], vintage=V1)])[0].inserted == 1
        after = last_changed(fast, ["gdp", "gnp"], V2)
    assert before is not None and after > before


def test_a_revision_is_a_new_vintage_and_as_of_reads_see_the_old_value_before_it(conn, gdp):
    first = write_observations(conn, obs("gdp", {"2020-01-01": 100.0, "2019-10-01": 99.0}), vintage=V1)
    assert (first.inserted, first.revised, first.unchanged, first.vintage) == (2, 0, 0, V1)
    revised = write_observations(conn, obs("gdp", {"2020-01-01": 98.5, "2019-10-01": 99.0}), vintage=V2)
    assert (revised.inserted, revised.revised, revised.unchanged) == (0, 1, 1)
    assert row_count(conn) == 3  # history kept: the old 100.0 is still stored

    latest = read_series(conn, "gdp")
    assert latest.loc["2020-01-01"] == 98.5
    before = read_series(conn, "gdp", as_of=datetime(2020, 5, 1, tzinfo=UTC))
    assert before.loc["2020-01-01"] == 100.0
    at_revision = read_series(conn, "gdp", as_of=V2)
    assert at_revision.loc["2020-01-01"] == 98.5
    assert read_series(conn, "gdp", as_of="2020-01-01").empty  # nothing was known yet


def test_a_write_of_several_vintages_over_stored_data_keeps_every_vintage(conn, gdp):
    """ALFRED's re-fetch: rows carrying their own vintages, several per date, over dates already
    stored. Each row is classified against what was known at its own vintage, stored or brought by
    the same write (one per date was kept before, the other revisions dropped uncounted; then a
    return to an earlier value was taken for no change)."""

    def vintaged(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["ts", "vintage", "value"]).assign(series_id="gdp")
        return frame.assign(ts=pd.to_datetime(frame["ts"]), vintage=pd.to_datetime(frame["vintage"], utc=True))

    first = write_observations(
        conn, vintaged([("2020-01-01", "2020-04-30", 100.0), ("2020-01-01", "2020-07-30", 99.0)])
    )
    assert (first.inserted, first.revised, first.unchanged) == (1, 1, 0)  # a date, then its revision
    again = write_observations(
        conn,
        vintaged(
            [
                ("2020-01-01", "2020-04-30", 100.0),  # stored
                ("2020-01-01", "2020-05-28", 101.0),  # a revision between the two stored ones
                ("2020-01-01", "2020-06-25", 100.0),  # back to the first value: a revision of 05-28's
                ("2020-01-01", "2020-07-30", 99.0),  # stored
                ("2020-01-01", "2020-08-27", 99.0),  # as known since 07-30: unchanged
                ("2020-01-01", "2020-09-24", 98.0),  # the newest revision
            ]
        ),
    )
    assert (again.inserted, again.revised, again.unchanged) == (0, 3, 3)
    for moment, value in (
        ("2020-05-01", 100.0),
        ("2020-06-01", 101.0),
        ("2020-07-01", 100.0),
        ("2020-08-01", 99.0),
        ("2020-10-01", 98.0),
    ):
        assert read_series(conn, "gdp", as_of=moment).loc["2020-01-01"] == value, moment
    assert row_count(conn) == 5


def test_a_first_write_of_several_vintages_is_classified_as_a_write_over_stored_data(conn, gdp):
    """Nothing stored in the span takes the COPY path: a vintage repeating its date's last value
    is unchanged there too, not stored (it had been, and counted as inserted)."""
    rows = pd.DataFrame(
        {
            "series_id": "gdp",
            "ts": pd.to_datetime(["2020-01-01", "2020-01-01", "2020-01-01", "2020-04-01"]),
            "vintage": pd.to_datetime(["2020-02-15", "2020-03-15", "2020-04-15", "2020-05-15"], utc=True),
            "value": [1.0, 1.0, 1.5, 2.0],
        }
    )
    result = write_observations(conn, rows)
    assert (result.inserted, result.revised, result.unchanged) == (2, 1, 1)
    assert row_count(conn) == 3
    assert read_series(conn, "gdp", as_of="2020-03-20").tolist() == [1.0]
    assert read_series(conn, "gdp").tolist() == [1.5, 2.0]


def test_rewriting_identical_values_is_a_no_op(conn, gdp):
    data = obs("gdp", {"2020-01-01": 100.0})
    write_observations(conn, data, vintage=V1)
    again = write_observations(conn, data, vintage=V2)
    assert (again.inserted, again.revised, again.unchanged) == (0, 0, 1)
    assert row_count(conn) == 1


def test_a_different_value_at_the_same_vintage_is_refused_and_nothing_is_written(conn, gdp):
    write_observations(conn, obs("gdp", {"2020-01-01": 100.0}), vintage=V1)
    with pytest.raises(VintageConflictError, match=r"stored 100\.0, got 101\.0"):
        write_observations(conn, obs("gdp", {"2020-04-01": 7.0, "2020-01-01": 101.0}), vintage=V1)
    assert row_count(conn) == 1  # the valid 2020-04-01 row did not land either


def test_unknown_series_are_refused_and_nothing_is_written(conn, gdp):
    payload = pd.concat([obs("gdp", {"2020-01-01": 1.0}), obs("cpi", {"2020-01-01": 2.0})])
    with pytest.raises(UnknownSeriesError, match="cpi"):
        write_observations(conn, payload, vintage=V1)
    assert row_count(conn) == 0
    with pytest.raises(UnknownSeriesError):
        read_series(conn, "cpi")


def test_without_a_vintage_the_write_is_stamped_with_the_transaction_time(conn, gdp):
    conn.commit()
    before = datetime.now(UTC)
    result = write_observations(conn, obs("gdp", {"2020-01-01": 1.0}))
    assert before <= result.vintage <= datetime.now(UTC)
    stored = conn.execute("SELECT vintage, source FROM observations").fetchone()
    assert stored[0] == result.vintage


def test_read_series_windows_and_frequency(conn, gdp):
    quarters = pd.date_range("2000-01-01", periods=8, freq="QS")
    write_observations(conn, obs("gdp", {str(q.date()): float(i) for i, q in enumerate(quarters)}), vintage=V1)
    full = read_series(conn, "gdp")
    assert full.name == "gdp"
    assert full.index.freqstr == "QS-JAN"
    assert full.attrs["frequency"] is Frequency.QUARTERLY
    window = read_series(conn, "gdp", start="2000-07-01", end="2001-01-01")
    assert window.index.tolist() == list(pd.to_datetime(["2000-07-01", "2000-10-01", "2001-01-01"]))


def test_read_frame_aligns_series_as_known_at_a_moment(conn, gdp):
    upsert_series(conn, SeriesMeta(id="unemp", name="Unemployment", frequency=Frequency.QUARTERLY))
    write_observations(conn, obs("gdp", {"2020-01-01": 1.0, "2020-04-01": 2.0}), vintage=V1)
    write_observations(conn, obs("unemp", {"2020-04-01": 5.0}), vintage=V1)
    write_observations(conn, obs("unemp", {"2020-04-01": 6.0}), vintage=V2)
    frame = read_frame(conn, ["unemp", "gdp"], as_of=V1)
    assert list(frame.columns) == ["unemp", "gdp"]
    assert frame.loc["2020-04-01"].tolist() == [5.0, 2.0]
    assert pd.isna(frame.loc["2020-01-01", "unemp"])
    assert frame.index.freqstr == "QS-JAN"
    assert read_frame(conn, ["unemp", "gdp"]).loc["2020-04-01", "unemp"] == 6.0
    with pytest.raises(UnknownSeriesError, match="cpi"):
        read_frame(conn, ["gdp", "cpi"])


def test_values_round_trip_exactly(conn, gdp):
    values = {"2020-01-01": 0.1 + 0.2, "2020-04-01": -1.2345678901234567e-300, "2020-07-01": 1e308}
    write_observations(conn, obs("gdp", values), vintage=V1)
    assert read_series(conn, "gdp").tolist() == list(values.values())
    again = write_observations(conn, obs("gdp", values), vintage=V2)
    assert again.unchanged == 3


def test_a_business_daily_series_keeps_its_calendar_once_it_has_data(conn):
    """Adding an exchange calendar to a series with data left holiday values stored that the
    series then refused to have corrected: the calendar is fixed once data are stored, as the
    frequency and transform are."""
    meta = SeriesMeta(id="bd", name="BD", frequency=Frequency.BUSINESS_DAILY)
    upsert_series(conn, meta)
    write_observations(conn, obs("bd", {"2019-01-01": 1.0, "2019-01-02": 2.0}), vintage=V1)
    with pytest.raises(SeriesInUseError) as info:
        upsert_series(conn, SeriesMeta(**{**meta.__dict__, "calendar": "XNYS"}))
    assert info.value.fields == ["calendar"]
    assert get_series(conn, "bd").calendar == ""


def _then_a_frequency_change(db, check, raced: list[str]):
    """``check``, then another session's try to make the monthly series ``unrate`` (created here)
    quarterly, within half a second: ``raced`` records whether it changed it or had to wait."""
    with db.connection() as conn:
        upsert_series(conn, SeriesMeta(id="unrate", name="U", frequency=Frequency.MONTHLY))

    def check_then_race(*args) -> None:
        check(*args)
        with db.connection() as other:
            other.execute("SET lock_timeout = '500ms'")
            try:
                upsert_series(other, SeriesMeta(id="unrate", name="U", frequency=Frequency.QUARTERLY))
                raced.append("changed")
            except psycopg.errors.LockNotAvailable:
                raced.append("waited")

    return check_then_race


def test_a_csv_load_holds_its_series_from_the_check_to_the_write(db, tmp_path, monkeypatch):
    """A frequency change committed between a CSV load's check of its dates and its write stored
    monthly rows in a series that had become quarterly: the load now holds the series' row from
    the check on, so the change waits for it (and then finds data, and is refused)."""
    from pefm.data import loading

    raced: list[str] = []
    monkeypatch.setattr(loading, "_check_fits", _then_a_frequency_change(db, loading._check_fits, raced))
    path = tmp_path / "u.csv"
    path.write_text("DATE,UNRATE\n2020-01-01,3.5\n2020-02-01,3.6\n")
    with db.connection() as conn:
        loading.load_csv(conn, path)
        assert raced == ["waited"]
        assert get_series(conn, "unrate").frequency is Frequency.MONTHLY


def test_a_large_ingest_write_holds_its_series_from_the_check_to_the_write(db, monkeypatch):
    """The ingest function's large-write path (a CSV upload, written by COPY) is the same race as
    a CSV load's: the series' rows are held FOR SHARE from the check on, so a frequency change
    waits for the write. In process (the service's own write method on a real PostgreSQL), since
    the race is staged between two statements of one request."""
    from pefm.config import Settings
    from pefm.data.json_payload import observations_from_object
    from pefm.serving.cache import MemoryCache
    from pefm.serving.ingest import IngestService
    from pefm.serving.observability import ServiceMetrics

    service = IngestService(Settings(), db, ServiceMetrics("ingest", "test"), MemoryCache(None, 1 << 20))
    raced: list[str] = []
    monkeypatch.setattr(service, "_check", _then_a_frequency_change(db, service._check, raced))
    rows = [{"ts": "2020-01-01", "value": 3.5}, {"ts": "2020-02-01", "value": 3.6}]
    payload = observations_from_object({"series": [{"series_id": "unrate", "observations": rows}]})
    result = service._write(payload, "test")
    assert raced == ["waited"] and result["inserted"] == 2
    with db.connection() as conn:
        assert get_series(conn, "unrate").frequency is Frequency.MONTHLY


def test_events_of_a_new_weekly_series_committed_together_keep_one_weekday(db):
    """Streamed events are checked one by one in a group commit: two of a weekly series with no
    data yet, on different weekdays, were both stored. The first accepted fixes the weekday."""
    from pefm.config import Settings
    from pefm.data.json_payload import observations_from_object
    from pefm.serving.cache import MemoryCache
    from pefm.serving.http import ApiError
    from pefm.serving.ingest import IngestService
    from pefm.serving.observability import ServiceMetrics

    with db.connection() as conn:
        upsert_series(conn, SeriesMeta(id="claims", name="C", frequency=Frequency.WEEKLY))
    service = IngestService(Settings(), db, ServiceMetrics("ingest", "test"), MemoryCache(None, 1 << 20))

    def event(day: str):
        return observations_from_object({"series_id": "claims", "observations": [{"ts": day, "value": 1.0}]})

    saturday, friday = service._write_group([(event("2024-01-06"), "test"), (event("2024-01-12"), "test")])
    assert saturday["inserted"] == 1
    assert isinstance(friday, ApiError) and friday.status == 422
    with db.connection() as conn:
        assert read_series(conn, "claims").index.strftime("%Y-%m-%d").tolist() == ["2024-01-06"]


def test_recent_start_bounds_a_read_to_the_last_points_known_then(conn, gdp):
    """A chart's read of a long series starts at its last points known at the moment asked
    (a year of minute bars is half a million rows; the dashboard drew 80 after reading them all)."""
    from pefm.storage.observations import recent_start
    from pefm.storage.series import series_spans

    quarters = pd.date_range("1950-01-01", periods=240, freq="QS")
    write_observations(conn, obs("gdp", dict(zip(quarters.strftime("%Y-%m-%d"), range(240), strict=True))), vintage=V1)
    write_observations(conn, obs("gdp", {"2000-01-01": 99.0}), vintage=V2)  # a revision: one timestamp, two rows
    start = recent_start(conn, "gdp", None, 200)
    assert pd.Timestamp(start).tz_convert(None) == quarters[40]
    assert len(read_frame(conn, ["gdp"], start=start)) == 200
    before = recent_start(conn, "gdp", datetime(2020, 5, 1, tzinfo=UTC), 100)  # known then: V1's rows
    assert pd.Timestamp(before).tz_convert(None) == quarters[140]
    assert recent_start(conn, "gdp", None, 241) is None  # fewer: read it whole
    assert recent_start(conn, "nope", None, 10) is None
    span = series_spans(conn)["gdp"]
    assert (span.first, span.last, span.known_since) == (
        quarters[0].tz_localize(UTC),
        quarters[-1].tz_localize(UTC),
        V2,
    )
