"""Figure builders: plain functions from frames to Plotly figures (unit-tested without a browser)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

BLUE, BAND80, BAND95 = "#1f4e79", "rgba(31,78,121,0.25)", "rgba(31,78,121,0.12)"


def fan_chart(actuals: pd.Series, forecast: pd.DataFrame, title: str, realized: pd.Series | None = None) -> go.Figure:
    """Actuals, the forecast mean, 80/95% bands, and red markers where realized values fell outside
    the 95% band."""
    figure = go.Figure()
    if not forecast.empty:
        for level, color in (("95", BAND95), ("80", BAND80)):
            figure.add_trace(
                go.Scatter(
                    x=forecast["ds"],
                    y=forecast[f"hi-{level}"],
                    mode="lines",
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
            figure.add_trace(
                go.Scatter(
                    x=forecast["ds"],
                    y=forecast[f"lo-{level}"],
                    mode="lines",
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor=color,
                    name=f"{level}% interval",
                )
            )
        figure.add_trace(
            go.Scatter(
                x=forecast["ds"],
                y=forecast["mean"],
                mode="lines+markers",
                name="forecast",
                line={"color": BLUE, "dash": "dash"},
            )
        )
    figure.add_trace(
        go.Scatter(x=actuals.index, y=actuals.to_numpy(), mode="lines", name="actual", line={"color": "#222"})
    )
    if realized is not None and not forecast.empty:
        merged = forecast.set_index("ds").join(realized.rename("actual"), how="inner")
        outside = merged[(merged["actual"] < merged["lo-95"]) | (merged["actual"] > merged["hi-95"])]
        if not outside.empty:
            figure.add_trace(
                go.Scatter(
                    x=outside.index,
                    y=outside["actual"],
                    mode="markers",
                    name="outside 95%",
                    marker={"color": "#c0392b", "size": 10, "symbol": "x"},
                )
            )
    figure.update_layout(
        title=title, margin={"l": 40, "r": 10, "t": 40, "b": 30}, hovermode="x unified", legend={"orientation": "h"}
    )
    return figure


def drift_over_time(history: pd.DataFrame, title: str) -> go.Figure:
    """A drift score across checks, with its threshold as a line."""
    figure = go.Figure()
    if not history.empty:
        figure.add_trace(go.Scatter(x=history["created_at"], y=history["score"], mode="lines+markers", name="score"))
        figure.add_trace(
            go.Scatter(
                x=history["created_at"],
                y=history["threshold"],
                mode="lines",
                name="threshold",
                line={"dash": "dot", "color": "#c0392b"},
            )
        )
    figure.update_layout(title=title, margin={"l": 40, "r": 10, "t": 40, "b": 30}, legend={"orientation": "h"})
    return figure


def latency_by_revision(frame: pd.DataFrame) -> go.Figure:
    """p50/p95/p99 latency per revision over time (one line per revision and quantile)."""
    figure = go.Figure()
    for revision, group in frame.groupby("revision"):
        for quantile, dash in (("p50", "solid"), ("p95", "dash"), ("p99", "dot")):
            figure.add_trace(
                go.Scatter(
                    x=group["bucket"],
                    y=group[quantile],
                    mode="lines",
                    name=f"{revision} {quantile}",
                    line={"dash": dash},
                )
            )
    figure.update_layout(title="latency (ms) by revision", margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return figure


def rate_by_revision(frame: pd.DataFrame) -> go.Figure:
    """Requests per second per revision, stacked, with errors as bars."""
    figure = go.Figure()
    for revision, group in frame.groupby("revision"):
        figure.add_trace(
            go.Scatter(x=group["bucket"], y=group["rate"], mode="lines", stackgroup="rate", name=f"{revision} req/s")
        )
        figure.add_trace(go.Bar(x=group["bucket"], y=group["errors_5xx"], name=f"{revision} 5xx"))
    figure.update_layout(title="requests/s and 5xx by revision", margin={"l": 40, "r": 10, "t": 40, "b": 30})
    return figure
