"""The Dash app: ``create_app(db)`` builds it; ``python -m dashboard.app`` (or ``pefm up``) serves it.

Multi-page (``Dash(use_pages=True)``), Bootstrap CSS and Dash's own JS served locally (no CDN),
one ``dcc.Interval`` driving the live pages, every query in a callback.
"""

from __future__ import annotations

from pathlib import Path

import dash
import dash_bootstrap_components as dbc
from dash import Dash, dcc, html

from dashboard.context import set_database
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
    )
    links = [
        dbc.NavItem(dbc.NavLink(page["name"], href=page["relative_path"], active="exact"))
        for page in sorted(dash.page_registry.values(), key=lambda p: p.get("order", 99))
    ]
    app.layout = html.Div(
        [
            dbc.NavbarSimple(links, brand="PEFM", color="dark", dark=True, fluid=True),
            dbc.Container(dash.page_container, fluid=True, className="pt-3"),
            dcc.Interval(id="refresh", interval=REFRESH_MS),
        ]
    )
    app.server.add_url_rule("/health", "health", lambda: "OK")
    return app


if __name__ == "__main__":
    from pefm.config import get_settings
    from pefm.storage.database import open_database

    settings = get_settings()
    create_app(open_database(settings)).run(host=settings.dashboard_host, port=settings.dashboard_port)
