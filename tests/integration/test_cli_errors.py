"""How the ``pefm`` command refuses what it cannot do: one line naming what is wrong, the exit
status saying which kind (2: an option or argument, 1: the rest), never a traceback; and the
text it prints, the user's and the catalog's included, printed as it is."""

import inspect
import os
import re
import socket
import subprocess
import sys

import pytest
import typer
from rich.text import Text

from pefm.cli import app, open_db
from pefm.local.runtime import free_port
from pefm.storage.observations import UnknownSeriesError

PEFM = [sys.executable, "-m", "pefm.cli"]


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PEFM, *args], env={**env, "COLUMNS": "120"}, capture_output=True, text=True, timeout=timeout
    )


def said(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The refusal, its lines joined, once it is known to be one with exit status ``code``."""
    assert result.returncode == code and "Traceback" not in result.stderr, result.stdout + result.stderr
    return " ".join(result.stderr.split())


def test_a_database_that_does_not_answer_is_one_line_within_seconds(tmp_path):
    """It was the pool's 30 s wait, then a 210-line traceback ending in PoolTimeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFM_")}
    env.update(PEFM_DATABASE_URL=f"postgresql://u:secret@127.0.0.1:{free_port()}/x", PEFM_HOME=str(tmp_path))
    refused = run(env, "data", "list", timeout=60)
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    message = said(refused)
    # the probe's one connection, refused at once (cli.PROBE_SECONDS at most): the pool would have
    # waited its 30 s and said PoolTimeout
    assert message.startswith("error: cannot reach the database (") and "Connection refused" in message, message
    assert "secret" not in message and "password=***" in message


def test_text_from_users_and_the_catalog_is_printed_as_it_is(db, cli_env, tmp_path):  # db: migrated
    """Brackets were read as rich markup: '[red]x' lost its tag, '[/red]' crashed the command
    (MarkupError), and a series named with a closing tag crashed every `series show` of it."""
    for cell in ("[red]x", "[/red]"):
        csv = tmp_path / "bad.csv"
        csv.write_text(f"DATE,GDPC1\n2020-01-01,100\n2020-04-01,{cell}\n")
        assert f"line 3, value: '{cell}' is not a finite number" in said(run(cli_env, "data", "load-csv", str(csv)))
    assert said(run(cli_env, "series", "show", "gdp[/x]")) == "error: unknown series: gdp[/x]"
    assert "v[/x]" in said(run(cli_env, "models", "show", "v[/x]"))
    fred = said(
        run(
            {**cli_env, "PEFM_FRED_API_KEY": "k" * 32, "PEFM_FRED_URL": "http://127.0.0.1:9"},
            "data",
            "fetch",
            "fred",
            "GDP[/x]",
        )
    )
    assert fred.startswith("error: ") and "MarkupError" not in fred  # its spinner's text had been markup
    prices = tmp_path / "brent.csv"
    prices.write_text("DATE,BRENT\n" + "".join(f"2020-{m:02d}-01,{50 + m}\n" for m in range(1, 13)))
    created = run(
        cli_env,
        *("data", "load-csv", str(prices), "--frequency", "M"),
        *("--name", "Brent crude [/spot]", "--unit", "US$ per barrel [fob]"),
    )
    assert created.returncode == 0, created.stderr
    shown = run(cli_env, "series", "show", "brent")
    assert shown.returncode == 0, shown.stderr
    assert "brent  Brent crude [/spot]" in shown.stdout and "unit         US$ per barrel [fob]" in shown.stdout
    trained = run(cli_env, "train", "--model", "naive", "-s", "brent", "--windows", "0")
    version = re.search(r"registered (naive-\S+)", trained.stdout).group(1)
    forecast = run(cli_env, "forecast", "brent", "--version", version, "-h", "2")
    assert forecast.returncode == 0, forecast.stderr
    assert "brent (level space: US$ per barrel [fob])" in forecast.stdout
    empty = tmp_path / "gates.toml"
    empty.write_text("")
    gated = said(run(cli_env, "gate", "--candidate", version, "--policy", str(empty)))
    assert gated == f"error: {empty}: no [[rule]] in the policy"


def test_bootstrap_refuses_a_timeout_that_is_no_wait_and_a_busy_lock_is_one_line(db, cli_env):
    """--timeout 0 waited for ever (lock_timeout 0 is none), a negative one was PostgreSQL's
    traceback, and a lock still busy after it a LockBusy traceback."""
    with db.advisory_lock("pefm.bootstrap", wait=False) as (held, _):
        assert held
        for seconds in ("0", "-1", "3000000", "inf"):  # past lock_timeout's integer of milliseconds too
            assert "--timeout" in said(run(cli_env, "bootstrap", "--timeout", seconds, timeout=60), code=2)
        busy = said(run(cli_env, "bootstrap", "--timeout", "0.5", timeout=60))
    assert busy == "error: pefm.bootstrap: busy for over 0.5 s; try again"


DASHBOARD = "the dashboard (--dashboard-port)"


def test_ports_out_of_range_or_taken_are_refused_before_anything_starts(cli_env):
    """`pefm up --port 65530` put the rollout API on 65540 (OverflowError once trained), `serve
    --port 70000` an OverflowError, and a port taken a bare Exception from func-python."""
    assert "--port" in said(run(cli_env, "up", "--port", "65530"), code=2)
    assert "--dashboard-port" in said(run(cli_env, "up", "--dashboard-port", "70000"), code=2)
    assert "--port" in said(run(cli_env, "serve", "inference", "--port", "70000"), code=2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for service in ("inference", "rollout"):
            refused = said(run(cli_env, "serve", service, "--port", str(port), timeout=60))
            assert refused.startswith(f"error: cannot listen on 127.0.0.1:{port}: "), refused
        # pefm up: before the migration, the data and any training (it had found it once three
        # functions had started, minutes into a first run)
        up = run(cli_env, "up", "--dashboard-port", str(port), timeout=60)
        assert said(up) == f"error: port in use (another PEFM stack, or another program): {DASHBOARD}: {port}"
        assert "database:" not in up.stdout  # nothing migrated, loaded or trained
    assert "three ports" in said(run(cli_env, "up", "--port", "8100", "--dashboard-port", "8110"), code=2)


def test_a_bugs_key_error_is_not_taken_for_a_thing_that_does_not_exist(schema_url, monkeypatch):
    """open_db made any LookupError one line ("error: 'frequency'"); as in main(), only those
    that say a thing asked for does not exist."""
    from pefm.config import get_settings

    monkeypatch.setenv("PEFM_DATABASE_URL", schema_url)
    get_settings.cache_clear()
    try:
        with pytest.raises(KeyError), open_db(schema="unchecked"):
            raise KeyError("frequency")
        with pytest.raises(IndexError), open_db(schema="unchecked"):
            raise IndexError("list index out of range")
        with pytest.raises(typer.Exit), open_db(schema="unchecked"):
            raise UnknownSeriesError(["nope"])
    finally:
        get_settings.cache_clear()


def test_the_progress_bar_counts_the_windows_the_backtest_reports(db, conn):
    """A univariate model's series ending on different dates each have their own cutoffs, and
    on_window reports each distinct one: the bar's windows x groups was overshot."""
    from pefm.cli.forecasting import window_count
    from pefm.data.bundled import bundled
    from pefm.data.loading import load_bundled
    from pefm.forecasting.backtest import BacktestSpec
    from pefm.forecasting.training import run_backtest

    load_bundled(conn, bundled(["realgdp", "sp500"]))  # ending 2009 and 2018
    spec = BacktestSpec(h=2, windows=5)
    reported = []
    run_backtest(conn, "naive", ["realgdp", "sp500"], spec, on_window=reported.append)
    assert window_count(conn, "naive", ["realgdp", "sp500"], {}, spec, None) == len(reported) == 10


def test_help_lists_one_line_per_command_and_every_option_says_what_it_does():
    """The command lists kept the docstrings' line breaks, brackets in help ('[default: 8050]')
    were read as markup and vanished, and --step, --refit-every and --reason said nothing."""
    root = typer.main.get_command(app)

    def commands(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from commands(sub, f"{path} {name}")

    for path, command in commands(root, "pefm"):
        assert "\n" not in inspect.cleandoc(command.help or "").split("\n\n")[0], path
        for text in (command.help or "", *(p.help or "" for p in command.params if hasattr(p, "help"))):
            assert Text.from_markup(text).plain == text, (path, text)
        for option in command.params:
            assert option.param_type_name == "argument" or option.help, (path, option.name)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--windows", "-1"),
        ("train", "--h", "0"),
        ("train", "--step", "0"),
        ("backtest", "--windows", "0"),
        ("backtest", "--refit-every", "0"),
    ],
)
def test_backtest_options_out_of_range_are_refused_naming_the_option(cli_env, args):
    assert args[1] in said(run(cli_env, *args), code=2)


def test_a_date_option_that_is_no_date_is_refused_naming_it(db, cli_env):  # db: migrated
    """`series show --as-of notadate` was pandas' "Unknown datetime string format" and exit 1."""
    assert run(cli_env, "data", "load", "realgdp").returncode == 0
    for option in ("--as-of", "--start", "--end"):
        for command in ("show", "bars"):
            refused = said(run(cli_env, "series", command, "realgdp", option, "notadate"), code=2)
            assert option in refused and "not a date: 'notadate'" in refused, refused
