"""The database the pages read, set once by ``create_app`` (queries run in callbacks, never at
import), Prometheus when ``PEFM_PROMETHEUS_URL`` is set, the drift policy, and the services that
failed lately."""

from __future__ import annotations

import time
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


RETRY_S = 60.0
"""How long a service that failed (Prometheus, MLflow) is not asked again: a slow or unreachable
one delayed every refresh by its whole timeout (5 s for Prometheus, 2 s per Models card)."""

_failures: dict[str, tuple[float, str]] = {}


def recent_failure(service: str) -> str | None:
    """Why ``service`` (its URL) failed within the last ``RETRY_S`` seconds, else None: ask it."""
    failed = _failures.get(service)
    return failed[1] if failed is not None and time.monotonic() - failed[0] < RETRY_S else None


def remember_failure(service: str, why: str) -> None:
    _failures[service] = (time.monotonic(), why)
