"""Rollouts: the traffic split over time, current weights, each step's checks, the event log, and
the operator's Promote / Pause / Resume / Roll back buttons (admin token, through the rollout API),
each enabled only where the chosen rollout's phase allows it."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dash_table, dcc, html

from dashboard import views
from dashboard.components.figures import WARN
from dashboard.components.zoom import figure_store, keep_view, zoomable

dash.register_page(__name__, path="/rollouts", name="Rollouts", order=5)

LABELS = {
    "promote": ("Promote", "success"),
    "pause": ("Pause", "warning"),
    "resume": ("Resume", "secondary"),
    "rollback": ("Roll back", "danger"),
}
ACTIONS = tuple((action, *LABELS[action]) for action in views.ROLLOUT_ACTIONS)

layout = html.Div(
    [
        html.H1("Rollouts", className="h3"),
        dbc.Row(
            [
                dbc.Col(
                    [
                        dbc.Label("Rollout", html_for="ro-rollout", className="small mb-0"),
                        dbc.Select(id="ro-rollout", size="sm"),
                    ],
                    md=5,
                ),
                dbc.Col(html.Div(id="ro-weights", className="fs-5 mt-3"), md=7),
            ],
            className="mb-2",
        ),
        zoomable("ro-traffic"),
        dbc.Row(
            [
                dbc.Col(
                    [  # a placeholder is no label: it is gone once typed in, and not every reader says it
                        dbc.Label("Admin token", html_for="ro-token", className="small mb-0"),
                        dbc.Input(id="ro-token", type="password", placeholder="admin token", autoComplete="off"),
                    ],
                    md=3,
                ),
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
            className="mb-3 align-items-end",
        ),
        dcc.Store(id="ro-acted", data=0),
        html.H2("Checks per step", className="h5"),
        dash_table.DataTable(
            id="ro-checks",
            page_size=10,
            style_data_conditional=[{"if": {"filter_query": '{result} = "FAIL"'}, "backgroundColor": WARN}],
        ),
        html.H2("Events", className="h5 mt-3"),
        dash_table.DataTable(id="ro-events", page_size=15, style_cell={"textAlign": "left", "whiteSpace": "normal"}),
    ]
)


keep_view("ro-traffic")


@callback(
    Output("ro-rollout", "options"),
    Output("ro-rollout", "value"),
    Output("ro-weights", "children"),
    Output(figure_store("ro-traffic"), "data"),
    Output("ro-checks", "data"),
    Output("ro-events", "data"),
    Output({"type": "ro-action", "action": ALL}, "disabled"),
    Input("refresh", "n_intervals"),
    Input("ro-rollout", "value"),
    Input("ro-acted", "data"),
)
def update(_, rollout_id, _acted):
    chosen = _rollout_id(rollout_id)
    *shown, allowed = views.rollout_view(chosen)
    return *shown, [action not in allowed for action, _, _ in ACTIONS]


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
    action = ctx.triggered_id.get("action") if isinstance(ctx.triggered_id, dict) else None
    done, message = views.rollout_action(_rollout_id(rollout_id), action, token)
    acted = acted if type(acted) is int else 0
    return dbc.Alert(message, color="success" if done else "danger", className="py-1 mb-0"), acted + (1 if done else 0)


def _rollout_id(value) -> int | None:
    """The rollout the client chose, when it sent an id (ASCII digits: "²" is a digit to
    str.isdigit and not to int, nor are 5,000 of them to int)."""
    text = str(value or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
