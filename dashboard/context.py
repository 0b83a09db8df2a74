"""The database the pages read, set once by ``create_app`` (queries run in callbacks, never at
import), and Prometheus when ``PEFM_PROMETHEUS_URL`` is set."""

from __future__ import annotations

from functools import cache

from pefm.config import get_settings
from pefm.rollout.providers import PrometheusProvider
from pefm.storage.database import Database

_db: Database | None = None


def set_database(db: Database) -> None:
    global _db
    _db = db


def database() -> Database:
    if _db is None:
        raise RuntimeError("the dashboard has no database: build it with dashboard.app.create_app(db)")
    return _db


@cache
def prometheus() -> PrometheusProvider | None:
    url = get_settings().prometheus_url
    return PrometheusProvider(url) if url else None
