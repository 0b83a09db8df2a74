"""Figure builders: plain functions from frames to Plotly figures (unit-tested without a browser)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

BLUE, BAND80, BAND95 = "#1f4e79", "rgba(31,78,121,0.25)", "rgba(31,78,121,0.12)"
MARGIN = {"l": 40, "r": 10, "t": 40, "b": 30}


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
    figure.update_layout(title=title, margin=MARGIN, hovermode="x unified", legend={"orientation": "h"})
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
    figure.update_layout(title=title, margin=MARGIN, legend={"orientation": "h"})
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
                    mode="lines+markers",  # a lone minute still shows
                    name=f"{revision} {quantile}",
                    line={"dash": dash},
                )
            )
    figure.update_layout(title="latency (ms) by revision", margin=MARGIN)
    return figure


def rate_by_revision(frame: pd.DataFrame) -> go.Figure:
    """Requests per second per revision, stacked, with errors as bars."""
    figure = go.Figure()
    for revision, group in frame.groupby("revision"):
        figure.add_trace(
            go.Scatter(
                x=group["bucket"], y=group["rate"], mode="lines+markers", stackgroup="rate", name=f"{revision} req/s"
            )
        )
        figure.add_trace(go.Bar(x=group["bucket"], y=group["errors_5xx"], name=f"{revision} 5xx"))
    figure.update_layout(title="requests/s and 5xx by revision", margin=MARGIN)
    return figure


def backtest_overlay(figure: go.Figure, backtest: pd.DataFrame) -> go.Figure:
    """Add the backtest's forecasts (one point per cutoff, with its 95% interval) to a fan chart."""
    if backtest.empty:
        return figure
    figure.add_trace(
        go.Scatter(
            x=backtest["ds"],
            y=backtest["mean"],
            mode="markers",
            name="backtest forecast",
            marker={"color": "#e67e22", "size": 6},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": backtest["hi-95"] - backtest["mean"],
                "arrayminus": backtest["mean"] - backtest["lo-95"],
                "thickness": 1,
                "width": 0,
            },
            customdata=backtest["cutoff"].dt.strftime("%Y-%m-%d"),
            hovertemplate="cutoff %{customdata}: %{y:.3f}<extra>backtest</extra>",
        )
    )
    return figure


def reference_vs_current(windows: dict[str, list[float]] | None, title: str) -> go.Figure:
    """Overlaid histograms of the values a drift check compared (training window vs recent)."""
    figure = go.Figure()
    for name, color in (("reference", "#7f8c8d"), ("current", "#c0392b")):
        if windows:
            figure.add_trace(
                go.Histogram(
                    x=windows[name], name=name, histnorm="probability density", marker_color=color, opacity=0.6
                )
            )
    figure.update_layout(title=title, barmode="overlay", margin=MARGIN, legend={"orientation": "h"})
    return figure


def accuracy_vs_backtest(history: pd.DataFrame, title: str) -> go.Figure:
    """Realized one-step RMSE per drift check against the backtest's RMSE and the drift line."""
    figure = go.Figure()
    if not history.empty:
        x = history["created_at"]
        figure.add_trace(go.Scatter(x=x, y=history["realized_rmse"], mode="lines+markers", name="realized RMSE"))
        figure.add_trace(go.Scatter(x=x, y=history["backtest_rmse"], mode="lines", name="backtest RMSE"))
        figure.add_trace(
            go.Scatter(
                x=x,
                y=history["backtest_rmse"] * history["threshold"],
                mode="lines",
                name="drift threshold",
                line={"dash": "dot", "color": "#c0392b"},
            )
        )
    figure.update_layout(title=title, margin=MARGIN, legend={"orientation": "h"})
    return figure


def traffic_split(events: pd.DataFrame, blue: str, green: str) -> go.Figure:
    """Each revision's share of traffic over a rollout's events, stacked to 100%."""
    figure = go.Figure()
    if not events.empty:
        for name, share, color in ((blue, 100 - events["weight"], BLUE), (green, events["weight"], "#27ae60")):
            figure.add_trace(
                go.Scatter(
                    x=events["ts"],
                    y=share,
                    mode="lines",
                    stackgroup="traffic",
                    line={"shape": "hv", "color": color},
                    name=f"{name} %",
                )
            )
    figure.update_layout(title="traffic split (%)", yaxis={"range": [0, 100]}, margin=MARGIN)
    return figure


def with_markers(figure: go.Figure, events: pd.DataFrame) -> go.Figure:
    """Mark revision starts (cold starts) and rollout promotions/rollbacks on a time chart."""
    colors = {"start": "#8e44ad", "promote": "#27ae60", "rollback": "#c0392b"}
    for kind, group in events.groupby("kind"):
        for ts in group["ts"]:
            figure.add_vline(x=ts, line={"color": colors.get(kind, "#555"), "dash": "dot", "width": 1})
        figure.add_trace(
            go.Scatter(
                x=group["ts"],
                y=[0] * len(group),
                mode="markers",
                name="cold start" if kind == "start" else kind,
                marker={"color": colors.get(kind, "#555"), "symbol": "triangle-up", "size": 10},
                text=group["label"],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    return figure
