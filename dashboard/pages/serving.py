"""Serving: latency quantiles and request rate per revision, errors by class, with revision starts
(cold starts) and promotions/rollbacks marked."""

from __future__ import annotations

import dash
from dash import Input, Output, callback, dash_table, dcc, html

from dashboard import views

dash.register_page(__name__, path="/serving", name="Serving", order=4)

layout = html.Div(
    [
        html.H3("Serving"),
        dcc.Graph(id="serving-latency"),
        dcc.Graph(id="serving-rate"),
        dash_table.DataTable(id="serving-totals"),
    ]
)


@callback(
    Output("serving-latency", "figure"),
    Output("serving-rate", "figure"),
    Output("serving-totals", "data"),
    Input("refresh", "n_intervals"),
)
def update(_):
    return views.serving_view()
