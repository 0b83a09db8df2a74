"""The database the pages read, set once by ``create_app`` (queries run in callbacks, never at
import), Prometheus when ``PEFM_PROMETHEUS_URL`` is set, and the drift policy."""

from __future__ import annotations

from functools import cache

from pefm.config import get_settings
from pefm.drift.policy import DriftPolicy
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
def drift_policy() -> DriftPolicy:
    """The drift policy the monitor uses (``PEFM_DRIFT_POLICY`` or the default): the Drift page
    explains its signals and methods with the lines written beside them."""
    return DriftPolicy.load(get_settings().drift_policy)


@cache
def prometheus() -> PrometheusProvider | None:
    url = get_settings().prometheus_url
    return PrometheusProvider(url) if url else None
