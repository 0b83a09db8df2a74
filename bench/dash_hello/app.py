"""The anchor for bench/dashboard.py: the smallest useful Dash page, served the same way as ours
(local assets, the Flask server): one graph whose figure comes from one callback, no database."""

from __future__ import annotations

import os

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html

app = Dash(__name__, serve_locally=True)
app.layout = html.Div([html.H3("hello"), dcc.Graph(id="chart"), dcc.Interval(id="tick", max_intervals=0)])


@app.callback(Output("chart", "figure"), Input("tick", "n_intervals"))
def chart(_):
    return go.Figure(go.Scatter(x=list(range(80)), y=[i % 7 for i in range(80)], name="actual"))


@app.server.route("/health")
def health():
    return "OK"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PEFM_DASHBOARD_PORT"]))
