"""Drift: the latest report as a sortable, filterable table of signals; for the chosen signal its
score over the checks, the values compared and the realized error against the backtest's; the
retraining that drift requested and what became of it; what each signal and method means, from
the drift policy file."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dash_table, html, no_update

from dashboard import views
from dashboard.components.figures import WARN
from dashboard.components.zoom import figure_store, keep_view, zoomable

dash.register_page(__name__, path="/drift", name="Drift", order=3)

COLUMNS = [
    ("series", "series"),
    ("signal", "feature"),
    ("method", "method"),
    ("score", "score"),
    ("threshold", "threshold"),
    ("p-value", "p_value"),
    ("drifted", "drifted"),
]

GRAPHS = ("drift-history", "drift-histograms", "drift-accuracy")

layout = html.Div(
    [
        html.H1("Drift", className="h3"),
        html.Div(id="drift-header", className="mb-2"),
        dash_table.DataTable(
            id="drift-table",
            columns=[{"name": name, "id": key} for name, key in COLUMNS],
            page_size=12,
            sort_action="native",
            filter_action="native",
            style_cell={"textAlign": "left"},
            style_data_conditional=[{"if": {"filter_query": '{drifted} = "yes"'}, "backgroundColor": WARN}],
        ),
        dbc.Row(
            [
                dbc.Col(dbc.Label("Signal shown", html_for="drift-choice", className="small mb-0"), width="auto"),
                dbc.Col(dbc.Select(id="drift-choice", size="sm"), md=4),
            ],
            className="mt-3 mb-1 align-items-center",
        ),
        dbc.Row([dbc.Col(zoomable(graph), xl=4, md=6) for graph in GRAPHS]),
        html.H2("Retraining", className="h5 mt-2"),
        html.P(id="drift-retraining-note", className="small mb-1"),
        html.Div(id="drift-retraining"),
        html.H2("What the signals and methods mean", className="h5 mt-2"),
        html.Dl(id="drift-legend", className="row-facts"),
    ]
)


for graph in GRAPHS:
    keep_view(graph)


@callback(
    Output("drift-header", "children"),
    Output("drift-table", "data"),
    Output("drift-choice", "options"),
    Output("drift-choice", "value"),
    *(Output(figure_store(graph), "data") for graph in GRAPHS),
    Output("drift-legend", "children"),
    Input("refresh", "n_intervals"),
    Input("drift-choice", "value"),
)
def update(_, choice):
    return views.drift_view(choice)


@callback(
    Output("drift-retraining-note", "children"),
    Output("drift-retraining", "children"),
    Input("refresh", "n_intervals"),
    State("drift-retraining", "children"),
)
def update_retraining(_, shown):
    """The note, and the table only when its rows changed: rebuilt on every refresh, it went back
    to its first page and lost its sorting."""
    note, table = views.retraining_view()
    rows = getattr(table, "data", None)
    if rows is not None and isinstance(shown, dict) and shown.get("props", {}).get("data") == rows:
        return note, no_update
    return note, table
