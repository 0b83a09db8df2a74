"""Forecasts: one panel per chosen series (small multiples), in the series' units or in model
space, the latest forecast or the one made from the data known on a date, with the backtest's
accuracy per horizon. The view lives in the URL (``dashboard/state.py``)."""

from __future__ import annotations

from dataclasses import replace

import dash
import dash_bootstrap_components as dbc
from dash import (
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    ctx,
    dash_table,
    dcc,
    html,
    no_update,
)

from dashboard import data, views
from dashboard.components.figures import WARN
from dashboard.components.zoom import keep_view
from dashboard.context import database
from dashboard.state import MAX_HORIZON, MAX_SERIES, ForecastView

dash.register_page(__name__, path="/forecasts", name="Forecasts", order=1)

CONTROLS = ("fc-series", "fc-version", "fc-compare", "fc-horizon", "fc-as-of", "fc-space")
PROPS = ("value",) * len(CONTROLS)
NONE = "none"  # the compare picker's "no comparison" (a select cannot show an empty value)
METRIC_COLUMNS = [
    ("series", "series_id"),
    ("version", "version"),
    ("h", "h"),
    ("n", "n"),
    ("RMSE", "rmse"),
    ("MASE", "mase"),
    ("RMSE / naive", "rmse_ratio_naive"),
    ("DM p vs naive", "dm_p_naive"),
    ("80% coverage", "coverage-80"),
    ("95% coverage", "coverage-95"),
    ("coverage short", "weak"),
]


def _coverage(series: list[data.SeriesInfo]) -> str:
    covered = sum(1 for s in series if s.version)
    note = f"{covered} of {len(series)} series have a forecast; up to {MAX_SERIES} are drawn at a time"
    return note + ("; those marked (no forecast) say why when chosen" if covered < len(series) else "")


def layout(**_query) -> html.Div:
    """The page, without a query: the series to choose from come with series_options' first call.
    A layout that raised (the database away) was never sent, and Dash renders a page again only
    when its URL changes: the page stayed blank, or showed the one before, once the database was back."""
    return html.Div(
        [
            dcc.Location(id="fc-url", refresh=False),
            html.H1("Forecasts", className="h3"),
            dbc.Row(
                [
                    dbc.Col(
                        [
                            dbc.Label("Series", html_for="fc-series-toggle", className="small mb-0 d-block"),
                            html.Button(  # dbc.Button takes no aria-expanded: screen readers say open or closed
                                "choose",
                                id="fc-series-toggle",
                                className="btn btn-outline-secondary btn-sm w-100 text-start",
                                **{"aria-expanded": "false", "aria-controls": "fc-series-panel"},
                            ),
                        ],
                        lg=4,
                        md=6,
                    ),
                    dbc.Col(
                        [
                            dbc.Label("Model version", html_for="fc-version", className="small mb-0"),
                            dbc.Select(id="fc-version", size="sm"),
                        ],
                        lg=3,
                        md=6,
                    ),
                    dbc.Col(
                        [
                            dbc.Label("Compare with", html_for="fc-compare", className="small mb-0"),
                            dbc.Select(id="fc-compare", size="sm"),
                        ],
                        lg=3,
                        md=6,
                    ),
                    dbc.Col(
                        [
                            dbc.Label("As of (data known on)", html_for="fc-as-of", className="small mb-0"),
                            dbc.InputGroup(
                                [
                                    dbc.Input(id="fc-as-of", type="date", size="sm"),
                                    dbc.Button("latest", id="fc-latest", color="secondary", outline=True, size="sm"),
                                ],
                                size="sm",
                            ),
                        ],
                        lg=2,
                        md=6,
                    ),
                ],
                className="mb-1 g-2",
            ),
            dbc.Collapse(
                dbc.Card(
                    dbc.CardBody(
                        dbc.Checklist(id="fc-series", options=[], value=[], class_name="series-grid"),
                        class_name="py-2",
                    )
                ),
                id="fc-series-panel",
                is_open=False,
                class_name="mb-2",
            ),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.RadioItems(
                            id="fc-space",
                            options=[
                                {"label": "series' units (level)", "value": "level"},
                                {"label": "model space", "value": "model"},
                            ],
                            value="level",
                            inline=True,
                        ),
                        md="auto",
                    ),
                    dbc.Col(dbc.Label("Horizon", html_for="fc-horizon", className="small mb-0"), width="auto"),
                    dbc.Col(
                        dbc.Select(
                            id="fc-horizon",
                            options=[{"label": f"{k} steps", "value": k} for k in range(1, MAX_HORIZON + 1)],
                            value=8,
                            size="sm",
                        ),
                        width="auto",
                    ),
                    dbc.Col(
                        dbc.Button("Download CSV", id="fc-download-button", size="sm", color="secondary"), width="auto"
                    ),
                ],
                className="mb-2 align-items-center g-2",
            ),
            html.Div(id="fc-coverage-note", className="small text-muted mb-1"),
            dcc.Store(id="fc-figure"),
            dcc.Graph(id="fc-chart", config={"displaylogo": False}),
            dcc.Download(id="fc-download"),
            html.H2("Backtest accuracy by horizon", className="h5 mt-2"),
            html.Div(id="fc-metrics-note", className="small text-muted mb-1"),
            dash_table.DataTable(
                id="fc-metrics",
                columns=[{"name": name, "id": key} for name, key in METRIC_COLUMNS],
                page_size=20,
                sort_action="native",
                style_table={"overflowX": "auto"},
                style_data_conditional=[
                    {"if": {"filter_query": '{weak} != ""', "column_id": "weak"}, "backgroundColor": WARN},
                    {"if": {"filter_query": "{h} = all"}, "fontWeight": "bold"},
                ],
            ),
        ]
    )


# the series list opens and closes, and its button names the chosen series, in the browser
clientside_callback(
    "(clicks, open) => [!open, String(!open)]",
    Output("fc-series-panel", "is_open"),
    Output("fc-series-toggle", "aria-expanded"),
    Input("fc-series-toggle", "n_clicks"),
    State("fc-series-panel", "is_open"),
    prevent_initial_call=True,
)
clientside_callback(
    "(series) => ((series || []).join(', ') || 'choose') + ' ▾'",
    Output("fc-series-toggle", "children"),
    Input("fc-series", "value"),
)


@callback(Output("fc-as-of", "value", allow_duplicate=True), Input("fc-latest", "n_clicks"), prevent_initial_call=True)
def latest(_):
    return ""


@callback(
    Output("fc-series", "options"),
    Output("fc-coverage-note", "children"),
    Input("refresh", "n_intervals"),
)
def series_options(_):
    with database().connection() as conn:
        series = data.catalog(conn)
    return data.series_options(series), _coverage(series)


@callback(
    *(Output(c, p) for c, p in zip(CONTROLS, PROPS, strict=True)),
    Output("fc-version", "options"),
    Output("fc-compare", "options"),
    Output("fc-url", "hash"),
    Output("fc-figure", "data"),
    Output("fc-metrics", "data"),
    Output("fc-metrics-note", "children"),
    Output("fc-download-button", "disabled"),
    Output("fc-as-of", "min"),
    Output("fc-as-of", "max"),
    Input("fc-url", "hash"),
    *(Input(c, p) for c, p in zip(CONTROLS, PROPS, strict=True)),
    Input("refresh", "n_intervals"),
)
def render(fragment, series, version, compare, horizon, as_of, space, _):
    """The page in one step (one round trip, not a chain). The URL and the controls are kept in
    step: each is the other's input. Opening a link sets the controls from it (and the URL to the
    whole view, defaults filled in); a change of control writes the view into the URL; a refresh
    redraws what is chosen. A series not covered by the chosen version switches the version to
    the one serving it; the version pickers' options come with their values (the versions that
    forecast the first series). The as-of date is bounded by the chosen series' data: from the
    first moment anything about them became known (their first vintage: a first observation is
    known only once published) to the last. The catalog is read once and serves the whole render."""
    if ctx.triggered_id in (None, "fc-url"):
        view = ForecastView.from_fragment(fragment)
    else:
        view = _view(series, version, compare, horizon, as_of, space)
    with database().connection() as conn:
        catalog = data.catalog(conn)
        if not view.series:
            view = replace(view, series=tuple([s.id for s in catalog if s.version][:1]))
        first = next((s for s in catalog if view.series and s.id == view.series[0]), None)
        options = data.model_options(conn, first) if first else []
    chosen = [s for s in catalog if s.id in view.series and s.first_known is not None]
    versions = [o["value"] for o in options]
    if view.version not in versions:
        view = replace(view, version=versions[0] if versions else None)
    fragment_out = view.to_fragment()
    figure, rows = views.forecast_view(view, catalog)
    note = (
        "Each version's rolling-origin backtest, stored when it was registered: per step h (and all steps pooled), "
        "RMSE over the naive forecast's (the last known value) with the Diebold-Mariano p-value against it; "
        "coverage short: below nominal by a one-sided binomial test at 5%."
        if rows
        else "no backtest stored for these series"
    )
    return (
        list(view.series),
        view.version,
        view.compare or NONE,
        view.horizon,
        view.as_of or "",
        view.space,
        options,
        [{"label": "none", "value": NONE}, *options],
        no_update if fragment_out == (fragment or "") else fragment_out,
        figure,
        rows,
        note,
        not any(t.name == "forecast" for t in figure.data),
        f"{min(s.first_known for s in chosen):%Y-%m-%d}" if chosen else None,
        f"{max(s.known_since or s.last for s in chosen):%Y-%m-%d}" if chosen else None,
    )


def _view(series, version, compare, horizon, as_of, space) -> ForecastView:
    """The view the controls show (selects give strings; an empty one means none), as the client
    sent them: checked, like a link's."""
    return ForecastView.checked(series, version, None if compare == NONE else compare, horizon, as_of, space)


# the drawn figure: the new one, with the user's zoom kept while the view stays (a refresh)
keep_view("fc-chart", "fc-figure")


@callback(
    Output("fc-download", "data"),
    Input("fc-download-button", "n_clicks"),
    *(State(c, p) for c, p in zip(CONTROLS, PROPS, strict=True)),
    prevent_initial_call=True,
)
def download(_, series, version, compare, horizon, as_of, space):
    view = _view(series, version, compare, horizon, as_of, space)
    frame = views.forecast_csv(view)
    name = "-".join(view.series) + (f"-as-of-{view.as_of}" if view.as_of else "") + f"-{view.space}.csv"
    return dcc.send_data_frame(frame.to_csv, name, index=False)
