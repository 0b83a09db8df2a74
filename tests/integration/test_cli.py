"""The ``pefm`` command as a user runs it: a real process on a real database."""

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

PEFM = [sys.executable, "-m", "pefm.cli"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PEFM, *args], env={**env, "COLUMNS": "120"}, capture_output=True, text=True, timeout=300)


def test_up_loads_the_real_data_and_a_second_up_changes_nothing(cli_env, schema_url):
    first = run(cli_env, "up")
    assert first.returncode == 0, first.stderr
    assert re.search(r"realgdp\s+│\s+quarterly\s+│\s+1959-01-01\s+│\s+2009-07-01\s+│\s+203", first.stdout)
    assert re.search(r"sp500\s+│\s+business daily\s+│\s+1999-01-04\s+│\s+2018-12-31\s+│\s+5031", first.stdout)
    with psycopg.connect(schema_url) as conn:
        rows = conn.execute("SELECT count(*) FROM observations").fetchone()[0]
    second = run(cli_env, "up")
    assert second.returncode == 0, second.stderr
    assert "0 observations inserted, 0 revised" in second.stdout
    with psycopg.connect(schema_url) as conn:
        assert conn.execute("SELECT count(*) FROM observations").fetchone()[0] == rows


def test_up_without_a_url_starts_the_embedded_database_and_reuses_it(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFM_")}
    env["PEFM_HOME"] = str(tmp_path / "home")
    first = run(env, "data", "load", "realgdp")
    assert first.returncode == 0, first.stderr
    assert "1 series; 203 observations inserted" in first.stdout
    second = run(env, "series", "show", "realgdp", "--as-of", "2000-01-01", "--tail", "1")
    assert second.returncode == 0, second.stderr
    assert "164 (1959-01-01 .. 1999-10-01) as of 2000-01-01" in second.stdout
    assert (tmp_path / "home" / "postgres" / "PG_VERSION").exists()
    # stopped cleanly when the last command exited: no server left holding the directory
    assert not (tmp_path / "home" / "postgres" / "postmaster.pid").exists()


def test_load_csv_reports_counts_and_errors_with_line_and_field(cli_env, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("DATE,GDPC1\n2020-01-01,100\n2020-04-01,.\n")
    made = run(
        cli_env,
        "data",
        "load-csv",
        str(good),
        "--frequency",
        "Q",
        "--name",
        "Real GDP",
        "--vintage",
        "2020-05-01",
    )
    assert made.returncode == 0, made.stderr
    assert "gdpc1: 1 inserted, 0 revised, 0 unchanged, 1 missing" in made.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("DATE,GDPC1\n2020-01-01,100\n2020-04-01,n/a\n")
    refused = run(cli_env, "data", "load-csv", str(bad))
    assert refused.returncode == 1
    assert "line 3, value: 'n/a' is not a finite number" in refused.stderr
    unknown = run(cli_env, "series", "show", "nope")
    assert unknown.returncode == 1 and "unknown series: nope" in unknown.stderr
