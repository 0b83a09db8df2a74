"""Drift: the latest report as an Evidently-style table, and a row's score over time."""

from __future__ import annotations

import dash
from dash import Input, Output, callback, dash_table, dcc, html

from dashboard import views

dash.register_page(__name__, path="/drift", name="Drift", order=2)

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
        dcc.Graph(id="drift-history"),
    ]
)


@callback(
    Output("drift-header", "children"),
    Output("drift-table", "data"),
    Output("drift-history", "figure"),
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
