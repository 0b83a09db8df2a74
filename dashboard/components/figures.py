"""Figure builders: plain functions from frames to Plotly figures (unit-tested without a browser)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

BLUE, BAND80, BAND95 = "#1f6fb4", "rgba(31,111,180,0.28)", "rgba(31,111,180,0.14)"
# one template for every chart: plotly_white on a transparent background, so the page's light or dark
# Bootstrap background shows through (text and grid colours follow it in the dark mode: style.css)
pio.templates["pefm"] = go.layout.Template(pio.templates["plotly_white"])
pio.templates["pefm"].layout.update(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
pio.templates.default = "pefm"
WARN = "rgba(220, 53, 69, 0.2)"
"""The background of a table row or cell that needs attention: reads in the light and the dark mode."""
MARGIN = {"l": 40, "r": 10, "t": 40, "b": 30}


PERIOD_FORMAT = {"Q": "%Y Q%q", "M": "%b %Y", "A": "%Y", "W": "%Y-%m-%d", "D": "%Y-%m-%d", "B": "%Y-%m-%d"}
"""How dates read on a series' axis and in its hover, by frequency code (``%q``: the quarter)."""
COMPARE = "#8e44ad"


def plain(text: str) -> str:
    """``text`` as Plotly is to show it, character for character. Plotly reads a subset of HTML in
    every text it draws (titles, axis titles, annotations, legends, hovers): a series named
    ``<a href=...>`` drew a live link in the chart. Every string a user or a program wrote (series
    names and units, version and revision names, reasons) goes through here; Plotly draws the
    escaped <, > and & back as the characters themselves."""
    return escape(text, quote=False)


def number(value: float | None) -> str:
    """A value as an analyst reads it: three significant digits, thousands separated, no exponent
    for the usual magnitudes."""
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def period_label(moment: pd.Timestamp, freq: str) -> str:
    """A period start as its period: 2012Q1, Jan 2012, 2012, or the day."""
    if freq == "Q":
        return f"{moment.year}Q{moment.quarter}"
    return moment.strftime({"M": "%b %Y", "A": "%Y"}.get(freq, "%Y-%m-%d"))


@dataclass
class Panel:
    """One series on the Forecasts chart: what was known, what was forecast, what happened."""

    series_id: str
    title: str
    unit: str
    freq: str
    history: pd.Series
    forecast: pd.DataFrame
    label: str
    """The version that made ``forecast`` (legend and hover)."""
    note: str = ""
    """Why there is no forecast, or where it came from."""
    origin: pd.Timestamp | None = None
    """The as-of view's origin: the last observation the forecast was made from."""
    outcomes: pd.Series | None = None
    """The values that came after the origin (the latest data), over the forecast's span."""
    compare: pd.DataFrame | None = None
    compare_label: str = ""
    backtest: pd.DataFrame | None = None


def forecast_panels(panels: list[Panel], title: str, uirevision: str) -> go.Figure:
    """Small multiples, one row per series: history, the forecast's mean with its 80/95% bands
    (hover: mean and both bounds), the compared version's mean and 80% bounds, the as-of origin
    as a vertical line with the outcomes since, the backtest's forecasts, and red crosses where an
    outcome fell outside the 95% band. Axis titles carry the unit; dates read by frequency."""
    rows = max(len(panels), 1)
    figure = make_subplots(
        rows=rows, cols=1, subplot_titles=[plain(p.title) for p in panels] or [""], vertical_spacing=0.22 / rows
    )
    for row, panel in enumerate(panels, start=1):
        first = row == 1
        _bands_and_mean(figure, panel, row, first)
        figure.add_trace(_observed(panel.history, "actual", "#222", "lines", first), row=row, col=1)
        if panel.compare is not None and not panel.compare.empty:
            _compared(figure, panel, row, first)
        if panel.backtest is not None and not panel.backtest.empty:
            _backtest(figure, panel.backtest, row, first)
        if panel.origin is not None:
            _origin(figure, panel, row)
        _outside(figure, panel, row, first)
        if panel.note:
            figure.add_annotation(
                text=plain(panel.note),
                xref=f"x{'' if first else row} domain",
                yref=f"y{'' if first else row} domain",
                x=0.01,
                y=0.97,
                xanchor="left",
                yanchor="top",
                align="left",
                showarrow=False,
                font={"size": 12, "color": "#333"},
                bgcolor="rgba(255,255,255,0.85)",
            )
        dates = PERIOD_FORMAT.get(panel.freq, "%Y-%m-%d")
        figure.update_xaxes(tickformat=dates, hoverformat=dates, row=row, col=1)
        figure.update_yaxes(title_text=plain(panel.unit), row=row, col=1)
    figure.update_layout(
        title=plain(title) if panels else "choose a series",
        height=120 + 330 * rows,
        margin={"l": 60, "r": 10, "t": 70, "b": 30},
        hovermode="x unified",
        legend={"orientation": "h", "y": -0.08 / rows},
        uirevision=uirevision,
    )
    return figure


def _bands_and_mean(figure: go.Figure, panel: Panel, row: int, first: bool) -> None:
    forecast = panel.forecast
    if forecast.empty:
        return
    for level, color in (("95", BAND95), ("80", BAND80)):
        figure.add_trace(
            go.Scatter(
                x=forecast["ds"],
                y=forecast[f"hi-{level}"],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
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
                hoverinfo="skip",
                legendgroup=level,
                showlegend=first,
            ),
            row=row,
            col=1,
        )
    figure.add_trace(_mean(forecast, "forecast", panel.label, BLUE, "dash", first), row=row, col=1)


def _mean(forecast: pd.DataFrame, name: str, version: str, color: str, dash: str, legend: bool) -> go.Scatter:
    """A forecast's mean path; its hover gives the mean and both bounds, and the version."""
    return go.Scatter(
        x=forecast["ds"],
        y=forecast["mean"],
        mode="lines+markers",
        name=plain(name),
        line={"color": color, "dash": dash},
        customdata=_summaries(forecast),
        hovertemplate="%{customdata}<extra>" + plain(version) + "</extra>",
        legendgroup=name,
        showlegend=legend,
    )


def _summaries(forecast: pd.DataFrame) -> list[str]:
    return [
        f"mean {number(r['mean'])}, 80%: {number(r['lo-80'])} to {number(r['hi-80'])}, "
        f"95%: {number(r['lo-95'])} to {number(r['hi-95'])}"
        for r in forecast.to_dict("records")
    ]


def _compared(figure: go.Figure, panel: Panel, row: int, first: bool) -> None:
    compare, name = panel.compare, f"compared: {panel.compare_label}"
    figure.add_trace(_mean(compare, name, panel.compare_label, COMPARE, "dot", first), row=row, col=1)
    for side in ("lo-80", "hi-80"):
        figure.add_trace(
            go.Scatter(
                x=compare["ds"],
                y=compare[side],
                mode="lines",
                line={"color": COMPARE, "width": 1, "dash": "dot"},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            ),
            row=row,
            col=1,
        )


def _backtest(figure: go.Figure, backtest: pd.DataFrame, row: int, first: bool) -> None:
    """The backtest's forecasts (one point per cutoff, with its 95% interval)."""
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
            hovertemplate="from cutoff %{customdata}: %{y:.3g}<extra>backtest</extra>",
            legendgroup="backtest",
            showlegend=first,
        ),
        row=row,
        col=1,
    )


def _origin(figure: go.Figure, panel: Panel, row: int) -> None:
    """The as-of origin as a vertical line, and the outcomes since."""
    suffix = "" if row == 1 else str(row)
    figure.add_shape(
        type="line",
        x0=panel.origin,
        x1=panel.origin,
        y0=0,
        y1=1,
        xref=f"x{suffix}",
        yref=f"y{suffix} domain",
        line={"color": "#c0392b", "dash": "dash", "width": 1.5},
    )
    figure.add_annotation(
        x=panel.origin,
        y=1,
        xref=f"x{suffix}",
        yref=f"y{suffix} domain",
        text=f"origin {period_label(panel.origin, panel.freq)}",
        showarrow=False,
        xanchor="right",
        yanchor="bottom",
        font={"color": "#c0392b", "size": 11},
    )
    if panel.outcomes is not None and not panel.outcomes.empty:
        figure.add_trace(_observed(panel.outcomes, "outcome", "#27ae60", "lines+markers", row == 1), row=row, col=1)


def _observed(values: pd.Series, name: str, color: str, mode: str, legend: bool) -> go.Scatter:
    """Observed values (the history, the outcomes since an origin), hovering as analysts read them."""
    return go.Scatter(
        x=values.index,
        y=values.to_numpy(),
        mode=mode,
        name=name,
        line={"color": color},
        customdata=[number(v) for v in values.to_numpy()],
        hovertemplate="%{customdata}<extra>" + name + "</extra>",
        legendgroup=name,
        showlegend=legend,
    )


def _outside(figure: go.Figure, panel: Panel, row: int, first: bool) -> None:
    """Red crosses where an outcome fell outside the forecast's 95% band."""
    if panel.outcomes is None or panel.forecast.empty:
        return
    merged = panel.forecast.set_index("ds").join(panel.outcomes.rename("actual"), how="inner")
    outside = merged[(merged["actual"] < merged["lo-95"]) | (merged["actual"] > merged["hi-95"])]
    if not outside.empty:
        figure.add_trace(
            go.Scatter(
                x=outside.index,
                y=outside["actual"],
                mode="markers",
                name="outside 95%",
                marker={"color": "#c0392b", "size": 10, "symbol": "x"},
                hoverinfo="skip",
                legendgroup="outside",
                showlegend=first,
            ),
            row=row,
            col=1,
        )


def drift_over_time(history: pd.DataFrame, title: str, score: str) -> go.Figure:
    """A drift score across checks, with its threshold: lines with markers (a single check is one
    marker with its threshold beside it; a check of some series only, open), dates to the minute,
    a line saying so when empty."""
    figure = go.Figure()
    if history.empty:
        return _empty(figure, title, "no drift check of this signal yet")
    x = history["created_at"]
    figure.add_trace(
        go.Scatter(
            x=x,
            y=history["score"],
            mode="lines+markers",
            name="score",
            **_check_kinds(history),
            hovertemplate="score %{y:.3g}, check of %{customdata}<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=history["threshold"],
            mode="lines+markers",
            name="threshold",
            line={"dash": "dot", "color": "#c0392b"},
            marker={"symbol": "line-ew-open", "size": 14},
        )
    )
    figure.update_layout(title=plain(title), margin=MARGIN, legend={"orientation": "h"}, yaxis_title=score)
    _checks_axis(figure, x)
    return figure


def _check_kinds(history: pd.DataFrame) -> dict:
    """A trace's markers and hover words telling a check of the whole model (filled) from one of
    some series, ``pefm drift check -s`` (open): the page's table shows only the former."""
    whole = history["whole"].astype(bool).tolist()
    return {
        "marker": {"symbol": ["circle" if w else "circle-open" for w in whole]},
        "customdata": ["the whole model" if w else "some series only" for w in whole],
    }


def _checks_axis(figure: go.Figure, moments: pd.Series) -> None:
    """A time axis of drift checks: to the minute, and a day wide around a single check (plotly
    would zoom a lone point down to milliseconds)."""
    figure.update_xaxes(tickformat="%m-%d %H:%M", hoverformat="%Y-%m-%d %H:%M")
    figure.update_layout(legend={"orientation": "h", "y": -0.3})
    if moments.nunique() == 1:
        moment = pd.Timestamp(moments.iloc[0])
        figure.update_xaxes(range=[moment - pd.Timedelta(hours=12), moment + pd.Timedelta(hours=12)])


def _empty(figure: go.Figure, title: str, message: str) -> go.Figure:
    figure.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    figure.update_layout(title=plain(title), margin=MARGIN, xaxis_visible=False, yaxis_visible=False)
    return figure


def latency_by_revision(frame: pd.DataFrame) -> go.Figure:
    """p50/p95/p99 latency per revision over time (one line per revision and quantile; a minute
    without requests is a gap). Legends show the short revision label, hovers the full name."""
    figure = go.Figure()
    for name, group in frame.groupby("revision"):
        revision = plain(name)
        for quantile, dash in (("p50", "solid"), ("p95", "dash"), ("p99", "dot")):
            figure.add_trace(
                go.Scatter(
                    x=group["bucket"],
                    y=group[quantile],
                    mode="lines+markers",  # a lone minute still shows
                    name=f"{plain(short_revision(name))} {quantile}",
                    line={"dash": dash},
                    connectgaps=False,
                    hovertemplate=f"{quantile} %{{y:.1f}} ms<extra>{revision}</extra>",
                )
            )
    figure.update_layout(title="inference latency by revision", margin=MARGIN, yaxis_title="ms")
    return figure


def rate_by_revision(frame: pd.DataFrame) -> go.Figure:
    """Requests per second per revision (stacked, zero where there were none), with each
    revision's 4xx and 5xx answers per minute as bars."""
    figure = go.Figure()
    for name, group in frame.groupby("revision"):
        revision, label = plain(name), plain(short_revision(name))
        figure.add_trace(
            go.Scatter(
                x=group["bucket"],
                y=group["rate"],
                mode="lines",
                stackgroup="rate",
                name=f"{label} req/s",
                hovertemplate=f"%{{y:.2f}} req/s<extra>{revision}</extra>",
            )
        )
        for kind, color in (("errors_4xx", "#f39c12"), ("errors_5xx", "#c0392b")):
            figure.add_trace(
                go.Bar(
                    x=group["bucket"],
                    y=group[kind],
                    name=f"{label} {kind[-3:]}",
                    marker_color=color,
                    yaxis="y2",
                    hovertemplate=f"%{{y}} {kind[-3:]} answers<extra>{revision}</extra>",
                )
            )
    figure.update_layout(
        title="inference requests/s, and 4xx/5xx answers per bucket",
        margin=MARGIN,
        yaxis={"title": "requests/s", "rangemode": "tozero"},
        yaxis2={"title": "answers", "overlaying": "y", "side": "right", "rangemode": "tozero", "showgrid": False},
        barmode="group",
    )
    return figure


def short_revision(revision: str) -> str:
    """A revision's label: its name without the service's prefix (``pefm-inference-``)."""
    for prefix in ("pefm-inference-", "pefm-ingest-", "pefm-monitor-"):
        if revision.startswith(prefix):
            return revision[len(prefix) :]
    return revision


def reference_vs_current(windows: dict[str, list[float]] | None, title: str) -> go.Figure:
    """Overlaid histograms of the values a drift check compared (training window vs recent)."""
    figure = go.Figure()
    if not windows:
        return _empty(figure, title, "no values compared for this signal")
    for name, color in (("reference", "#7f8c8d"), ("current", "#c0392b")):
        figure.add_trace(
            go.Histogram(x=windows[name], name=name, histnorm="probability density", marker_color=color, opacity=0.6)
        )
    figure.update_layout(
        title=plain(title),
        barmode="overlay",
        margin=MARGIN,
        legend={"orientation": "h"},
        xaxis_title="value (model space)",
        yaxis_title="density",
    )
    return figure


def accuracy_vs_backtest(history: pd.DataFrame, title: str) -> go.Figure:
    """Realized one-step RMSE per drift check against the backtest's RMSE, the checks where accuracy
    drifted marked. Accuracy has no threshold ratio: a permutation test decides it, so each check's
    p-value and the level alpha it was held to are in the hover."""
    figure = go.Figure()
    if history.empty:
        return _empty(figure, title, "no realized errors yet: none of the model's forecasts has come due")
    x = history["created_at"]
    kinds = _check_kinds(history)
    figure.add_trace(
        go.Scatter(
            x=x,
            y=history["realized_rmse"],
            mode="lines+markers",
            name="realized RMSE",
            marker=kinds["marker"],
            customdata=list(zip(history["p_value"], history["alpha"], kinds["customdata"], strict=True)),
            hovertemplate="realized RMSE %{y:.3g}<br>p = %{customdata[0]:.3g} (alpha %{customdata[1]:.3g})"
            "<br>check of %{customdata[2]}<extra></extra>",
        )
    )
    figure.add_trace(go.Scatter(x=x, y=history["backtest_rmse"], mode="lines+markers", name="backtest RMSE"))
    drifted = history[history["drifted"].astype(bool)]
    if not drifted.empty:
        figure.add_trace(
            go.Scatter(
                x=drifted["created_at"],
                y=drifted["realized_rmse"],
                mode="markers",
                name="accuracy drifted",
                marker={"symbol": "x", "size": 11, "color": "#c0392b"},
                hoverinfo="skip",
            )
        )
    figure.update_layout(title=plain(title), margin=MARGIN, legend={"orientation": "h"}, yaxis_title="one-step RMSE")
    _checks_axis(figure, x)
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
                    name=f"{plain(name)} %",
                )
            )
    figure.update_layout(title="traffic split (%)", yaxis={"range": [0, 100]}, margin=MARGIN)
    return figure


def with_markers(figure: go.Figure, events: pd.DataFrame) -> go.Figure:
    """Mark revision starts (cold starts) and rollout promotions/rollbacks on a time chart."""
    colors = {"start": "#8e44ad", "promote": "#27ae60", "rollback": "#c0392b"}
    lines = []
    for kind, group in events.groupby("kind"):
        color = colors.get(kind, "#555")
        lines += [
            {
                "type": "line",
                "x0": ts,
                "x1": ts,
                "xref": "x",
                "y0": 0,
                "y1": 1,
                "yref": "y domain",  # the plot's full height, whatever the data's range
                "line": {"color": color, "dash": "dot", "width": 1},
            }
            for ts in group["ts"]
        ]
        figure.add_trace(
            go.Scatter(
                x=group["ts"],
                y=[0] * len(group),
                mode="markers",
                name="cold start" if kind == "start" else kind,
                marker={"color": color, "symbol": "triangle-up", "size": 10},
                text=[plain(label) for label in group["label"]],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    # set once: each add_vline re-validates every shape already there, so a line per event made
    # the page's time quadratic in the events (300 cold starts in a day: 20 s a refresh)
    figure.update_layout(shapes=[*figure.layout.shapes, *lines])
    return figure
