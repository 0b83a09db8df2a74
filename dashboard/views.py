"""What each page renders, as plain functions (the pages only wire them to callbacks)."""

from __future__ import annotations

import dash_bootstrap_components as dbc
import httpx
import pandas as pd
import plotly.graph_objects as go
from dash import html

from dashboard import data
from dashboard.components.figures import (
    accuracy_vs_backtest,
    backtest_overlay,
    drift_over_time,
    fan_chart,
    latency_by_revision,
    rate_by_revision,
    reference_vs_current,
    traffic_split,
    with_markers,
)
from dashboard.context import database
from pefm.config import get_settings
from pefm.storage.model_versions import get_version

METRICS = ["rmse", "mase", "coverage-80", "coverage-95", "sharpe", "sharpe_buy_and_hold"]


def card(title: str, value: str, note: str = "") -> dbc.Col:
    return dbc.Col(
        dbc.Card(
            dbc.CardBody(
                [
                    html.Div(title, className="text-muted small"),
                    html.H4(value, className="mb-0"),
                    html.Div(note, className="small text-muted"),
                ]
            )
        ),
        md=3,
        className="mb-3",
    )


def overview_cards(summary: dict) -> list:
    """The Overview cards for an ``overview`` summary."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    rollout = summary["rollout"]
    drifted = summary["drifted"]
    return [
        card(
            "Series",
            str(summary["series"]),
            f"newest data {summary['newest']:%Y-%m-%d}" if summary["newest"] else "no data",
        ),
        card("Requests/s (15 min)", f"{summary['requests_per_s']:.2f}", f"from the {summary['source']}"),
        card("Success", pct(summary["success"])),
        card("p95 latency", "-" if summary["p95_ms"] is None else f"{summary['p95_ms']:.1f} ms"),
        card("Drifted series", "-" if drifted is None else f"{drifted[0]} / {drifted[1]}"),
        card(
            "Rollout",
            "none" if rollout is None else rollout["phase"],
            "" if rollout is None else f"{rollout['green']}: {rollout['weight']}% green",
        ),
    ]


def forecast_view(
    series_id: str | None, version_id: str | None, horizon: int, as_of: str | None, compare_id: str | None = None
):
    """The Forecasts page: (fan chart, the compared version's fan chart or None, metric rows of the
    version and the compared one). Each chart overlays its version's backtest forecasts by cutoff."""
    if not series_id or not version_id:
        return go.Figure(layout={"title": "choose a series and a model version"}), None, []  # no trace: nothing to draw
    cutoff = pd.Timestamp(as_of, tz="UTC") if as_of else None
    with database().connection() as conn:
        latest = data.history(conn, series_id, None)
        shown = (data.history(conn, series_id, cutoff) if cutoff is not None else latest).iloc[-80:]
        charts, rows = [], []
        for vid in [version_id, *([compare_id] if compare_id and compare_id != version_id else [])]:
            version = get_version(conn, vid)
            title = f"{series_id}: {vid} ({version.status})" + (f", data as known on {as_of}" if as_of else "")
            figure = fan_chart(shown, data.forecast(conn, vid, series_id, horizon), title, realized=latest)
            backtest = data.backtest_forecasts(version, series_id)
            if not backtest.empty:  # the backtest points inside the window shown
                backtest = backtest[backtest["ds"] >= shown.index.min()]
            charts.append(backtest_overlay(figure, backtest))
            metrics = data.backtest_metrics(version)
            rows += metrics[["series_id", *[m for m in METRICS if m in metrics]]].assign(version=vid).to_dict("records")
    rows.sort(key=lambda r: (r["series_id"], r["version"] != version_id))
    rows = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    return charts[0], charts[1] if len(charts) > 1 else None, rows


def drift_view(series_id: str | None = None, feature: str = "value"):
    """The Drift page: (report header, table rows, score-over-time figure, reference-vs-current
    histograms and realized-vs-backtest error for the chosen row)."""
    with database().connection() as conn:
        meta, rows = data.drift_rows(conn)
        if meta is None:
            empty = drift_over_time(pd.DataFrame(), "")
            return "no drift report yet: run pefm drift check", [], empty, empty, empty
        series_id = series_id or rows[0]["series"]
        history = data.drift_history(conn, series_id, feature)
        windows = data.drift_windows(conn, series_id, feature)
        accuracy = data.accuracy_history(conn, series_id)
    drifted = sorted({r["series"] for r in rows if r["drifted"]})
    header = (
        f"report {meta['id']} ({meta['created_at']:%Y-%m-%d %H:%M}) on {meta['model_version']}: "
        f"{len(drifted)} drifted series{' (breach)' if meta['breach'] else ''}"
    )
    return (
        header,
        [{**r, "score": round(r["score"], 3), "drifted": "yes" if r["drifted"] else "no"} for r in rows],
        drift_over_time(history, f"{series_id} {feature}: drift score by check"),
        reference_vs_current(windows, f"{series_id} {feature}: training window vs recent values"),
        accuracy_vs_backtest(accuracy, f"{series_id}: realized one-step error vs the backtest's"),
    )


def serving_view(minutes: int = 60):
    """The Serving page: (latency figure, rate and errors figure, per-revision totals), the charts
    marked with revision starts (cold starts) and promotions/rollbacks."""
    with database().connection() as conn:
        frame = data.serving_latency(conn, minutes=minutes)
        events = data.serving_events(conn, minutes=minutes)
    totals = (
        frame.groupby("revision")[["requests", "errors_4xx", "errors_5xx"]].sum().reset_index().to_dict("records")
        if not frame.empty
        else []
    )
    return with_markers(latency_by_revision(frame), events), with_markers(rate_by_revision(frame), events), totals


def rollout_view(rollout_id: int | None):
    """The Rollouts page: (dropdown options, chosen id, weights text, traffic figure, the checks of
    each analysed step, the event log)."""
    with database().connection() as conn:
        rollouts = data.rollouts(conn)
        options = [
            {"label": f"#{r['id']} {r['service']}: {r['green']} ({r['phase']})", "value": r["id"]} for r in rollouts
        ]
        chosen = next((r for r in rollouts if r["id"] == rollout_id), rollouts[0] if rollouts else None)
        if chosen is None:
            return options, None, "no rollout yet: pefm rollout start", traffic_split(pd.DataFrame(), "", ""), [], []
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
    return options, chosen["id"], weights, traffic_split(events, chosen["blue"], chosen["green"]), checks, log


def rollout_action(rollout_id: int | None, action: str, token: str | None) -> tuple[bool, str]:
    """Ask the rollout API to ``action`` (promote, pause, resume, rollback) a rollout with the admin
    token; (done, the API's answer or why it was not asked)."""
    url = get_settings().rollout_api_url
    if not url:
        return False, "no rollout API configured (PEFM_ROLLOUT_API_URL)"
    if rollout_id is None:
        return False, "no rollout chosen"
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
