"""Charts that keep the user's zoom when a callback redraws them (the 20-second refresh among them).

A page's callback writes the new figure into a ``dcc.Store``; a clientside callback, ``keepView``
(``assets/keep_view.js``), draws it, carrying over every axis the user zoomed or panned while the
figure's ``uirevision`` is the one on screen. Plotly's own uirevision does not survive dcc.Graph's
re-plots here, so every redrawn chart goes this one way: a new view (other data) changes the
uirevision and starts from its own extent.
"""

from __future__ import annotations

from dash import ClientsideFunction, Input, Output, State, clientside_callback, dcc, html


def figure_store(graph_id: str) -> str:
    """The id of the store a chart's figure is written into."""
    return f"{graph_id}-figure"


def keep_view(graph_id: str, store_id: str | None = None) -> None:
    """Draw ``graph_id`` from its store (``figure_store`` unless named), keeping the user's zoom.
    Call it once per chart, when the page's module is imported."""
    clientside_callback(
        ClientsideFunction(namespace="pefm", function_name="keepView"),
        Output(graph_id, "figure"),
        Input(store_id or figure_store(graph_id), "data"),
        State(graph_id, "id"),
    )


def zoomable(graph_id: str, **graph) -> html.Div:
    """A chart drawn from its store (``keep_view``): the graph and the store, together."""
    return html.Div([dcc.Store(id=figure_store(graph_id)), dcc.Graph(id=graph_id, **graph)])
