"""Further series for the accuracy benchmark (``bench/accuracy.py --series CSV``): what a file must
hold, and that each mistake is named by its line and column before any backtest runs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pefm.data.frequency import Frequency

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name: str):
    """A module of bench/ by its file, under a name of its own: bench/ is not put on sys.path,
    where its ``dashboard.py`` would shadow the project's ``dashboard`` package for every test."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


broad_set = _bench_module("broad_set")
frames_by_frequency, series_from_csv = broad_set.frames_by_frequency, broad_set.series_from_csv

GOOD = """series_id,ds,value,frequency,transform,season_length
gdp,2000-01-01T00:00:00Z,100,Q,log_diff_ann,
gdp,2000-04-01T00:00:00Z,101,Q,log_diff_ann,
gdp,2000-07-01T00:00:00Z,103,Q,log_diff_ann,
gdp,2000-10-01T00:00:00Z,,Q,log_diff_ann,
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
    # the empty value is skipped, and so is the growth across it (two quarters', not one's)
    growth = gdp.series()
    assert list(growth.index) == list(pd.to_datetime(["2000-04-01", "2000-07-01"]))
    assert growth.iloc[0] == pytest.approx(400 * np.log(101 / 100))
    assert list(sales.series()) == [5.0, 6.5, 4.0]
    frames = frames_by_frequency(list(entries.values()))
    assert set(frames) == {Frequency.QUARTERLY, Frequency.MONTHLY, Frequency.ANNUAL}
    assert frames[Frequency.QUARTERLY].attrs["transforms"] == {"gdp": "log_diff_ann"}


HEADER = "series_id,ds,value,frequency,transform\n"


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
