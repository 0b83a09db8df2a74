"""Models: the registry, every version with its status, data cut-off, backtest setup, accuracy and
gate verdict; tick one or two to see them side by side (``#compare=a,b`` in the URL)."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qsl, urlencode

import dash
import dash_bootstrap_components as dbc
import plotly
from dash import Input, Output, State, callback, ctx, dash_table, dcc, html, no_update

from dashboard import data, views
from dashboard.components.figures import WARN
from dashboard.context import database

dash.register_page(__name__, path="/models", name="Models", order=2)

COLUMNS = [
    ("version", "id"),
    ("status", "status"),
    ("family", "family"),
    ("data as of", "data_as_of"),
    ("registered", "created"),
    ("series", "series"),
    ("backtest", "backtest"),
    ("median RMSE / naive, h=1", "rmse_ratio_naive_h1"),
    ("gates", "gates"),
    ("why", "status_reason"),
]

layout = html.Div(
    [
        dcc.Location(id="models-url", refresh=False),
        dcc.Store(id="models-drawn"),  # a digest of the cards drawn: a refresh that would draw the same leaves them
        html.H1("Models", className="h3"),
        html.P(
            "Every registered version. Tick one or two below the table to see them side by side; the serving one "
            "is shown when none is ticked.",
            className="small text-muted",
        ),
        dash_table.DataTable(
            id="models-table",
            columns=[{"name": name, "id": key} for name, key in COLUMNS],
            sort_action="native",
            filter_action="native",
            page_size=15,
            style_table={"overflowX": "auto"},
            style_cell={"textAlign": "left", "fontSize": "0.85rem"},
            style_data_conditional=[
                {"if": {"filter_query": '{status} = "serving"'}, "fontWeight": "bold"},
                {"if": {"filter_query": '{gates} = "failed"', "column_id": "gates"}, "backgroundColor": WARN},
            ],
        ),
        html.Fieldset(
            [
                html.Legend("Show side by side", className="small fw-bold mb-1 mt-3"),
                dbc.Checklist(id="models-compare", options=[], value=[], inline=True, class_name="small"),
            ]
        ),
        dbc.Row(id="models-detail", className="mt-2"),
    ]
)


@callback(
    Output("models-table", "data"),
    Output("models-compare", "options"),
    Output("models-compare", "value"),
    Output("models-url", "hash"),
    Output("models-detail", "children"),
    Output("models-drawn", "data"),
    Input("refresh", "n_intervals"),
    Input("models-url", "hash"),
    Input("models-compare", "value"),
    State("models-table", "data"),
    State("models-drawn", "data"),
)
def update(_, fragment, ticked, listed, drawn):
    """The table, the ticked versions and the URL kept in step: a link's ``compare`` ticks them;
    ticking writes them into the URL (two at most: the latest two ticked). A refresh leaves the
    table and the cards alone where they would be drawn the same: rebuilt, their tables went back
    to their first page and lost their sorting every 20 seconds."""
    if ctx.triggered_id == "models-compare":  # the client sends what it likes: a list of ids, or nothing
        ids = [v for v in ticked if isinstance(v, str)][-2:] if isinstance(ticked, list) else []
    else:
        fragment = fragment.lstrip("#") if isinstance(fragment, str) else ""
        ids = [v for v in dict(parse_qsl(fragment)).get("compare", "").split(",") if v][:2]
    with database().connection() as conn:
        rows = data.registry(conn)
    known = [r["id"] for r in rows]
    ids = [i for i in ids if i in known]
    shown = ids or [r["id"] for r in rows if r["status"] == "serving"][:1]
    cards = [dbc.Col(views.version_card(i), lg=12 // max(len(shown), 1)) for i in shown]
    options = [{"label": f"{r['id']} ({r['status']})", "value": r["id"]} for r in rows]
    fragment_out = "#" + urlencode({"compare": ",".join(ids)}, safe=",") if ids else ""
    if fragment_out == (fragment or ""):
        fragment_out = no_update
    cards = cards or [html.P("no model version yet: pefm train")]
    digest = hashlib.sha256(json.dumps(cards, cls=plotly.utils.PlotlyJSONEncoder, sort_keys=True).encode()).hexdigest()
    if ctx.triggered_id != "refresh":
        return rows, options, ids, fragment_out, cards, digest
    same = rows == listed
    return (
        no_update if same else rows,
        no_update if same else options,
        no_update if same else ids,
        fragment_out,
        no_update if digest == drawn else cards,
        digest,
    )
