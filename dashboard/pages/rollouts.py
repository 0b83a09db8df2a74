"""Rollouts: the traffic split over time, current weights, each step's checks, the event log, and
the operator's Promote / Pause / Resume / Roll back buttons (admin token, through the rollout API)."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dash_table, dcc, html

from dashboard import views

dash.register_page(__name__, path="/rollouts", name="Rollouts", order=5)

ACTIONS = (("promote", "Promote", "success"), ("pause", "Pause", "warning"), ("resume", "Resume", "secondary"))
ACTIONS += (("rollback", "Roll back", "danger"),)

layout = html.Div(
    [
        html.H3("Rollouts"),
        dbc.Row(
            [
                dbc.Col(dcc.Dropdown(id="ro-rollout", placeholder="rollout", clearable=False), md=5),
                dbc.Col(html.H5(id="ro-weights", className="mt-1"), md=7),
            ],
            className="mb-2",
        ),
        dcc.Graph(id="ro-traffic"),
        dbc.Row(
            [
                dbc.Col(dbc.Input(id="ro-token", type="password", placeholder="admin token", autoComplete="off"), md=3),
                dbc.Col(
                    dbc.ButtonGroup(
                        [
                            dbc.Button(label, id={"type": "ro-action", "action": action}, color=color)
                            for action, label, color in ACTIONS
                        ]
                    ),
                    md="auto",
                ),
                dbc.Col(html.Div(id="ro-message", className="mt-2"), md=True),
            ],
            className="mb-3",
        ),
        dcc.Store(id="ro-acted", data=0),
        html.H5("Checks per step"),
        dash_table.DataTable(
            id="ro-checks",
            page_size=10,
            style_data_conditional=[{"if": {"filter_query": '{result} = "FAIL"'}, "backgroundColor": "#fdecea"}],
        ),
        html.H5("Events", className="mt-3"),
        dash_table.DataTable(id="ro-events", page_size=15, style_cell={"textAlign": "left", "whiteSpace": "normal"}),
    ]
)


@callback(
    Output("ro-rollout", "options"),
    Output("ro-rollout", "value"),
    Output("ro-weights", "children"),
    Output("ro-traffic", "figure"),
    Output("ro-checks", "data"),
    Output("ro-events", "data"),
    Input("refresh", "n_intervals"),
    Input("ro-rollout", "value"),
    Input("ro-acted", "data"),
)
def update(_, rollout_id, _acted):
    return views.rollout_view(rollout_id)


@callback(
    Output("ro-message", "children"),
    Output("ro-acted", "data"),
    Input({"type": "ro-action", "action": ALL}, "n_clicks"),
    State("ro-rollout", "value"),
    State("ro-token", "value"),
    State("ro-acted", "data"),
    prevent_initial_call=True,
)
def act(clicks, rollout_id, token, acted):
    if not any(clicks):
        raise dash.exceptions.PreventUpdate
    done, message = views.rollout_action(rollout_id, ctx.triggered_id["action"], token)
    return dbc.Alert(message, color="success" if done else "danger", className="py-1 mb-0"), acted + (1 if done else 0)
