"""Overview: the state of the whole system on one screen."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, html

from dashboard import data, views
from dashboard.context import database, prometheus

dash.register_page(__name__, path="/", name="Overview", order=0)


layout = html.Div([html.H1("Overview", className="h3"), dbc.Row(id="overview-cards")])


@callback(Output("overview-cards", "children"), Input("refresh", "n_intervals"))
def refresh(_):
    with database().connection() as conn:
        return views.overview_cards(data.overview(conn, prometheus=prometheus()))
