"""Forecasts: a fan chart per series and model version, as known at a date, with backtest metrics."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dash_table, dcc, html

from dashboard import data, views
from dashboard.context import database

dash.register_page(__name__, path="/forecasts", name="Forecasts", order=1)

layout = html.Div(
    [
        html.H3("Forecasts"),
        dbc.Row(
            [
                dbc.Col(dcc.Dropdown(id="fc-series", placeholder="series", searchable=True), md=3),
                dbc.Col(dcc.Dropdown(id="fc-version", placeholder="model version"), md=3),
                dbc.Col(dcc.Dropdown(id="fc-compare", placeholder="compare with (e.g. the candidate)"), md=3),
                dbc.Col(dcc.DatePickerSingle(id="fc-as-of", placeholder="as of (vintage)", clearable=True), md=2),
            ],
            className="mb-2",
        ),
        dbc.Row(
            [
                dbc.Col(html.Small("horizon"), width="auto"),
                dbc.Col(dcc.Slider(id="fc-horizon", min=1, max=12, step=1, value=8)),
            ]
        ),
        dbc.Row(
            [
                dbc.Col(dcc.Graph(id="fc-chart")),
                dbc.Col(dcc.Graph(id="fc-compare-chart"), id="fc-compare-col", style={"display": "none"}),
            ]
        ),
        dbc.Button("Download CSV", id="fc-download-button", size="sm", className="mb-2"),
        dcc.Download(id="fc-download"),
        dash_table.DataTable(id="fc-metrics", page_size=20, style_table={"overflowX": "auto"}),
    ]
)


@callback(
    Output("fc-series", "options"),
    Output("fc-series", "value"),
    Input("refresh", "n_intervals"),
    State("fc-series", "value"),
)
def series_options(_, current):
    with database().connection() as conn:
        options = data.series_options(conn)
    return options, current or (options[0]["value"] if options else None)


@callback(
    Output("fc-version", "options"),
    Output("fc-version", "value"),
    Output("fc-compare", "options"),
    Input("fc-series", "value"),
)
def version_options(series_id):
    if not series_id:
        return [], None, []
    with database().connection() as conn:
        options = data.model_options(conn, series_id)
    return options, options[0]["value"] if options else None, options


@callback(
    Output("fc-chart", "figure"),
    Output("fc-compare-chart", "figure"),
    Output("fc-compare-col", "style"),
    Output("fc-metrics", "data"),
    Input("fc-series", "value"),
    Input("fc-version", "value"),
    Input("fc-horizon", "value"),
    Input("fc-as-of", "date"),
    Input("fc-compare", "value"),
)
def update(series_id, version_id, horizon, as_of, compare_id):
    chart, compared, rows = views.forecast_view(series_id, version_id, horizon or 8, as_of, compare_id)
    if compared is None:
        return chart, {}, {"display": "none"}, rows
    return chart, compared, {}, rows


@callback(
    Output("fc-download", "data"),
    Input("fc-download-button", "n_clicks"),
    State("fc-series", "value"),
    State("fc-version", "value"),
    State("fc-horizon", "value"),
    prevent_initial_call=True,
)
def download(_, series_id, version_id, horizon):
    with database().connection() as conn:
        frame = data.forecast(conn, version_id, series_id, horizon or 8)
    return dcc.send_data_frame(frame.to_csv, f"{series_id}-{version_id}.csv", index=False)
