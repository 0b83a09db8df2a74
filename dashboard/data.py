"""What the pages show, as plain functions of a connection (unit-tested on a real database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import psycopg

from pefm.forecasting.panel import load_panel
from pefm.storage.model_versions import ModelVersion, list_versions, read_precomputed
from pefm.storage.series import list_series, summarize_series


def overview(conn: psycopg.Connection, window_minutes: int = 15) -> dict[str, Any]:
    """Cards: series count, newest data, requests/s, success %, p95 latency, drifted series,
    the current rollout."""
    summary = summarize_series(conn)
    n, ok, p95 = conn.execute(
        """SELECT count(*), avg((status < 500)::int), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
           FROM request_log WHERE ts >= now() - make_interval(mins => %s)""",
        (window_minutes,),
    ).fetchone()
    drift = conn.execute("SELECT drifted_series, series FROM drift_reports ORDER BY id DESC LIMIT 1").fetchone()
    rollout = conn.execute(
        "SELECT id, service, blue_revision, green_revision, phase, weight FROM rollouts ORDER BY id DESC LIMIT 1"
    ).fetchone()
    newest = max((s.last for s in summary if s.last), default=None)
    return {
        "series": len(summary),
        "newest": newest,
        "requests_per_s": n / (window_minutes * 60),
        "success": None if ok is None else float(ok),
        "p95_ms": None if p95 is None else float(p95),
        "drifted": None if drift is None else (len(drift[0]), len(drift[1])),
        "rollout": None
        if rollout is None
        else dict(zip(("id", "service", "blue", "green", "phase", "weight"), rollout, strict=True)),
    }


def series_options(conn: psycopg.Connection) -> list[dict[str, str]]:
    """Dropdown options: every series, labelled with its name."""
    return [{"label": f"{s.id}: {s.name}", "value": s.id} for s in list_series(conn)]


def model_options(conn: psycopg.Connection, series_id: str) -> list[dict[str, str]]:
    """Model versions that forecast ``series_id``: serving first, then candidates, newest first."""
    versions = [v for v in list_versions(conn) if series_id in v.series_ids and v.status != "retired"]
    versions.sort(key=lambda v: (v.status != "serving", -v.created_at.timestamp()))
    return [{"label": f"{v.id} ({v.status})", "value": v.id} for v in versions]


def history(conn: psycopg.Connection, version: ModelVersion, series_id: str, as_of: datetime | None) -> pd.Series:
    """The series in model space (its transform applied), as known at ``as_of``."""
    return load_panel(conn, [series_id], as_of=as_of)[series_id].dropna()


def forecast(conn: psycopg.Connection, version_id: str, series_id: str, horizon: int) -> pd.DataFrame:
    """The version's precomputed forecast of the series: ds, mean, lo/hi 80 and 95."""
    pre = read_precomputed(conn, version_id) or {"rows": []}
    rows = [r for r in pre["rows"] if r["series_id"] == series_id][:horizon]
    frame = pd.DataFrame(rows).drop(columns="series_id", errors="ignore")
    if not frame.empty:
        frame["ds"] = pd.to_datetime(frame["ds"]).dt.tz_localize(None)
    return frame


def backtest_metrics(version: ModelVersion) -> pd.DataFrame:
    """Per-series backtest metrics stored with the version (RMSE, MASE, coverage, Sharpe ...)."""
    metrics = ((version.backtest or {}).get("metrics")) or {}
    return pd.DataFrame.from_dict(metrics, orient="index").rename_axis("series_id").reset_index()
