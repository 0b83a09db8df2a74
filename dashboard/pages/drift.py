"""Drift: the latest report as an Evidently-style table; for the chosen row its score over time,
the values compared, and the realized error against the backtest's."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dash_table, dcc, html

from dashboard import views

dash.register_page(__name__, path="/drift", name="Drift", order=3)

layout = html.Div(
    [
        html.H3("Drift"),
        html.Div(id="drift-header", className="mb-2"),
        dash_table.DataTable(
            id="drift-table",
            row_selectable="single",
            page_size=20,
            style_data_conditional=[{"if": {"filter_query": '{drifted} = "yes"'}, "backgroundColor": "#fdecea"}],
        ),
        dbc.Row(
            [
                dbc.Col(dcc.Graph(id="drift-history"), md=4),
                dbc.Col(dcc.Graph(id="drift-histograms"), md=4),
                dbc.Col(dcc.Graph(id="drift-accuracy"), md=4),
            ]
        ),
    ]
)


@callback(
    Output("drift-header", "children"),
    Output("drift-table", "data"),
    Output("drift-history", "figure"),
    Output("drift-histograms", "figure"),
    Output("drift-accuracy", "figure"),
    Input("refresh", "n_intervals"),
    Input("drift-table", "selected_rows"),
    Input("drift-table", "data"),
)
def update(_, selected, rows):
    if selected and rows:
        row = rows[selected[0]]
        feature = row["feature"] if row["feature"] in ("value", "volatility") else "value"
        return views.drift_view(row["series"], feature)
    return views.drift_view()
