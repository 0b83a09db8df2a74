"""What each page renders, as plain functions (the pages only wire them to callbacks)."""

from __future__ import annotations

import dash_bootstrap_components as dbc
import pandas as pd
from dash import html

from dashboard import data
from dashboard.components.figures import fan_chart
from dashboard.context import database
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
        card("Requests/s (15 min)", f"{summary['requests_per_s']:.2f}"),
        card("Success", pct(summary["success"])),
        card("p95 latency", "-" if summary["p95_ms"] is None else f"{summary['p95_ms']:.1f} ms"),
        card("Drifted series", "-" if drifted is None else f"{drifted[0]} / {drifted[1]}"),
        card(
            "Rollout",
            "none" if rollout is None else rollout["phase"],
            "" if rollout is None else f"{rollout['green']}: {rollout['weight']}% green",
        ),
    ]


def forecast_view(series_id: str | None, version_id: str | None, horizon: int, as_of: str | None):
    """The Forecasts page: (fan chart, backtest metric rows) for the controls' values."""
    if not series_id or not version_id:
        return fan_chart(pd.Series(dtype="float64"), pd.DataFrame(), "choose a series and a model version"), []
    with database().connection() as conn:
        version = get_version(conn, version_id)
        known = data.history(conn, version, series_id, pd.Timestamp(as_of, tz="UTC") if as_of else None)
        latest = data.history(conn, version, series_id, None)
        forecast = data.forecast(conn, version_id, series_id, horizon)
    title = f"{series_id}: {version_id}" + (f", data as known on {as_of}" if as_of else "")
    figure = fan_chart(known.iloc[-80:], forecast, title, realized=latest)
    metrics = data.backtest_metrics(version)
    rows = metrics[["series_id", *[m for m in METRICS if m in metrics]]].round(3).to_dict("records")
    return figure, rows


def drift_view(series_id: str | None = None, feature: str = "value"):
    """The Drift page: (report header, table rows, score-over-time figure for the chosen row)."""
    from dashboard.components.figures import drift_over_time

    with database().connection() as conn:
        meta, rows = data.drift_rows(conn)
        if meta is None:
            return "no drift report yet: run pefm drift check", [], drift_over_time(pd.DataFrame(), "")
        series_id = series_id or rows[0]["series"]
        history = data.drift_history(conn, series_id, feature)
    drifted = sorted({r["series"] for r in rows if r["drifted"]})
    header = (
        f"report {meta['id']} ({meta['created_at']:%Y-%m-%d %H:%M}) on {meta['model_version']}: "
        f"{len(drifted)} drifted series{' (breach)' if meta['breach'] else ''}"
    )
    figure = drift_over_time(history, f"{series_id} {feature}: drift score by check")
    return (
        header,
        [{**r, "score": round(r["score"], 3), "drifted": "yes" if r["drifted"] else "no"} for r in rows],
        figure,
    )


def serving_view(minutes: int = 60):
    """The Serving page: (latency figure, rate and errors figure, per-revision totals)."""
    from dashboard.components.figures import latency_by_revision, rate_by_revision

    with database().connection() as conn:
        frame = data.serving_latency(conn, minutes=minutes)
    totals = (
        frame.groupby("revision")[["requests", "errors_4xx", "errors_5xx"]].sum().reset_index().to_dict("records")
        if not frame.empty
        else []
    )
    return latency_by_revision(frame), rate_by_revision(frame), totals
