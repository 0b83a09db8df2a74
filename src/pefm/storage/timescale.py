"""Whether the migrations use TimescaleDB, decided once per run from what the server really has.

TimescaleDB is used only when its library is preloaded (``shared_preload_libraries``): a server
that has the extension's files but does not preload them drops the connection on ``CREATE
EXTENSION``, and an extension created earlier cannot work without the library. It also needs
version 2.13 or later (``by_range``). Otherwise observations and the logs stay plain tables,
with the reason logged. The migrations read the decision from the transaction's
``pefm.timescaledb`` setting (``on`` / ``off``) and schema-qualify every TimescaleDB call.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg

log = logging.getLogger(__name__)
MIN_VERSION = (2, 13)
SETTING = "pefm.timescaledb"


@dataclass(frozen=True)
class TimescalePlan:
    use: bool
    reason: str
    available: bool = True
    """Whether the server has the extension at all (a plan against it despite that is worth a warning)."""


def preloads_timescaledb(shared_preload_libraries: str) -> bool:
    """Whether the server setting names TimescaleDB's library (``timescaledb``, quoted or as a
    ``$libdir/`` path, among others)."""
    for entry in shared_preload_libraries.split(","):
        name = entry.strip().strip('"').rsplit("/", 1)[-1].removesuffix(".so")
        if name == "timescaledb":
            return True
    return False


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def plan(*, available: str | None, installed: str | None, preload: str, plain_schema: bool = False) -> TimescalePlan:
    """The decision from the server's facts: ``available`` the extension's default version (None:
    not on the server), ``installed`` the version created in this database (None: not created),
    ``preload`` the value of ``shared_preload_libraries``, ``plain_schema`` whether this database's
    tables already exist without the extension (its first migrations ran before it was usable:
    later ones keep plain tables, as 0002 made them)."""
    if available is None and installed is None:
        return TimescalePlan(False, "the TimescaleDB extension is not available on this server", available=False)
    if plain_schema and installed is None:
        return TimescalePlan(False, "this database's tables were made before TimescaleDB was usable here")
    if not preloads_timescaledb(preload):
        return TimescalePlan(
            False,
            "TimescaleDB is installed but not in shared_preload_libraries "
            f"({preload or 'empty'}): CREATE EXTENSION would drop the connection",
        )
    version = installed or available
    if _version(version) < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        return TimescalePlan(False, f"TimescaleDB {version} is older than {wanted} (by_range)")
    return TimescalePlan(True, f"TimescaleDB {version}, preloaded")


def timescale_plan(conn: psycopg.Connection) -> TimescalePlan:
    """The decision for this server and database (read from pg_available_extensions, pg_extension
    and pg_settings)."""
    available, installed, preload, recorded = conn.execute(
        """SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
                  (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                  (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
                  to_regclass('schema_migrations') IS NOT NULL"""
    ).fetchone()
    # 0002 decided the tables' kind: one stopped after 0001 has decided nothing yet
    plain_schema = recorded and conn.execute("SELECT 1 FROM schema_migrations WHERE version = 2").fetchone() is not None
    return plan(available=available, installed=installed, preload=preload or "", plain_schema=plain_schema)
