"""Further series for the accuracy benchmark (``bench/accuracy.py --series CSV``): what a file must
hold, and that each mistake is named by its line and column before any backtest runs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pefm.data.frequency import Frequency
from tests.bench_modules import BENCH, bench_module

broad_set = bench_module("broad_set")
frames_by_frequency, series_from_csv = broad_set.frames_by_frequency, broad_set.series_from_csv

GOOD = """series_id,ds,value,frequency,transform,season_length
gdp,2000-01-01T00:00:00Z,100,Q,log_diff_ann,
gdp,2000-04-01T00:00:00Z,,Q,log_diff_ann,
gdp,2000-07-01T00:00:00Z,101,Q,log_diff_ann,
gdp,2000-10-01T00:00:00Z,103,Q,log_diff_ann,
gdp,2001-01-01T00:00:00Z,104,Q,log_diff_ann,
sales,2001-01-01,5,M,,
sales,2001-02-01,6.5,M,,
sales,2001-03-01,4,M,,
flow,1990-01-01,7,A,none,3
flow,1991-01-01,8,A,none,3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "further.csv"
    path.write_text(text)
    return path


def test_a_file_of_further_series_becomes_benchmark_entries(tmp_path):
    entries = {e.id: e for e in series_from_csv(write(tmp_path, GOOD))}
    assert list(entries) == ["gdp", "sales", "flow"]
    gdp, sales, flow = entries["gdp"], entries["sales"], entries["flow"]
    assert (gdp.frequency, gdp.transform, gdp.season_length) == (Frequency.QUARTERLY, "log_diff_ann", 4)
    assert (sales.frequency, sales.transform, sales.season_length) == (Frequency.MONTHLY, "none", 12)
    assert (flow.frequency, flow.season_length) == (Frequency.ANNUAL, 3)
    # the empty value breaks the series: only the stretch after it is kept, and the note says so
    growth = gdp.series()
    assert list(growth.index) == list(pd.to_datetime(["2000-10-01", "2001-01-01"]))
    assert growth.iloc[0] == pytest.approx(400 * np.log(103 / 101))
    assert gdp.note.startswith("gdp: line 3 has no value; only its last unbroken stretch is benchmarked")
    assert "2000-07-01..2001-01-01, 3 of 4 values (from line 4)" in gdp.note
    assert list(sales.series()) == [5.0, 6.5, 4.0]
    assert sales.note == flow.note == ""
    frames = frames_by_frequency(list(entries.values()))
    assert set(frames) == {Frequency.QUARTERLY, Frequency.MONTHLY, Frequency.ANNUAL}
    assert frames[Frequency.QUARTERLY].attrs["transforms"] == {"gdp": "log_diff_ann"}


HEADER = "series_id,ds,value,frequency,transform\n"


def _rows(series_id: str, freq: str, dates, values) -> str:
    return "".join(f"{series_id},{d:%Y-%m-%d},{v},{freq},none\n" for d, v in zip(dates, values, strict=True))


def test_a_series_with_gaps_keeps_its_last_unbroken_stretch(tmp_path):
    """statsforecast is handed a series by position, PEFM's backtest works by date: across a gap
    they would score different targets (the run used to crash after every job on an assert)."""
    months = pd.date_range("2000-01-01", periods=12, freq="MS")
    values = [str(v) for v in range(12)]
    values[3] = ""  # an empty value: line 5
    kept = [k for k in range(12) if k != 8]  # 2000-09-01 has no row
    monthly = _rows("m", "M", months[kept], [values[k] for k in kept])
    days = pd.date_range("2001-01-01", periods=6, freq="D").delete(2)  # a calendar day missing
    daily = _rows("d", "D", days, range(5))
    weekdays = pd.bdate_range("2001-01-01", periods=6).delete(2)  # a weekday missing: a holiday
    business = _rows("b", "B", weekdays, range(5))
    entries = {e.id: e for e in series_from_csv(write(tmp_path, HEADER + monthly + daily + business))}

    m = entries["m"]
    assert list(m.series().index) == list(months[9:])
    assert list(m.series()) == [9.0, 10.0, 11.0]
    assert m.note == (
        "m: 2 gaps, the last: no row for 2000-09-01 (between lines 9 and 10); only its last unbroken "
        "stretch is benchmarked, 2000-10-01..2000-12-01, 3 of 10 values (from line 10)"
    )
    assert list(entries["d"].series()) == [2.0, 3.0, 4.0]
    assert entries["d"].note.startswith("d: no row for 2001-01-03 (between lines 14 and 15)")
    assert list(entries["b"].series()) == [0.0, 1.0, 2.0, 3.0, 4.0] and entries["b"].note == ""


def test_an_empty_value_alone_is_named_by_its_line(tmp_path):
    quarters = pd.date_range("2000-01-01", periods=6, freq="QS")
    (entry,) = series_from_csv(write(tmp_path, HEADER + _rows("q", "Q", quarters, [1, 2, "", 4, 5, 6])))
    assert entry.note.startswith("q: line 4 has no value; ")
    assert list(entry.series()) == [4.0, 5.0, 6.0]
    # rows out of order are read in date order: the same gap, the same stretch
    shuffled = HEADER + _rows("q", "Q", quarters[::-1], [6, 5, 4, "", 2, 1])
    (entry,) = series_from_csv(write(tmp_path, shuffled))
    assert entry.note.startswith("q: line 5 has no value; ") and list(entry.series()) == [4.0, 5.0, 6.0]


def test_the_protocol_leaves_out_a_series_too_short_for_it(tmp_path):
    broad_run = bench_module("broad_run")
    months = pd.date_range("2000-01-01", periods=40, freq="MS")
    body = _rows("long", "M", months, range(40)) + _rows("short", "M", months[:25], range(25))
    entries = series_from_csv(write(tmp_path, HEADER + body))
    # 6 origins, each followed by 8 values, the first after a season (12) and one point: 26 points
    assert broad_run.too_short(entries, windows=6) == {
        "short": "25 points; 6 origins with h=8 and season length 12 need 26"
    }
    assert broad_run.too_short(entries, windows=5) == {}


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ("a,2000-01-01,1,Q,none\na,2000-02-01,2,Q,none\n", "line 3, column ds", "not a quarterly period start"),
        ("a,2000-01-01,1,Q,none\na,2000-04-01,x,Q,none\n", "line 3, column value", "'x' is not a finite number"),
        ("a,2000-01-01,1,Q,none\na,2000-04-01,inf,Q,none\n", "line 3, column value", "not a finite number"),
        ("a,2000-01-01,1,Q,none\na,01/04/2000x,2,Q,none\n", "line 3, column ds", "is not a date"),
        ("a,2000-01-01,1,Q,none\na,2000-01-01,2,Q,none\n", "line 3, column ds", "appears twice in a"),
        ("a,2000-01-01,1,Q,none\na,2000-04-01,2,Q,diff\n", "line 3, column transform", "one value a series"),
        ("a,2000-01-01,1,fortnightly,none\n", "line 2, column frequency", "unknown frequency 'fortnightly'"),
        ("a,2000-01-01,1,5min,none\n", "line 2, column frequency", "not benchmarked"),
        ("a,2000-01-01,1,Q,sqrt\n", "line 2, column transform", "unknown transform 'sqrt'"),
        ("a,2000-01-01,1,Q,log_diff_ann\na,2000-04-01,-2,Q,log_diff_ann\n", "line 3, column value", "must be > 0"),
        (",2000-01-01,1,Q,none\n", "line 2, column series_id", "empty series id"),
        ("a,2000-01-01,,Q,none\na,2000-04-01,,Q,none\n", "line 2, column value", "a has no values"),
    ],
)
def test_each_mistake_is_named_by_line_and_column(tmp_path, body, where, says):
    with pytest.raises(ValueError) as caught:
        series_from_csv(write(tmp_path, HEADER + body))
    assert where in str(caught.value) and says in str(caught.value)


def test_a_bad_season_length_and_missing_columns_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"line 2, column season_length: '0' is not a whole number >= 1"):
        series_from_csv(write(tmp_path, "series_id,ds,value,frequency,season_length\na,2000-01-01,1,Q,0\n"))
    with pytest.raises(ValueError, match=r"missing column\(s\) frequency"):
        series_from_csv(write(tmp_path, "series_id,ds,value\na,2000-01-01,1\n"))
    with pytest.raises(ValueError, match=r"further.csv: not a CSV pandas can read"):
        series_from_csv(write(tmp_path, ""))


def test_the_benchmark_refuses_a_bad_file_before_running_anything(tmp_path):
    """The CLI's answer to a bad file: exit status 2 and the line, not a traceback from a worker."""
    path = write(tmp_path, HEADER + "a,2000-01-01,1,Q,none\na,2000-02-15,2,Q,none\n")
    done = subprocess.run(
        [sys.executable, str(BENCH / "accuracy.py"), "--set", "broad", "--series", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"--series: {path}, line 3, column ds: 2000-02-15 00:00 is not a quarterly period start" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_whose_series_are_all_cut_too_short_stops_before_running_anything(tmp_path):
    """The gap's warning and the reason the series is left out are printed; nothing is backtested."""
    months = pd.date_range("2000-01-01", periods=120, freq="MS")
    values = [str(k) for k in range(120)]
    values[110] = ""  # line 112: nine values after it
    path = write(tmp_path, HEADER + _rows("s1", "M", months, values))
    done = subprocess.run(
        [sys.executable, str(BENCH / "accuracy.py"), "--set", "broad", "--series", str(path), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "s1: line 112 has no value; only its last unbroken stretch is benchmarked" in done.stdout
    assert "s1 left out: 9 points; 6 origins with h=8 and season length 12 need 26" in done.stdout
    assert "no series is long enough for the broad protocol" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_model_is_refused_before_any_data_loads():
    done = subprocess.run(
        [sys.executable, str(BENCH / "accuracy.py"), "--set", "macro", "--models", "ensemble,arma,"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--models: unknown 'arma', ''; expected some of " in done.stderr
    assert "Traceback" not in done.stderr
