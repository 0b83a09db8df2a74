"""What each page renders, as plain functions (the pages only wire them to callbacks)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import dash_bootstrap_components as dbc
import httpx
import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html

from dashboard import data
from dashboard.components.figures import (
    WARN,
    Panel,
    accuracy_vs_backtest,
    drift_over_time,
    forecast_panels,
    latency_by_revision,
    rate_by_revision,
    reference_vs_current,
    short_revision,
    traffic_split,
    with_markers,
)
from dashboard.context import database, drift_policy, recent_failure, remember_failure
from dashboard.state import ForecastView
from pefm.config import get_settings
from pefm.storage.model_versions import ModelVersion, UnknownModelError, get_version


def card(title: str, value: str, note: str | list = "", href: str | None = None) -> dbc.Col:
    """A summary card; with ``href``, the whole card links to the page with the details."""
    body = dbc.CardBody(
        [
            html.H2(title, className="text-muted small mb-1"),
            html.P(value, className="h4 mb-0"),
            html.Div(note, className="small text-muted"),
        ]
    )
    inner = dbc.Card(body, className="h-100")
    return dbc.Col(
        dcc.Link(inner, href=href, className="card-link text-reset text-decoration-none") if href else inner,
        lg=4,
        md=6,
        className="mb-3",
    )


def overview_cards(summary: dict) -> list:
    """The Overview cards for an ``overview`` summary, each linking to its page."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    serving, drift, rollout = summary["serving"], summary["drift"], summary["rollout"]
    freshness = [
        html.Div(f"{g['frequency']} ({g['series']}): to {g['newest']:%Y-%m-%d}" if g["newest"] else "no data")
        for g in summary["freshness"]
    ]
    window = "last 15 min"
    return [
        card(
            "Serving model",
            serving["id"] if serving else "none",
            f"{serving['family']} on {serving['series']} series, data as of {serving['data_as_of']:%Y-%m-%d}, "
            f"serving since {serving['since']:%Y-%m-%d %H:%M}"
            if serving
            else "train one and promote it",
            "/models",
        ),
        card("Data by frequency", f"{summary['series']} series", freshness, "/forecasts"),
        card(
            "Inference requests/s",
            f"{summary['requests_per_s']:.2f}",
            f"{window}, from the {summary['source']}",
            "/serving",
        ),
        card(
            "Inference answers",
            f"2xx {pct(summary['share_2xx'])}",
            f"4xx {pct(summary['share_4xx'])} · 5xx {pct(summary['share_5xx'])} ({window})",
            "/serving",
        ),
        card(
            "Inference p95 latency",
            "-" if summary["p95_ms"] is None else f"{summary['p95_ms']:.1f} ms",
            f"{window}; the inference service only",
            "/serving",
        ),
        card(
            "Drift",
            "no check yet" if drift is None else f"{drift['drifted']} of {drift['series']} series drifted",
            ""
            if drift is None
            else f"last check {drift['at']:%Y-%m-%d %H:%M}"
            + (" (breach)" if drift["breach"] else "")
            + (
                ", of another model"
                if data.checked_other_than_serving(drift["model_version"], serving and serving["id"])
                else ""
            ),
            "/drift",
        ),
        card(
            "Rollout",
            "none" if rollout is None else rollout["phase"],
            ""
            if rollout is None
            else f"#{rollout['id']} {short_revision(rollout['green'])}: {rollout['weight']}% green",
            "/rollouts",
        ),
    ]


def forecast_view(view: ForecastView, catalog: list[data.SeriesInfo] | None = None) -> tuple[go.Figure, list[dict]]:
    """The Forecasts page: (the chart, one panel per chosen series; the metric rows per horizon
    of each series' version and of the compared one). ``catalog``: ``data.catalog``'s, when the
    caller has read it (the page's callback has: read twice, it was most of a render)."""
    panels, rows = [], []
    for drawn in _drawn(view, catalog):
        panels.append(_panel(drawn, view))
        for v in (drawn.version, drawn.compared):
            if v is not None:
                rows += data.horizon_metrics(v, drawn.info.id)
    labels = list(dict.fromkeys(p.label for p in panels if p.label))
    title = (f"data as known on {view.as_of}" if view.as_of else "latest data") + (
        f" · {', '.join(labels)}" if labels else ""
    )
    figure = forecast_panels(panels, title, uirevision=zoom_key(view))
    return figure, [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def zoom_key(view: ForecastView) -> str:
    """The chart's uirevision: a redraw keeps the user's zoom while it stays the same (a refresh),
    and a new view starts from its own extent: other series, space, version, horizon or as-of date
    move the data out of a kept x-range. The compared version only overlays the same dates."""
    return "|".join((",".join(view.series), view.space, view.version or "", str(view.horizon), view.as_of or ""))


def _chosen(
    conn, view: ForecastView, catalog: list[data.SeriesInfo]
) -> list[tuple[data.SeriesInfo, ModelVersion | None, ModelVersion | None]]:
    """Each chosen series with the version that forecasts it (the chosen one where it covers the
    series, else the one serving it) and the compared version (where it covers it too)."""
    by_id = {s.id: s for s in catalog}
    versions: dict[str, ModelVersion | None] = {}

    def version_of(version_id: str | None) -> ModelVersion | None:
        if version_id and version_id not in versions:
            try:
                versions[version_id] = get_version(conn, version_id)
            except UnknownModelError:
                versions[version_id] = None
        return versions.get(version_id) if version_id else None

    out = []
    for series_id in view.series:
        if (info := by_id.get(series_id)) is None:
            continue
        chosen = version_of(view.version)
        version = chosen if chosen and series_id in chosen.series_ids else version_of(info.version)
        compared = version_of(view.compare)
        if compared is not None and (series_id not in compared.series_ids or compared is version):
            compared = None
        out.append((info, version, compared))
    return out


def _as_of(view: ForecastView) -> datetime | None:
    """The moment the as-of date stands for: the end of that day (UTC), so that whatever became known
    during it counts (the picker offers up to the day of the newest data), or now when the day is
    today (the inference API refuses a moment in the future)."""
    if not view.as_of:
        return None
    return min(datetime.combine(date.fromisoformat(view.as_of), time.max, tzinfo=UTC), datetime.now(UTC))


@dataclass(frozen=True)
class Made:
    """A version's forecast as drawn: its rows, why they are missing or what they lack, the as-of
    origin, the moment the data they were made from were read as of."""

    rows: pd.DataFrame
    note: str
    origin: pd.Timestamp | None
    data_as_of: datetime


@dataclass(frozen=True)
class Drawn:
    """One chosen series as the page draws it: the series known now (``latest``) and at the as-of
    moment (``known``), its version and the compared one, and the forecast of each."""

    info: data.SeriesInfo
    version: ModelVersion | None
    compared: ModelVersion | None
    latest: pd.Series
    known: pd.Series
    made: Made | None
    compared_made: Made | None


def _drawn(view: ForecastView, catalog: list[data.SeriesInfo] | None) -> list[Drawn]:
    """The chosen series and their forecasts: everything the database holds is read first, then
    the connection is given back (held while the API was asked, it sat idle in transaction,
    holding a snapshot and one of the pool's few connections) and the inference API asked for
    every series at once, all of them answering by one deadline (``data.ASK_SECONDS``): one after
    the other, a hung API held a render for each series' whole wait."""
    as_of = _as_of(view)
    read = []
    with database().connection() as conn:
        catalog = data.catalog(conn) if catalog is None else catalog
        changed = max((s.known_since for s in catalog if s.known_since is not None), default=None)
        for info, version, compared in _chosen(conn, view, catalog):
            start = data.recent(conn, info.id, as_of)  # the outcomes since an as-of origin are read too
            latest = data.history(conn, info.id, None, view.space, start)
            known = data.history(conn, info.id, as_of, view.space, start) if as_of else latest
            stored = [None if v is None else _stored(conn, v, info, view, as_of) for v in (version, compared)]
            read.append((info, version, compared, latest, known, stored))
    deadline = data.ask_deadline()

    def draw(info, version, compared, latest, known, stored) -> Drawn:
        pairs = zip((version, compared), stored, strict=True)
        made = [None if v is None else _made(v, info, view, as_of, latest, s, changed, deadline) for v, s in pairs]
        return Drawn(info, version, compared, latest, known, *made)

    with ThreadPoolExecutor(max_workers=max(len(read), 1)) as pool:
        return list(pool.map(lambda series: draw(*series), read))


def _stored(conn, version: ModelVersion, info: data.SeriesInfo, view: ForecastView, as_of: datetime | None):
    """What the database holds of a version's forecast: its forecast stored at registration (the
    latest view) or the registry's from the as-of origin, with the request to ask the API."""
    if as_of is None:
        return data.forecast(conn, version.id, info.id, view.horizon, view.space)
    return data.origin_forecast(conn, version.id, info.id, as_of, view.horizon, view.space, info.version)


def _made(
    version: ModelVersion,
    info: data.SeriesInfo,
    view: ForecastView,
    as_of: datetime | None,
    latest,
    stored,
    changed,
    deadline: float,
):
    """A version's forecast from what the database held (``_stored``) and the inference API's answer
    by ``deadline``; ``latest``: the series as known now; ``changed``: the data's last change
    (``latest_forecast``)."""
    if as_of is None:
        made = data.latest_forecast(
            version, info.version, info.id, view.horizon, view.space, latest, stored, changed, deadline
        )
        note = made.note or ("" if not made.rows.empty else f"no forecast: {version.id} has none of {info.id}")
        return Made(made.rows, note, None, made.data_as_of)
    made = data.answered(stored, version.id, deadline)
    if made.rows is None:
        return Made(pd.DataFrame(), f"no forecast from this origin: {made.note}", made.origin, as_of)
    return Made(made.rows, made.note if len(made.rows) < view.horizon else "", made.origin, as_of)


def _panel(drawn: Drawn, view: ForecastView) -> Panel:
    """One series' panel: its history as known then, the version's forecast (made at the as-of
    origin, or the latest), the outcomes since, the compared version's forecast."""
    info, version, compared, latest, made = drawn.info, drawn.version, drawn.compared, drawn.latest, drawn.made
    title = f"{info.id}: {info.name}" + (f", as known on {view.as_of}" if view.as_of else "")
    panel = Panel(
        info.id, title, info.unit_in(view.space), info.frequency.value, drawn.known.iloc[-80:], pd.DataFrame(), ""
    )
    if version is None:
        panel.note = f"no forecast: {info.why_not}"
        return panel
    panel.label = f"{version.id} ({version.status})"
    forecast, origin = made.rows, made.origin
    panel.forecast, panel.note, panel.origin = forecast, made.note, origin
    if not forecast.empty:
        span = latest.loc[forecast["ds"].min() : forecast["ds"].max()]
        panel.outcomes = latest.loc[origin : forecast["ds"].max()].iloc[1:] if origin is not None else span
    elif origin is not None:
        panel.outcomes = latest.loc[origin:].iloc[1 : view.horizon + 1]
    if compared is not None:
        panel.compare = drawn.compared_made.rows
        panel.compare_label = f"{compared.id} ({compared.status})"
    if view.space == "model" and not view.as_of:  # the backtest's one-step forecasts, one point per cutoff
        backtest = data.backtest_forecasts(version, info.id)
        if not backtest.empty:
            first = backtest.sort_values("ds").groupby("cutoff", as_index=False).first()
            panel.backtest = first[first["ds"] >= panel.history.index.min()]
    return panel


def forecast_csv(view: ForecastView) -> pd.DataFrame:
    """What the chart shows as a table, one row per series, version and step (the compared
    version's too), with what an analyst needs to use it elsewhere: series, version, space, unit,
    transform, the data's vintage (as known on), the origin, and the forecast's ds, mean and bounds."""
    parts = []
    for drawn in _drawn(view, None):
        for version, made in ((drawn.version, drawn.made), (drawn.compared, drawn.compared_made)):
            if version is None or made.rows.empty:
                continue
            info = drawn.info
            meta = {
                "series_id": info.id,
                "model_version": version.id,
                "space": view.space,
                "unit": info.unit_in(view.space),
                "transform": info.transform if view.space == "model" else "none",
                "data_as_of": view.as_of or f"{made.data_as_of:%Y-%m-%d}",
                "origin": "" if made.origin is None else f"{made.origin:%Y-%m-%d}",
            }
            parts.append(made.rows.assign(ds=made.rows["ds"].dt.strftime("%Y-%m-%d"), **_cells(meta)))
    columns = ["series_id", "model_version", "space", "unit", "transform", "data_as_of", "origin", "ds", "mean"]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    return frame[columns + [c for c in frame.columns if c not in columns]]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""How a CSV cell that a spreadsheet runs as a formula starts (OWASP's CSV injection)."""


def _cells(texts: dict[str, str]) -> dict[str, str]:
    """Text for CSV cells as text: one that a spreadsheet would run as a formula (a unit is free
    text: ``=HYPERLINK(...)``) is prefixed with ``'``, which spreadsheets read as "text follows"."""
    return {k: f"'{v}" if v.startswith(FORMULA_START) else v for k, v in texts.items()}


def drift_view(choice: str | None = None):
    """The Drift page: (report header, table rows, the signals to choose from, the chosen one,
    score-over-time figure, reference-vs-current histograms and realized-vs-backtest error for the
    chosen signal, what the signals and methods mean). ``choice``: ``series|feature``."""
    policy = drift_policy()
    legend = [
        item
        for meanings in (policy.signals, policy.methods)
        for name, line in meanings.items()
        for item in (html.Dt(name), html.Dd(line))
    ]
    with database().connection() as conn:
        meta, rows = data.drift_rows(conn)
        if meta is None or not rows:
            empty = drift_over_time(pd.DataFrame(), "", "")
            return _drift_empty(meta), [], [], None, empty, empty, empty, legend
        options = [
            {"label": f"{r['series']} · {r['feature']}", "value": f"{r['series']}|{r['feature']}"}
            for r in rows
            if r["feature"] in ("value", "volatility")
        ]
        values = [o["value"] for o in options]
        choice = choice if choice in values else (values[0] if values else None)
        series_id, feature = choice.split("|", 1) if choice else (rows[0]["series"], "value")
        history = data.drift_history(conn, series_id, feature)
        windows = data.drift_windows(conn, meta["id"], series_id, feature)  # the report the table shows
        accuracy = data.accuracy_history(conn, series_id)
    drifted = sorted({r["series"] for r in rows if r["drifted"]})
    header = (
        f"report {meta['id']} ({meta['created_at']:%Y-%m-%d %H:%M}) on {meta['model_version']}: "
        f"{len(drifted)} drifted series{' (breach)' if meta['breach'] else ''}"
        + (
            f"; {meta['serving']} serves now and has not been checked since it began serving"
            if data.checked_other_than_serving(meta["model_version"], meta["serving"])
            else ""
        )
    )
    table_rows = [
        {
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
            "drifted": "yes" if r["drifted"] else "no",
        }
        for r in rows
    ]
    zoom = f"drift|{series_id}|{feature}"  # another signal starts from its own extent
    figures = (
        drift_over_time(history, f"{series_id} {feature}: score by check", "normed Wasserstein distance"),
        reference_vs_current(windows, f"{series_id} {feature}: training vs recent"),
        accuracy_vs_backtest(accuracy, f"{series_id}: realized vs backtest error"),
    )
    return header, table_rows, options, choice, *(f.update_layout(uirevision=zoom) for f in figures), legend


def retraining_view():
    """The Drift page's retraining section: (a line on a request not answered yet, or "", a table of
    the latest retraining runs and the monitor's requests)."""
    with database().connection() as conn:
        note, rows = data.retraining(conn)
    return note, table(
        rows,
        "drift-retraining-table",
        "No retraining yet: a breach the monitor confirms requests one, and pefm retrain runs one now.",
    )


def _drift_empty(meta: dict | None) -> str:
    """The Drift page's header when there is nothing to show: no report, or one that checked no
    series (every series it was asked for was unknown to the model, or left out)."""
    if meta is None:
        return "no drift report yet: run pefm drift check"
    return (
        f"report {meta['id']} ({meta['created_at']:%Y-%m-%d %H:%M}) on {meta['model_version']} checked no series: "
        "run pefm drift check (without -s) to check the whole model"
    )


RANGES = {15: 60, 60: 60, 360: 300, 1440: 900}
"""The Serving page's time ranges (minutes) and the bucket each is drawn in (seconds)."""
DEFAULT_RANGE = 60


def serving_range(minutes) -> int:
    """The time range the browser asked for when it is one of ``RANGES``, else the default: the
    value goes into SQL, and a client may send anything (1.5, -5, a month)."""
    return minutes if type(minutes) is int and minutes in RANGES else DEFAULT_RANGE


def serving_view(minutes: int = DEFAULT_RANGE):
    """The Serving page: (latency figure, rate and errors figure, per-revision totals), the charts
    marked with revision starts (cold starts) and promotions/rollbacks."""
    minutes = serving_range(minutes)
    bucket = RANGES[minutes]
    with database().connection() as conn:
        frame = data.serving_latency(conn, minutes=minutes, bucket_seconds=bucket)
        events = data.serving_events(conn, minutes=minutes)
    totals = (
        frame.groupby("revision")[["requests", "errors_4xx", "errors_5xx"]].sum().reset_index().to_dict("records")
        if not frame.empty
        else []
    )
    for row in totals:
        row["label"] = short_revision(row["revision"])
    zoom = f"serving|{minutes}"  # another time range starts from its own extent
    latency, rate = (
        with_markers(f.update_layout(uirevision=zoom), events)
        for f in (latency_by_revision(frame), rate_by_revision(frame))
    )
    return latency, rate, totals


def rollout_view(rollout_id: int | None):
    """The Rollouts page: (the rollouts to choose from, chosen id, weights text, traffic figure, the
    checks of each analysed step, the event log, the actions the chosen rollout allows)."""
    with database().connection() as conn:
        rollouts = data.rollouts(conn)
        options = [
            {"label": f"#{r['id']} {r['service']}: {short_revision(r['green'])} ({r['phase']})", "value": r["id"]}
            for r in rollouts
        ]
        chosen = next((r for r in rollouts if r["id"] == rollout_id), rollouts[0] if rollouts else None)
        if chosen is None:
            empty = traffic_split(pd.DataFrame(), "", "")
            return options, None, "no rollout yet: pefm rollout start", empty, [], [], set()
        events = data.rollout_events(conn, chosen["id"])
    weights = (
        f"{chosen['phase']}: {chosen['blue']} (blue) {100 - chosen['weight']}% / "
        f"{chosen['green']} (green) {chosen['weight']}%"
    )
    checks = [
        {
            "time": f"{e.ts:%Y-%m-%d %H:%M:%S}",
            "step weight": e.weight,
            "check": c["check"],
            "value": None if c["value"] is None else round(c["value"], 4),
            "range": str(c["range"]),
            "result": {True: "pass", False: "FAIL", None: "no data"}[c["passed"]],
        }
        for e in events.itertuples()
        for c in e.checks
    ]
    log = [
        {
            "time": f"{e.ts:%Y-%m-%d %H:%M:%S}",
            "action": e.action,
            "phase": e.phase,
            "green %": e.weight,
            "reason": e.reason,
        }
        for e in events.itertuples()
    ][::-1]
    if chosen["finalized_at"] is not None:
        weights += f" (settled {chosen['finalized_at']:%Y-%m-%d %H:%M}: start a new rollout to change it)"
    figure = traffic_split(events, chosen["blue"], chosen["green"]).update_layout(uirevision=f"rollout|{chosen['id']}")
    allowed = allowed_actions(chosen["phase"], chosen["finalized_at"] is not None)
    return options, chosen["id"], weights, figure, checks, log, allowed


def allowed_actions(phase: str, settled: bool = False) -> set[str]:
    """What an operator can still do to a rollout in ``phase`` (the controller refuses the rest):
    promote or pause one under way, resume a paused one, roll back any that has not already been
    rolled back or failed; nothing once it is ``settled`` (finalized: the losing revision is
    retired, or a later rollout took over the service)."""
    allowed = set()
    if settled:
        return allowed
    if phase not in ("Succeeded", "Failed", "RolledBack"):
        allowed.add("promote")
    if phase in ("Initializing", "Progressing"):
        allowed.add("pause")
    if phase == "Paused":
        allowed.add("resume")
    if phase not in ("Failed", "RolledBack"):
        allowed.add("rollback")
    return allowed


ROLLOUT_ACTIONS = ("promote", "pause", "resume", "rollback")


def rollout_action(rollout_id: int | None, action: str, token: str | None) -> tuple[bool, str]:
    """Ask the rollout API to ``action`` (promote, pause, resume, rollback) a rollout with the admin
    token; (done, the API's answer or why it was not asked)."""
    url = get_settings().rollout_api_url
    if action not in ROLLOUT_ACTIONS:  # the client names it: only the API's own actions are asked
        return False, f"no action {str(action)[:40]!r}"
    if not url:
        return False, "no rollout API configured (PEFM_ROLLOUT_API_URL)"
    if rollout_id is None:
        return False, "no rollout chosen"
    if token and not (isinstance(token, str) and _header_safe(token)):
        return False, "invalid token: an admin token is printable ASCII"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/rollouts/{rollout_id}/{action}", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return False, f"rollout API unreachable: {exc}"
    if response.is_success:
        body = response.json()
        return True, f"{action}: rollout {rollout_id} is {body['phase']} at {body['weight']}% green"
    detail = (
        response.json().get("error", response.text)
        if "json" in response.headers.get("content-type", "")
        else response.text
    )
    return False, f"refused ({response.status_code}): {detail}"


def _header_safe(token: str) -> bool:
    """Whether ``token`` can travel in an HTTP header: printable ASCII (the encoding of anything
    else fails before the request is sent)."""
    return token.isascii() and token.isprintable()


_run_links: dict[tuple[str, str], str] = {}
"""The MLflow run links found, by tracking URI and version: a version's run stays where it is."""


def _mlflow_run(uri: str, version_id: str):
    """A link to the version's MLflow run, or why there is none. A link is found once; an MLflow
    that failed is not asked again for ``RETRY_S`` (each card of each refresh waited its timeout)."""
    from pefm.tracking import run_link

    if (link := _run_links.get((uri, version_id))) is None:
        if (failed := recent_failure(uri)) is not None:
            return f"unreachable ({failed})"
        try:
            link = run_link(uri, get_settings().mlflow_ui_url, version_id)
        except Exception as exc:  # MLflow away: the page draws without the link
            remember_failure(uri, type(exc).__name__)
            return f"unreachable ({type(exc).__name__})"
        if link is None:
            return "not mirrored yet"
        _run_links[uri, version_id] = link
    return html.A("run", href=link, target="_blank", rel="noopener")


def version_card(version_id: str) -> dbc.Card:
    """One version on the Models page: what it is, how it was tested, how it did, what the gates
    said, where it was rolled out."""
    with database().connection() as conn:
        try:
            version = get_version(conn, version_id)
        except UnknownModelError:
            return dbc.Card(dbc.CardBody(f"no model version {version_id}"))
        rollouts = data.version_rollouts(conn, version_id)
    facts = [
        ("status", f"{version.status}" + (f" ({version.status_reason})" if version.status_reason else "")),
        ("family", version.family),
        ("series", ", ".join(version.series_ids)),
        ("data as of", f"{version.data_as_of:%Y-%m-%d %H:%M} UTC"),
        ("registered", f"{version.created_at:%Y-%m-%d %H:%M} UTC"),
        ("trained from", version.parent_id or "-"),
        ("backtest", data.backtest_setup((version.backtest or {}).get("spec"))),
        ("artifact sha256", version.artifact_sha256[:16] + "..."),
    ]
    if (uri := get_settings().mlflow_tracking_uri) is not None:
        facts.append(("MLflow", _mlflow_run(uri, version.id)))
    report = version.gate_report
    verdict = "not gated" if not report else ("passed" if report["passed"] else "failed")
    against = f" against {report['serving']}" if report and report.get("serving") else ""
    return dbc.Card(
        [
            dbc.CardHeader(html.H2(version.id, className="h6 mb-0")),
            dbc.CardBody(
                [
                    html.Dl([item for k, v in facts for item in (html.Dt(k), html.Dd(v))], className="row-facts"),
                    html.H3("Accuracy by horizon (median over series)", className="h6"),
                    table(data.horizon_medians(version), f"acc-{version.id}", "no backtest stored"),
                    html.H3(f"Gates: {verdict}{against}", className="h6 mt-3"),
                    table(data.gate_checks(version), f"gates-{version.id}", "no gate report"),
                    html.H3("Rollouts", className="h6 mt-3"),
                    table(rollouts, f"rollouts-{version.id}", "never rolled out"),
                ]
            ),
        ],
        className="mb-3",
    )


def table(rows: list[dict], table_id: str, empty: str):
    """A small sortable table of ``rows``, or a line saying there is nothing."""
    from dash import dash_table

    if not rows:
        return html.P(empty, className="text-muted small")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return dash_table.DataTable(
        id=table_id,
        data=rows,
        columns=[{"name": c, "id": c} for c in columns],
        sort_action="native",
        page_size=10,
        style_table={"overflowX": "auto"},
        style_cell={"fontSize": "0.85rem", "textAlign": "left"},
        style_data_conditional=[
            {"if": {"filter_query": '{result} = "FAIL"'}, "backgroundColor": WARN},
        ],
    )
