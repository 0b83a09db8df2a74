"""Forecasts made at past origins, kept with the registry: "what did we forecast then".

An origin is a series' last observation in the data a forecast was made from (its ``cutoff``).
Two sources hold such forecasts for a model version:

- its stored backtest: the version's family (same parameters) refitted at each backtest cutoff on
  the data as known when the cutoff's period ended. Those are the forecasts an ``as_of`` request
  at that moment makes, so they are reused (model space; as long as they were refitted at every
  cutoff, ``refit_every == 1``);
- ``origin_forecasts``: every other as-of forecast the inference function computed, stored at the
  precomputed shape (``PRECOMPUTED_HORIZON`` steps, ``PRECOMPUTED_LEVELS``) in both spaces, with
  the moment its data were read as of and a moment by which every write they hold had been
  stamped (``since``, kept as ``created_at``). Replicas and revisions of the version share them.

``stored_forecast`` answers from either, only where the data known at the request's moment are
those the stored forecast was made from (nothing got a vintage in between); ``store_forecast``
keeps one, in place of an origin's earlier one that could not answer.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from pefm.data.frequency import Frequency, period_end
from pefm.storage.model_versions import ModelVersion
from pefm.storage.observations import known_alike


def finite_rows(rows: list[dict[str, Any]]) -> bool:
    """Whether every number in forecast rows is finite: JSON, and so PostgreSQL's jsonb, has no other."""
    return all(math.isfinite(v) for row in rows for v in row.values() if isinstance(v, float))


def stored_forecast(
    conn: psycopg.Connection,
    version: ModelVersion,
    series_id: str,
    freq: Frequency,
    estimated_with: list[str],
    cutoff: pd.Timestamp,
    known_at: datetime,
    space: str,
    horizon: int,
    levels: tuple[int, ...],
) -> list[dict[str, Any]] | None:
    """The rows (``ds``, ``mean``, bounds) the version forecast from ``cutoff`` with the data known
    at ``known_at``, when stored at this space, at least this horizon and these levels; else None.
    ``estimated_with``: the series estimated together with it (its bundle group)."""
    row = conn.execute(
        """SELECT rows, known_at, created_at FROM origin_forecasts
           WHERE model_version = %s AND series_id = %s AND cutoff = %s AND space = %s
             AND levels @> %s::integer[] AND jsonb_array_length(rows) >= %s""",
        (version.id, series_id, cutoff.to_pydatetime(), space, list(levels), horizon),
    ).fetchone()
    if row is not None and known_alike(conn, estimated_with, row[1], known_at, since=row[2]):
        return _shaped(row[0], horizon, levels)
    if space == "model":
        return _from_backtest(conn, version, series_id, freq, estimated_with, cutoff, known_at, horizon, levels)
    return None


def store_forecast(
    conn: psycopg.Connection,
    version_id: str,
    series_id: str,
    cutoff: pd.Timestamp,
    known_at: datetime,
    space: str,
    levels: tuple[int, ...],
    rows: list[dict[str, Any]],
    *,
    since: datetime,
) -> None:
    """Keep a forecast made at ``cutoff`` (rows as the API returns them), in place of one kept
    before (made only when that one could not answer: other data, or fewer steps or levels).
    ``since``: a moment by which every write its data hold had been stamped, and no write they
    lack (e.g. when what was known at ``known_at`` last changed, as its data were keyed); a
    later lookup takes a write after it as other data. Not the moment of storing: a backdated
    write committed while the forecast was computed came before that, and would never count."""
    conn.execute(
        """INSERT INTO origin_forecasts (model_version, series_id, cutoff, known_at, space, levels, rows, created_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (model_version, series_id, cutoff, space) DO UPDATE SET
               known_at = EXCLUDED.known_at, levels = EXCLUDED.levels, rows = EXCLUDED.rows,
               created_at = EXCLUDED.created_at""",
        (version_id, series_id, cutoff.to_pydatetime(), known_at, space, list(levels), Jsonb(rows), since),
    )


def _from_backtest(
    conn: psycopg.Connection,
    version: ModelVersion,
    series_id: str,
    freq: Frequency,
    estimated_with: list[str],
    cutoff: pd.Timestamp,
    known_at: datetime,
    horizon: int,
    levels: tuple[int, ...],
) -> list[dict[str, Any]] | None:
    """The backtest's forecast at ``cutoff`` when it was made from the same data: refitted there on
    the data known when the cutoff's period ended, and nothing became known between then and
    ``known_at``, nor written after the version's data were read (``created_at``: the moment
    training read them); with enough steps and levels."""
    backtest = version.backtest or {}
    spec = backtest.get("spec") or {}
    refitted_on_all = spec.get("refit_every", 1) == 1 and spec.get("window", "expanding") == "expanding"
    if not refitted_on_all or spec.get("h", 0) < horizon or not set(levels) <= set(spec.get("levels", ())):
        return None
    rows = [r for r in (backtest.get("forecasts") or {}).get(series_id, []) if r["cutoff"] == f"{cutoff:%Y-%m-%d}"]
    if len(rows) < horizon:
        return None
    ended = period_end(pd.DatetimeIndex([cutoff]), freq)[0].tz_localize("UTC").to_pydatetime()
    if known_at < ended or not known_alike(conn, estimated_with, ended, known_at, since=version.created_at):
        return None
    out = [{"ds": f"{r['ds']}T00:00:00Z", "mean": r["mean"]} for r in rows]
    for row, source in zip(out, rows, strict=True):
        for level in levels:
            row[f"lo-{level}"], row[f"hi-{level}"] = source[f"lo-{level}"], source[f"hi-{level}"]
    return out[:horizon]


def _shaped(rows: list[dict[str, Any]], horizon: int, levels: tuple[int, ...]) -> list[dict[str, Any]]:
    keep = ["ds", "mean", *(f"{side}-{lv}" for lv in levels for side in ("lo", "hi"))]
    return [{k: row[k] for k in keep} for row in rows[:horizon]]
