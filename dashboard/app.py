"""The Dash app: ``create_app(db)`` builds it; ``python -m dashboard.app`` (or ``pefm up``) serves it.

Multi-page (``Dash(use_pages=True)``), Bootstrap 5.3 CSS and Dash's own JS served locally (no CDN),
one ``dcc.Interval`` driving the live pages, every query in a callback. One theme in two modes:
Bootstrap's light and dark (``data-bs-theme`` on the page, switched in the navbar and remembered by
the browser); the charts' template is transparent and takes its text and grid colours from the
same Bootstrap variables (``assets/style.css``), so they follow the mode.

The charts use plotly.js's cartesian bundle (``assets/plotly-cartesian.min.js``, npm
``plotly.js-cartesian-dist-min`` at the version the ``plotly`` package bundles: scatter, bar,
histogram and the rest of the 2-D traces, 1.4 MB against the full bundle's 4.6 MB). Loaded as an
asset it defines ``window.Plotly`` before any graph mounts, so ``dcc.Graph`` never fetches the full
bundle; parsing a third of the code makes each chart page paint about 0.9 s sooner (bench/dashboard.py).
A trace type outside the bundle would not draw: the browser tests open every page.

A callback that cannot reach the database leaves its page as it was and opens an alert above every
page saying so (it had been a 500 after the pool's timeout, the page silently keeping old data);
the refresh closes it once the database answers again.
"""

from __future__ import annotations

from pathlib import Path

import dash
import dash_bootstrap_components as dbc
import psycopg
from dash import Dash, Input, Output, clientside_callback, dcc, html, set_props

from dashboard.components import figures  # noqa: F401  (registers the charts' template)
from dashboard.context import database, set_database
from pefm.storage.database import Database

HERE = Path(__file__).resolve().parent
REFRESH_MS = 20_000


def create_app(db: Database) -> Dash:
    """The dashboard reading ``db``."""
    set_database(db)
    app = Dash(
        __name__,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        serve_locally=True,
        suppress_callback_exceptions=True,
        title="PEFM",
        on_error=database_unreachable,
    )
    app.index_string = app.index_string.replace("<html>", '<html lang="en">', 1)  # screen readers pick the voice
    links = [
        dbc.NavItem(dbc.NavLink(page["name"], href=page["relative_path"], active="exact"))
        for page in sorted(dash.page_registry.values(), key=lambda p: p.get("order", 99))
    ]
    theme = dbc.Switch(
        id="theme-switch",
        label="dark mode",
        value=False,
        persistence=True,
        persistence_type="local",
        class_name="text-light ms-3 mb-0",
    )
    app.layout = html.Div(
        [
            dbc.NavbarSimple([*links, dbc.NavItem(theme)], brand="PEFM", color="dark", dark=True, fluid=True),
            html.Main(
                dbc.Container(
                    [dbc.Alert(id="db-alert", color="danger", is_open=False, className="py-2"), dash.page_container],
                    fluid=True,
                    className="pt-3",
                )
            ),
            dcc.Interval(id="refresh", interval=REFRESH_MS),
            dcc.Store(id="theme-applied"),
        ]
    )
    clientside_callback(
        """(dark) => { document.documentElement.setAttribute('data-bs-theme', dark ? 'dark' : 'light');
                       return dark ? 'dark' : 'light'; }""",
        Output("theme-applied", "data"),
        Input("theme-switch", "value"),
    )
    app.callback(Output("db-alert", "is_open"), Input("refresh", "n_intervals"))(database_answers)
    app.server.add_url_rule("/health", "health", lambda: "OK")
    return app


def database_answers(_) -> bool:
    """Whether to show the alert: not once the database answers (when it does not, the error opens it)."""
    with database().connection() as conn:
        conn.execute("SELECT 1")
    return False


def database_unreachable(error: Exception) -> None:
    """Every callback's error handler: a database that does not answer (a connection refused or
    lost, the pool's timeout) opens the alert and leaves the page's outputs as they are; anything
    else stays an error."""
    if not isinstance(error, psycopg.OperationalError):
        raise error
    set_props(
        "db-alert",
        {
            "is_open": True,
            "children": f"The database does not answer ({type(error).__name__}): this page shows what it read "
            "last, and tries again at every refresh.",
        },
    )


if __name__ == "__main__":
    from pefm.config import get_settings
    from pefm.local.runtime import watch_stack
    from pefm.storage.database import open_database

    watch_stack()  # `pefm up`'s ends with it, however that ended
    settings = get_settings()
    create_app(open_database(settings)).run(host=settings.dashboard_host, port=settings.dashboard_port)
