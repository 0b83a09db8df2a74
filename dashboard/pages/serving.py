"""Serving: the inference service's latency quantiles and request rate per revision over a chosen
time range, 4xx and 5xx answers, with revision starts (cold starts) and promotions/rollbacks marked."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dash_table, html

from dashboard import views
from dashboard.components.zoom import figure_store, keep_view, zoomable

dash.register_page(__name__, path="/serving", name="Serving", order=4)

LABELS = {15: "15 min", 60: "1 hour", 360: "6 hours", 1440: "24 hours"}

layout = html.Div(
    [
        html.H1("Serving", className="h3"),
        dbc.Row(
            [
                dbc.Col(dbc.Label("Time range", html_for="serving-range", className="small mb-0"), width="auto"),
                dbc.Col(
                    dbc.RadioItems(
                        id="serving-range",
                        options=[{"label": LABELS[m], "value": m} for m in views.RANGES],
                        value=60,
                        inline=True,
                    ),
                    width="auto",
                ),
            ],
            className="mb-2 align-items-center",
        ),
        zoomable("serving-latency"),
        zoomable("serving-rate"),
        html.H2("Totals per revision", className="h5"),
        dash_table.DataTable(
            id="serving-totals",
            columns=[
                {"name": "revision", "id": "label"},
                {"name": "full name", "id": "revision"},
                {"name": "requests", "id": "requests"},
                {"name": "4xx", "id": "errors_4xx"},
                {"name": "5xx", "id": "errors_5xx"},
            ],
            sort_action="native",
            style_cell={"textAlign": "left"},
        ),
    ]
)


keep_view("serving-latency")
keep_view("serving-rate")


@callback(
    Output(figure_store("serving-latency"), "data"),
    Output(figure_store("serving-rate"), "data"),
    Output("serving-totals", "data"),
    Input("refresh", "n_intervals"),
    Input("serving-range", "value"),
)
def update(_, minutes):
    return views.serving_view(minutes)  # checked there: it comes from the client
