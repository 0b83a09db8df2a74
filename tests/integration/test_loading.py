from pathlib import Path

import pandas as pd
import psycopg
import pytest

from pefm.data.bundled import bundled
from pefm.data.frequency import Frequency
from pefm.data.loading import load_bundled, load_csv
from pefm.data.validation import ValidationError
from pefm.storage.observations import UnknownSeriesError, read_frame, read_series
from pefm.storage.series import SeriesMeta, upsert_series


def row_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM observations").fetchone()[0]


def test_bundled_load_is_idempotent_and_reads_back_with_frequencies(conn):
    items = bundled(["realgdp", "infl", "sp500"])
    first = load_bundled(conn, items)
    assert [(r.series_id, r.created, r.result.inserted) for r in first] == [
        ("realgdp", True, 203),
        ("infl", True, 202),
        ("sp500", True, 5031),
    ]
    rows = row_count(conn)
    second = load_bundled(conn, items)
    assert [(r.created, r.result.inserted, r.result.revised) for r in second] == [(False, 0, 0)] * 3
    assert [r.result.unchanged for r in second] == [203, 202, 5031]
    assert row_count(conn) == rows

    gdp = read_series(conn, "realgdp")
    assert gdp.index.freqstr == "QS-JAN" and len(gdp) == 203
    sp500 = read_series(conn, "sp500")
    assert sp500.attrs["frequency"] is Frequency.BUSINESS_DAILY and len(sp500) == 5031
    panel = read_frame(conn, ["realgdp", "infl"])
    assert panel.shape == (203, 2) and panel["infl"].isna().sum() == 1


def test_bundled_values_are_known_from_the_end_of_their_period(conn):
    load_bundled(conn, bundled(["realgdp"]))
    as_of_2000 = read_series(conn, "realgdp", as_of="2000-01-01")
    assert as_of_2000.index[-1] == pd.Timestamp("1999-10-01")  # 1999Q4 ended on 2000-01-01
    assert read_series(conn, "realgdp", as_of="1999-12-31").index[-1] == pd.Timestamp("1999-07-01")


@pytest.fixture
def unrate(conn: psycopg.Connection) -> SeriesMeta:
    meta = SeriesMeta(id="unrate", name="Unemployment rate", frequency=Frequency.MONTHLY)
    upsert_series(conn, meta)
    conn.commit()
    return meta


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_csv_load_then_revision_keeps_history(conn, unrate, tmp_path):
    parsed, result = load_csv(
        conn, write(tmp_path, "DATE,UNRATE\n2020-01-01,3.5\n2020-02-01,.\n"), vintage="2020-02-07"
    )
    assert (result.inserted, parsed.missing) == (1, 1)
    _, revised = load_csv(conn, write(tmp_path, "DATE,UNRATE\n2020-01-01,3.6\n2020-02-01,3.5\n"), vintage="2020-03-06")
    assert (revised.inserted, revised.revised, revised.unchanged) == (1, 1, 0)
    assert read_series(conn, "unrate", as_of="2020-03-01").tolist() == [3.5]
    assert read_series(conn, "unrate").tolist() == [3.6, 3.5]


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("DATE,UNRATE\n2020-01-01,3.5\n2020-02-30,3.6\n", 3, "date"),  # bad date
        ("DATE,UNRATE\n2020-01-01,3.5\n2020-02-01,high\n", 3, "value"),  # non-numeric
        ("DATE,UNRATE\n2020-01-01,3.5\n2020-01-01,3.5\n", 3, "date"),  # duplicate date
        ("DAY,UNRATE\n2020-01-01,3.5\n", 1, "header"),  # wrong header
        ("DATE,UNRATE\n2020-01-01,3.5\n2020-02-15,3.6\n", 3, "date"),  # off the monthly frequency
    ],
)
def test_a_malformed_csv_names_line_and_field_and_writes_nothing(conn, unrate, tmp_path, text, line, field):
    load_csv(conn, write(tmp_path, "DATE,UNRATE\n2019-12-01,3.4\n"), vintage="2020-01-03")
    before = row_count(conn)
    with pytest.raises(ValidationError) as info:
        load_csv(conn, write(tmp_path, text), vintage="2020-03-06")
    assert [(i.line, i.field) for i in info.value.details] == [(line, field)]
    assert row_count(conn) == before


def test_csv_for_an_unknown_series_is_refused_unless_told_how_to_create_it(conn, tmp_path):
    path = write(tmp_path, "DATE,GDPC1\n2020-01-01,1\n")
    with pytest.raises(UnknownSeriesError, match="gdpc1"):
        load_csv(conn, path)
    assert row_count(conn) == 0
    meta = SeriesMeta(id="gdpc1", name="Real GDP", frequency=Frequency.QUARTERLY)
    _, result = load_csv(conn, path, create=meta)
    assert result.inserted == 1


def test_a_csv_value_the_series_transform_cannot_take_is_refused_by_line(conn, tmp_path):
    """Ingest refused a zero for a log-transformed series; a CSV load took it, and every later
    panel of that series (drift checks, retraining) failed on it."""
    meta = SeriesMeta(id="gdpc1", name="Real GDP", frequency=Frequency.QUARTERLY, transform="log_diff_ann")
    upsert_series(conn, meta)
    with pytest.raises(ValidationError) as info:
        load_csv(conn, write(tmp_path, "DATE,GDPC1\n2020-01-01,1\n2020-04-01,0\n"))
    assert [(i.line, i.field) for i in info.value.details] == [(3, "value")]
    assert row_count(conn) == 0


def test_an_all_missing_or_future_csv_is_refused_and_creates_nothing(conn, tmp_path):
    """A file with no values was taken (an empty series created, then a traceback), and a vintage
    after now was stored, hiding every correction loaded before it came."""
    meta = SeriesMeta(id="newser", name="New", frequency=Frequency.MONTHLY)
    with pytest.raises(ValidationError, match="all missing"):
        load_csv(conn, write(tmp_path, "DATE,NEWSER\n2020-01-01,.\n2020-02-01,\n"), create=meta)
    assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 0
    with pytest.raises(ValidationError, match="after now"):
        load_csv(conn, write(tmp_path, "DATE,NEWSER\n2020-01-01,1\n"), create=meta, vintage="2099-01-01")
    assert conn.execute("SELECT count(*) FROM series").fetchone()[0] == 0
    _, result = load_csv(conn, write(tmp_path, "DATE,NEWSER\n2020-01-01,1\n"), create=meta, vintage="2021-01-01")
    assert result.inserted == 1


def test_a_csv_dated_after_its_vintage_is_refused_naming_the_lines(conn, tmp_path):
    """A value stored as known before its period began was read by every as-of read and backtest
    window from that vintage on (a vintage of 0001-01-01 was taken): future data leaked into the past."""
    meta = SeriesMeta(id="gdpc1", name="Real GDP", frequency=Frequency.QUARTERLY)
    upsert_series(conn, meta)
    csv = write(tmp_path, "DATE,GDPC1\n2009-07-01,1\n2009-10-01,2\n2010-01-01,3\n")
    for vintage in ("1700-01-01", "2009-09-30"):
        with pytest.raises(ValidationError, match="after the vintage") as info:
            load_csv(conn, csv, vintage=vintage)
        lines = [3, 4] if vintage.startswith("2009") else [2, 3, 4]
        assert [(i.line, i.field) for i in info.value.details] == [(n, "date") for n in lines]
    for vintage in ("0001-01-01", "1600-01-01"):  # past what a timestamp holds: refused as ingest refuses it
        with pytest.raises(ValidationError, match=r"years 1700\.\.2200"):
            load_csv(conn, csv, vintage=vintage)
    future = tmp_path / "future.csv"
    future.write_text("DATE,GDPC1\n2009-07-01,1\n2199-01-01,3\n")
    with pytest.raises(ValidationError, match=r"after the vintage \(now\)") as info:  # none given: now
        load_csv(conn, future)
    assert [(i.line, i.field) for i in info.value.details] == [(3, "date")]
    assert row_count(conn) == 0
    _, result = load_csv(conn, csv, vintage="2010-01-01")  # the day its last period begins: taken
    assert result.inserted == 3


def test_a_weekly_csv_keeps_the_weekday_of_the_stored_points(conn, tmp_path):
    """Each file's dates shared a weekday, but a second file could move the series to another."""
    meta = SeriesMeta(id="claims", name="Claims", frequency=Frequency.WEEKLY)
    load_csv(conn, write(tmp_path, "DATE,CLAIMS\n2024-01-06,200\n2024-01-13,210\n"), create=meta)
    with pytest.raises(ValidationError) as info:
        load_csv(conn, write(tmp_path, "DATE,CLAIMS\n2024-01-19,220\n2024-01-26,230\n"))
    assert [(i.line, i.field) for i in info.value.details] == [(2, "date"), (3, "date")]
    assert "Saturday" in info.value.details[0].message
    assert read_series(conn, "claims").index.strftime("%Y-%m-%d").tolist() == ["2024-01-06", "2024-01-13"]


def test_a_bundled_id_the_catalog_holds_from_another_source_is_left_alone(conn, tmp_path):
    """A user's own series under a bundled id: loading the bundled data (as every `pefm up` does)
    neither rewrites its metadata nor mixes the bundled values into it, and says so; a bundled
    series already loaded keeps its metadata as it is (written once, when created)."""
    mine = SeriesMeta(id="infl", name="My inflation", frequency=Frequency.MONTHLY, source="csv:infl.csv")
    load_csv(conn, write(tmp_path, "DATE,INFL\n2020-01-01,2.5\n"), create=mine)
    [infl, realgdp] = load_bundled(conn, bundled(["infl", "realgdp"]))
    assert infl.skipped and "csv:infl.csv" in infl.skipped and infl.result.inserted == 0
    assert realgdp.skipped is None and realgdp.created and realgdp.result.inserted == 203
    stored = conn.execute("SELECT name, frequency FROM series WHERE id = 'infl'").fetchone()
    assert stored == ("My inflation", "M")
    assert len(read_series(conn, "infl")) == 1
    conn.execute("UPDATE series SET unit = 'chained 2012 dollars' WHERE id = 'realgdp'")
    again = load_bundled(conn, bundled(["realgdp"]))
    assert again[0].result.unchanged == 203
    assert conn.execute("SELECT unit FROM series WHERE id = 'realgdp'").fetchone()[0] == "chained 2012 dollars"
