"""PostgreSQL NOTIFY channels (a module of its own: listeners need no pandas)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

OBSERVATIONS_CHANNEL = "pefm_observations"
"""The PostgreSQL notification channel a write that changed data announces its series on (and a
change of a series' unit, which the replicas' answers carry)."""
REGISTRY_CHANNEL = "pefm_registry"
"""The channel the registry announces every change of ``model_versions`` on (migration 0013's
trigger, when the change commits): the tracking mirror and unpinned inference revisions listen."""


def announce(conn: psycopg.Connection, ids: list[str]) -> None:
    """Tell every listener (inference replicas: ``serving.freshness``) which series changed; sent
    by PostgreSQL when the transaction commits, never for a write that rolls back. A list too long
    for a notification's 8000 bytes is sent as ``null``: everything may have changed."""
    payload = json.dumps({"series": ids})
    if len(payload.encode()) > 7900:
        payload = json.dumps({"series": None})
    conn.execute("SELECT pg_notify(%s, %s)", (OBSERVATIONS_CHANNEL, payload))
