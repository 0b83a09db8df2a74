"""Commands for the database and the data: up, db, data, series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from pefm.cli import (
    OPTIONS,
    app,
    console,
    data_app,
    db_app,
    error,
    moment,
    open_db,
    progress_bar,
    redact,
    series_app,
    warning,
)
from pefm.cli.stack import API_OFFSET
from pefm.data.frequency import Frequency
from pefm.storage.database import Database
from pefm.storage.observations import UnknownSeriesError


@app.command()
def up(
    serve: Annotated[bool, typer.Option(help="start the local stack and keep it running (Ctrl-C stops it)")] = True,
    port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535 - API_OFFSET,
            help=f"port of the inference router (the rollout API takes port + {API_OFFSET})",
        ),
    ] = 8080,
    dashboard_port: Annotated[
        int | None, typer.Option(min=1, max=65535, show_default="8050", help="port of the dashboard")
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            show_default="PEFM_LOCAL_REPLICAS, else the initial scale of knative/base/inference.yaml",
            help="replicas of each inference revision behind the router",
        ),
    ] = None,
) -> None:
    """Bring PEFM up locally: the database, the bundled data, a serving model, the functions, the dashboard.

    On the configured database (embedded by default): migrate, load the bundled real data, make
    sure a model is serving, then run the functions behind the local router and the dashboard."""
    if serve:  # before minutes of loading and training, not once the functions have started
        from pefm.cli.stack import check_configuration

        check_configuration()
        _check_ports(port, dashboard_port)
    with open_db(schema="migrate") as db:
        if db.embedded:
            console.print(f"database: embedded PostgreSQL in {db.embedded.pgdata}, migrated")
        else:
            console.print(f"database: PEFM_DATABASE_URL ({redact(db.url)}), migrated")
        _load_bundled(db, None)
        _print_summary(db)
        if serve:  # the stack asks once it has settled what an earlier one left (the serving version may change)
            from pefm.cli.stack import run_stack

            run_stack(db, _serving_model, port, dashboard_port, replicas)
        else:
            _serving_model(db)


def _check_ports(port: int, dashboard_port: int | None) -> None:
    """Exit 1, saying which, unless the stack's own ports are free and distinct."""
    from pefm.config import get_settings
    from pefm.local.runtime import port_free

    ports = {
        "the router (--port)": port,
        f"the rollout API (--port + {API_OFFSET})": port + API_OFFSET,
        "the dashboard (--dashboard-port)": dashboard_port or get_settings().dashboard_port,
    }
    if len(set(ports.values())) < len(ports):
        raise typer.BadParameter(f"the stack needs three ports: {ports}", param_hint="--dashboard-port")
    if taken := [f"{what}: {number}" for what, number in ports.items() if not port_free(number)]:
        error(f"port in use (another PEFM stack, or another program): {'; '.join(taken)}")
        raise typer.Exit(1)


@app.command()
def bootstrap(
    load_bundled: Annotated[bool, typer.Option(help="load the bundled series that hold no data yet")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.001, max=2_147_483, help="seconds to wait for another bootstrap to finish (more than 0)"
        ),  # PostgreSQL's lock_timeout is an integer of milliseconds
    ] = 3600.0,
) -> None:
    """Prepare a database for a cluster: migrate, and make a model serve (the bootstrap Job).

    Inference is not ready until a model serves. Migrate; with --load-bundled, load the bundled
    series that hold no data yet; when no model serves, train the default model and make it serve.
    Runs one at a time; a second run changes nothing."""
    from pefm.data.bundled import bundled

    with open_db(schema="migrate") as db, db.advisory_lock("pefm.bootstrap", wait=True, timeout=timeout):
        console.print("database: migrated")
        if load_bundled:
            ids = [b.meta.id for b in bundled()]
            with db.connection() as conn:
                filled = {
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM series s"
                        " WHERE EXISTS (SELECT 1 FROM all_observations o WHERE o.series_id = s.id)"
                    )
                }
            if missing := [i for i in ids if i not in filled]:
                _load_bundled(db, missing)
            else:
                console.print(f"bundled data: all {len(ids)} series already hold data")
        _serving_model(db)


def _serving_model(db: Database) -> str:
    """The serving model version; the first time, the default bundle (a family per group of
    series) trained on every series with a short backtest (12 windows, h=1..8) for the accuracy views."""
    from pefm.cli.forecasting import planned_params, window_count
    from pefm.forecasting.backtest import DEFAULT_HORIZON, BacktestSpec
    from pefm.forecasting.models import DEFAULT_MODEL
    from pefm.forecasting.panel import default_series
    from pefm.forecasting.registry import promote, serving_version
    from pefm.forecasting.training import train

    with db.connection() as conn:
        serving = serving_version(conn)
        if serving:
            console.print(f"serving model: {serving.id}")
            return serving.id
        spec = BacktestSpec(h=DEFAULT_HORIZON, windows=12)
        ids = default_series(conn, DEFAULT_MODEL)
        params = planned_params(conn, DEFAULT_MODEL, ids, {}, None)
        with progress_bar() as progress:
            total = window_count(conn, DEFAULT_MODEL, ids, params, spec, None)
            task = progress.add_task(f"backtesting {DEFAULT_MODEL}", total=total)
            version, _ = train(
                conn,
                DEFAULT_MODEL,
                ids,
                params=params,
                spec=spec,
                on_window=lambda cutoff: progress.update(
                    task, advance=1, description=f"{DEFAULT_MODEL} @ {cutoff:%Y-%m-%d}"
                ),
            )
            promote(conn, version.id)
    console.print(
        f"serving model: {version.id} (trained now, 12-window backtest, h=1..{spec.h}; pefm backtest runs longer ones)"
    )
    return version.id


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations and grant the component roles their privileges.

    Creates the missing roles where this user may; safe to run from several processes at once."""
    from pefm.config import get_settings
    from pefm.storage.migrate import migrate

    with open_db(schema="unchecked") as db, db.connection() as conn:
        applied = migrate(conn, get_settings().role_passwords)
    if applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print("up to date")


@db_app.command("roles")
def db_roles(
    sql_only: Annotated[
        bool, typer.Option("--sql", help="print the SQL that creates the roles; change nothing")
    ] = False,
) -> None:
    """The component roles (pefm_ingest, pefm_inference, ...): which exist and what each may do.

    --sql prints the one-time step for a database whose migrator may not create roles: have a
    user with CREATEROLE run it, then `pefm db migrate` grants the privileges."""
    from pefm.config import get_settings
    from pefm.storage.roles import PRIVILEGES, missing_roles, password_verifiers, role_name, role_statements

    if sql_only:
        verifiers = {}
        if passwords := get_settings().role_passwords:  # their verifiers, made by libpq on a connection
            with open_db(schema="unchecked") as db, db.connection() as conn:
                verifiers = password_verifiers(conn, passwords)
        for statement in role_statements(verifiers):
            print(f"{statement.as_string(None)};")
        return
    with open_db(schema="unchecked") as db, db.connection() as conn:
        missing = set(missing_roles(conn))
    table = Table("role", "exists", "privileges on the migrated schema's tables")
    for component, grants in PRIVILEGES.items():
        name = role_name(component)
        granted = "; ".join(f"{t}: {p}" for t, p in grants.items())
        table.add_row(name, Text("no", style="red") if name in missing else "yes", granted)
    console.print(table)


@db_app.command("status")
def db_status() -> None:
    """Show applied and pending migrations and whether TimescaleDB is in use."""
    from pefm.storage.migrate import applied_migrations, shipped_migrations
    from pefm.storage.timescale import timescale_plan

    with open_db(schema="unchecked") as db, db.connection() as conn:
        applied = {m.version: m for m in applied_migrations(conn)}
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        plan = timescale_plan(conn)
        hypertable = (
            row is not None
            and conn.execute(
                """SELECT count(*) > 0 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'observations'"""
            ).fetchone()[0]
        )
    table = Table("version", "name", "applied at")
    for m in shipped_migrations():
        done = applied.get(m.version)
        table.add_row(
            f"{m.version:04d}",
            m.name,
            f"{done.applied_at:%Y-%m-%d %H:%M:%S}" if done else Text("pending", style="yellow"),
        )
    console.print(table)
    if hypertable:
        console.print(f"timescaledb: {row[0]}, observations is a hypertable")
    else:
        why = "the migrations ran before it was usable here" if plan.use else plan.reason
        console.print(f"timescaledb: not used, plain PostgreSQL tables ({why})", highlight=False)


@db_app.command("prune")
def db_prune(
    days: Annotated[
        int | None, typer.Option(min=1, max=36500, help="days of logs and drift reports kept (PEFM_RETENTION_DAYS)")
    ] = None,
) -> None:
    """Delete request-log, prediction and drift-report rows older than the retention.

    TimescaleDB's policies drop the logs' chunks after 90 days; on plain PostgreSQL this does it
    (`pefm up` runs it daily, and the monitor for its drift reports, both with PEFM_RETENTION_DAYS;
    schedule it where no stack does). Each model version keeps its latest drift report. Run it as
    the owner, or a role that may delete from those tables."""
    from pefm.config import get_settings
    from pefm.storage import retention

    with open_db() as db:
        deleted = retention.prune(db, days or get_settings().retention_days)
    for table, count in deleted.items():
        console.print(f"{table}: {count} rows deleted", highlight=False)
    if "request_log" not in deleted:
        console.print("request_log, predictions: TimescaleDB's retention policy keeps them (90 days)", highlight=False)


@data_app.command("load")
def data_load(
    series: Annotated[list[str] | None, typer.Argument(help="bundled series ids (default all)")] = None,
) -> None:
    """Load the bundled real datasets (statsmodels macrodata, arch.data); idempotent."""
    with open_db() as db:
        _load_bundled(db, series)
        _print_summary(db)


@data_app.command("list")
def data_list() -> None:
    """List the series in the catalog with their span and observation count."""
    with open_db() as db:
        _print_summary(db)


@data_app.command("load-csv")
def data_load_csv(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    vintage: Annotated[str | None, typer.Option(help="when these values became known (default now)")] = None,
    frequency: Annotated[
        str | None,
        typer.Option(
            help="create the series with this frequency if it is new: "
            f"{', '.join(f.value for f in Frequency)}, or its name (quarterly)"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="name for a new series")] = None,
    unit: Annotated[str, typer.Option(help="unit for a new series")] = "",
) -> None:
    """Load a FRED-style CSV (header DATE,<SERIES_ID>; '.' for missing) as one vintage."""
    from pefm.data.fred_csv import parse_fred_csv
    from pefm.data.frequency import parse_frequency
    from pefm.data.loading import load_csv
    from pefm.storage.series import SeriesMeta, get_series

    with open_db() as db, db.connection() as conn:
        create = None
        if frequency is not None or name is not None or unit:
            series_id = parse_fred_csv(file.read_bytes()).series_id
            if get_series(conn, series_id) is not None:  # they describe a new series only: say so
                given = ", ".join(o for o, v in (("--frequency", frequency), ("--name", name), ("--unit", unit)) if v)
                warning("ignored", f"{given}: {series_id} exists (pefm series show {series_id})")
            elif frequency is not None:
                create = SeriesMeta(
                    id=series_id,
                    name=name or series_id,
                    frequency=parse_frequency(frequency),
                    unit=unit,
                    source=f"csv:{file.name}",
                )
        parsed, result = load_csv(conn, file, vintage=vintage, create=create)
    console.print(
        f"{parsed.series_id}: {result.inserted} inserted, {result.revised} revised, "
        f"{result.unchanged} unchanged, {parsed.missing} missing; "
        f"vintage {result.vintage:%Y-%m-%d %H:%M:%S%z}"
    )


fetch_app = typer.Typer(help="Fetch series from online sources.", **OPTIONS)
data_app.add_typer(fetch_app, name="fetch")


@fetch_app.command("fred")
def data_fetch_fred(
    fred_id: Annotated[str, typer.Argument(help="the FRED series id, e.g. GDPC1")],
    vintages: Annotated[
        bool, typer.Option(help="every ALFRED real-time value, stored at the date it became known")
    ] = False,
    series_id: Annotated[str | None, typer.Option(help="store as this series id (default: the FRED id)")] = None,
) -> None:
    """Fetch a series from FRED (API key in PEFM_FRED_API_KEY).

    Its metadata, observations and, with --vintages, every real-time vintage from ALFRED, so as-of
    reads see the data as published."""
    from pefm.config import get_settings
    from pefm.data.fred import FredClient, FredError
    from pefm.data.loading import load_fred

    settings = get_settings()
    try:
        client = FredClient(settings.fred_api_key or "", settings.fred_url)
        fetching = Text(f"fetching {fred_id} from FRED")  # a Spinner reads a str as markup
        with open_db() as db, db.connection() as conn, console.status(fetching):
            meta, fetched, result = load_fred(conn, client, fred_id, series_id=series_id, vintages=vintages)
    except FredError as exc:
        error(str(exc))
        raise typer.Exit(1) from None
    vintage_count = fetched.values["vintage"].nunique() if vintages else 1
    console.print(
        f"{meta.id} ({meta.frequency.label}, {meta.unit or 'no unit'}): {len(fetched.values)} values in "
        f"{vintage_count} vintage(s); {result.inserted} inserted, {result.revised} revised, "
        f"{result.unchanged} unchanged, {fetched.missing} missing",
        highlight=False,
    )


@series_app.command("show")
def series_show(
    series_id: str,
    as_of: Annotated[str | None, typer.Option("--as-of", help="show the data as known then")] = None,
    start: Annotated[str | None, typer.Option(help="first timestamp")] = None,
    end: Annotated[str | None, typer.Option(help="last timestamp")] = None,
    tail: Annotated[int, typer.Option(min=0, help="rows to print (0: all)")] = 12,
) -> None:
    """Print a series' metadata and its latest values (or as known at --as-of)."""
    from pefm.storage.observations import read_series
    from pefm.storage.series import get_series

    when = {"as_of": moment(as_of, "--as-of"), "start": moment(start, "--start"), "end": moment(end, "--end")}
    with open_db() as db, db.connection() as conn:
        meta = get_series(conn, series_id)
        if meta is None:
            raise UnknownSeriesError([series_id])
        values = read_series(conn, series_id, **when)
    console.print(Text.assemble((meta.id, "bold"), f"  {meta.name}"))
    for label, value in (
        ("frequency", meta.frequency.label),
        ("unit", meta.unit),
        ("transform", meta.transform),
        ("source", meta.source),
        ("description", meta.description),
        *([("calendar", meta.calendar)] if meta.calendar else []),
    ):
        console.print(f"  {label:<12} {value}", highlight=False)
    stamp = _STAMPS.get(meta.frequency, "%Y-%m-%d %H:%M" if meta.frequency.intraday else "%Y-%m-%d")
    span = f"{values.index[0]:{stamp}} .. {values.index[-1]:{stamp}}" if len(values) else "empty"
    console.print(
        f"  {'observations':<12} {len(values)} ({span})" + (f" as of {as_of}" if as_of else ""),
        highlight=False,
    )
    table = Table("ts", "value")
    for ts, value in (values.tail(tail) if tail else values).items():
        table.add_row(f"{ts:{stamp}}", f"{value:,.4f}")
    console.print(table)


_STAMPS = {Frequency.TICK: "%Y-%m-%d %H:%M:%S.%f"}


@series_app.command("bars")
def series_bars(
    series_id: str,
    as_of: Annotated[str | None, typer.Option("--as-of", help="the bars as known then")] = None,
    start: Annotated[str | None, typer.Option(help="first day")] = None,
    end: Annotated[str | None, typer.Option(help="last day")] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="also bring the materialized daily_bars (every series) up to now")
    ] = False,
) -> None:
    """Print an intraday series' daily bars (UTC days), from its latest values or as known at --as-of."""
    from pefm.storage.bars import daily_bars, refresh_daily_bars

    when = {"as_of": moment(as_of, "--as-of"), "start": moment(start, "--start"), "end": moment(end, "--end")}
    with open_db() as db, db.connection() as conn:
        bars = daily_bars(conn, series_id, **when)
        if refresh:
            refresh_daily_bars(conn)
            conn.commit()
    table = Table("day", "open", "high", "low", "close", "observations", "last")
    for day, bar in bars.iterrows():
        prices = (f"{bar[c]:,.4f}" for c in ("open", "high", "low", "close"))
        table.add_row(f"{day:%Y-%m-%d}", *prices, str(bar["observations"]), f"{bar['last_ts']:%H:%M:%S}")
    console.print(table)


def _load_bundled(db: Database, ids: list[str] | None) -> None:
    from pefm.data.bundled import bundled
    from pefm.data.loading import LoadReport, load_bundled

    items = bundled(ids)
    with progress_bar() as progress, db.connection() as conn:
        task = progress.add_task("loading bundled data", total=len(items))

        def advance(report: LoadReport) -> None:
            progress.update(task, advance=1, description=f"loaded {report.series_id}")

        reports = load_bundled(conn, items, on_loaded=advance)
    for report in reports:
        if report.skipped:
            console.print(f"not loaded: {report.skipped}", style="yellow")
    inserted = sum(r.result.inserted for r in reports)
    revised = sum(r.result.revised for r in reports)
    unchanged = sum(r.result.unchanged for r in reports)
    console.print(
        f"bundled data: {len(reports)} series; {inserted} observations inserted, "
        f"{revised} revised, {unchanged} unchanged"
    )


def _print_summary(db: Database) -> None:
    from pefm.storage.series import summarize_series

    with db.connection() as conn:
        rows = summarize_series(conn)
    table = Table("id", "frequency", "first", "last", "count", title="series")
    for r in rows:
        table.add_row(
            r.id,
            r.frequency.label,
            f"{r.first:%Y-%m-%d}" if r.first else "-",
            f"{r.last:%Y-%m-%d}" if r.last else "-",
            str(r.count),
        )
    console.print(table)
