"""The dashboard for a production WSGI server (its container runs gunicorn on ``dashboard.wsgi:server``);
``python -m dashboard.app`` is Flask's development server, for one machine."""

from __future__ import annotations

from dashboard.app import create_app
from pefm.config import get_settings
from pefm.storage.database import open_database

server = create_app(open_database(get_settings(), embedded_ok=False)).server
