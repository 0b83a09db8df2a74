"""The ``pefm`` command: the shared app, console and database handling; commands live in
the modules beside this one, by area."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import psycopg
import typer
from psycopg_pool import PoolTimeout
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from pefm.config import ConfigError, get_settings
from pefm.forecasting.registry import ArtifactIntegrityError
from pefm.local.secrets import use_local_secrets
from pefm.storage.database import Database, LockBusy, open_database
from pefm.storage.migrate import MigrationError
from pefm.storage.signing import ArtifactSignatureError

OPTIONS = {"no_args_is_help": True, "pretty_exceptions_show_locals": False}
"""Every command group's: a traceback never prints the locals (tokens, keys, a FRED query's api_key)."""
app = typer.Typer(help="PEFM: forecast economic indicators and market series.", **OPTIONS)
db_app = typer.Typer(help="The database: migrations and status.", **OPTIONS)
data_app = typer.Typer(help="Load and list data.", **OPTIONS)
series_app = typer.Typer(help="Look at one series.", **OPTIONS)
models_app = typer.Typer(help="The model registry.", **OPTIONS)
knative_app = typer.Typer(help="Knative manifests.", **OPTIONS)
rollout_app = typer.Typer(help="Blue-green rollouts by traffic splitting.", **OPTIONS)
drift_app = typer.Typer(help="Drift monitoring.", **OPTIONS)
tracking_app = typer.Typer(help="MLflow, mirroring the registry (PEFM_MLFLOW_TRACKING_URI).", **OPTIONS)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(knative_app, name="knative")
app.add_typer(rollout_app, name="rollout")
app.add_typer(drift_app, name="drift")
app.add_typer(tracking_app, name="tracking")
app.add_typer(data_app, name="data")
app.add_typer(series_app, name="series")

# markup off: what they print (user input, catalog text, error messages) is printed as it is; a
# style is given as one (``style=``, ``Text``), never as [tags] inside the text
console = Console(markup=False)
err = Console(stderr=True, markup=False)
PROBE_SECONDS = 5
"""How long a command waits for a configured database to answer its first connection."""


def error(message: str, label: str = "error") -> None:
    """One line on standard error: ``label:`` in red, then ``message`` as it is."""
    err.print(Text.assemble((f"{label}:", "red"), " ", message), highlight=False, soft_wrap=True)


def warning(label: str, message: str) -> None:
    """One line on standard error: ``label:`` in yellow, then ``message`` as it is."""
    err.print(Text.assemble((f"{label}:", "yellow"), " ", message), highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    """``document`` as indented JSON on standard output, alone (for ``jq`` and scripts): the
    ``--json`` of every command prints through this."""
    print(json.dumps(document, indent=2, default=str))


def redact(url: str) -> str:
    """The URL without its password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(url)
    if parts.pop("password", None):
        parts["password"] = "***"
    return make_conninfo("", **parts)


def moment(text: str | None, option: str) -> datetime | None:
    """A date or time option's value in UTC (a time without a zone is UTC); BadParameter naming
    ``option`` when it is not one."""
    if text is None:
        return None
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        ts = pd.NaT
    if pd.isna(ts):
        raise typer.BadParameter(f"not a date: {text!r}", param_hint=option)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _reach(url: str) -> None:
    """One connection within PROBE_SECONDS: a database that does not answer is one line then, not
    the pool's wait for a connection and its traceback."""
    try:
        psycopg.connect(url, connect_timeout=PROBE_SECONDS).close()
    except psycopg.OperationalError as exc:
        raise ConnectionError(f"cannot reach the database ({redact(url)}): {' '.join(str(exc).split())}") from None


@contextlib.contextmanager
def open_db(*, schema: Literal["migrate", "current", "unchecked"] | None = None) -> Iterator[Database]:
    """The configured database; known failures (a configured database that does not answer within
    PROBE_SECONDS or goes away, a lock another process holds, a thing asked for that does not exist:
    not a bug's KeyError or IndexError) become one red line and exit code 1. ``schema``
    (see ``open_database``): by default the embedded server, which this user owns, is migrated,
    and a configured database must be current (``pefm db migrate`` is the migrator's step). With
    the embedded server, the secrets the environment does not set come from ``$PEFM_HOME/tokens.env``."""
    try:
        settings = get_settings()
        if settings.database_url is None:
            use_local_secrets(settings)
            settings = get_settings()
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe request otherwise
        if settings.database_url is not None:
            _reach(settings.database_url)
        schema = schema or ("migrate" if settings.database_url is None else "current")
        with open_database(settings, schema=schema) as db:
            yield db
    except (
        LookupError,
        ValueError,
        MigrationError,
        ArtifactSignatureError,
        ArtifactIntegrityError,
        LockBusy,
        PoolTimeout,
        psycopg.OperationalError,
    ) as exc:
        if isinstance(exc, KeyError | IndexError):  # a bug's, as main() says
            raise
        error(str(exc) or type(exc).__name__)
        raise typer.Exit(1) from None


def main() -> None:
    """The ``pefm`` command. A setting PEFM cannot use (ConfigError: a rollout spec file it cannot
    read included), arguments or data a model cannot use (ForecastInputError), a thing asked for
    that does not exist (LookupError, not a bug's KeyError or IndexError), a file or connection the
    system refused (OSError), or a Kubernetes API that refused or failed a call
    (ClusterUnavailable), wherever a command meets it, is one red line and exit code 1. SIGTERM
    and SIGHUP unwind the command as Ctrl-C does (exit code 128 + the signal): Python's default
    for them ends the process at once, its ``with`` blocks and atexit handlers not run, and the
    embedded PostgreSQL it held left running. ``pefm up``'s stack sets its own once it starts."""
    from pefm.forecasting.base import ForecastInputError
    from pefm.rollout.cluster import ClusterUnavailable

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:  # one ignored (nohup) stays ignored
            signal.signal(signum, _unwind)
    try:
        app()
    except (ConfigError, ForecastInputError, LookupError, OSError, ClusterUnavailable) as exc:
        if isinstance(exc, KeyError | IndexError):
            raise
        error(str(exc) or type(exc).__name__)  # a TimeoutError says nothing
        raise SystemExit(1) from None


def _unwind(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def progress_bar() -> Progress:
    """The progress bar every long-running command shows."""
    columns = (
        TextColumn("{task.description:<28}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, transient=True)


from pefm.cli import canary as _canary  # noqa: E402,F401  (registers its commands)
from pefm.cli import data as _data  # noqa: E402,F401
from pefm.cli import drift as _drift  # noqa: E402,F401
from pefm.cli import forecasting as _forecasting  # noqa: E402,F401
from pefm.cli import knative as _knative  # noqa: E402,F401
from pefm.cli import local as _local  # noqa: E402,F401
from pefm.cli import rollout as _rollout  # noqa: E402,F401
from pefm.cli import serve as _serve  # noqa: E402,F401
from pefm.cli import tracking as _tracking  # noqa: E402,F401
