"""The database the pages read, set once by ``create_app`` (queries run in callbacks, never at import)."""

from __future__ import annotations

from pefm.storage.database import Database

_db: Database | None = None


def set_database(db: Database) -> None:
    global _db
    _db = db


def database() -> Database:
    if _db is None:
        raise RuntimeError("the dashboard has no database: build it with dashboard.app.create_app(db)")
    return _db
