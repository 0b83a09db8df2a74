"""What the pages show, as plain functions of a connection (unit-tested on a real database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import psycopg

from pefm.drift.monitor import report_rows
from pefm.forecasting.panel import load_panel
from pefm.rollout.providers import PrometheusProvider
from pefm.storage.model_versions import ModelVersion, list_versions, read_precomputed
from pefm.storage.series import list_series, summarize_series

# the Overview's traffic cards from Prometheus (when PEFM_PROMETHEUS_URL is set): every function
TRAFFIC_PROMQL = {
    "requests_per_s": "sum(rate(pefm_requests_total[{window}m]))",
    "success": 'sum(rate(pefm_requests_total{{status!~"5.."}}[{window}m])) / sum(rate(pefm_requests_total[{window}m]))',
    "p95_ms": "1000 * histogram_quantile(0.95, sum by (le) (rate(pefm_request_duration_seconds_bucket[{window}m])))",
}


def traffic_from_prometheus(prometheus: PrometheusProvider, window_minutes: int) -> dict[str, Any]:
    """Requests/s, success ratio and p95 latency (ms) of every function over the last minutes."""
    values = {k: prometheus.query(q.format(window=window_minutes)) for k, q in TRAFFIC_PROMQL.items()}
    return {**values, "requests_per_s": values["requests_per_s"] or 0.0, "source": "Prometheus"}


def traffic_from_log(conn: psycopg.Connection, window_minutes: int) -> dict[str, Any]:
    """The same numbers from the request log in the database."""
    n, ok, p95 = conn.execute(
        """SELECT count(*), avg((status < 500)::int), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
           FROM request_log WHERE ts >= now() - make_interval(mins => %s)""",
        (window_minutes,),
    ).fetchone()
    return {
        "requests_per_s": n / (window_minutes * 60),
        "success": None if ok is None else float(ok),
        "p95_ms": None if p95 is None else float(p95),
        "source": "request log",
    }


def overview(
    conn: psycopg.Connection, window_minutes: int = 15, prometheus: PrometheusProvider | None = None
) -> dict[str, Any]:
    """Cards: series count, newest data, requests/s, success %, p95 latency, drifted series,
    the current rollout."""
    summary = summarize_series(conn)
    traffic = (
        traffic_from_prometheus(prometheus, window_minutes) if prometheus else traffic_from_log(conn, window_minutes)
    )
    drift = conn.execute("SELECT drifted_series, series FROM drift_reports ORDER BY id DESC LIMIT 1").fetchone()
    rollout = conn.execute(
        "SELECT id, service, blue_revision, green_revision, phase, weight FROM rollouts ORDER BY id DESC LIMIT 1"
    ).fetchone()
    newest = max((s.last for s in summary if s.last), default=None)
    return {
        "series": len(summary),
        "newest": newest,
        **traffic,
        "drifted": None if drift is None else (len(drift[0]), len(drift[1])),
        "rollout": None
        if rollout is None
        else dict(zip(("id", "service", "blue", "green", "phase", "weight"), rollout, strict=True)),
    }


def series_options(conn: psycopg.Connection) -> list[dict[str, str]]:
    """Dropdown options: every series, labelled with its name."""
    return [{"label": f"{s.id}: {s.name}", "value": s.id} for s in list_series(conn)]


def model_options(conn: psycopg.Connection, series_id: str) -> list[dict[str, str]]:
    """Model versions that forecast ``series_id``: the one serving it first (the registry's one
    answer), then candidates and rejected ones, newest first."""
    from pefm.forecasting.registry import serving_version

    serving = serving_version(conn, [series_id])
    versions = [v for v in list_versions(conn) if series_id in v.series_ids and v.status != "retired"]
    versions.sort(key=lambda v: (serving is None or v.id != serving.id, -v.created_at.timestamp()))
    return [{"label": f"{v.id} ({v.status})", "value": v.id} for v in versions]


def history(conn: psycopg.Connection, series_id: str, as_of: datetime | None) -> pd.Series:
    """The series in model space (its transform applied), as known at ``as_of``."""
    return load_panel(conn, [series_id], as_of=as_of)[series_id].dropna()


def forecast(conn: psycopg.Connection, version_id: str, series_id: str, horizon: int) -> pd.DataFrame:
    """The version's precomputed forecast of the series in model space (as the history is drawn):
    ds, mean, lo/hi 80 and 95."""
    pre = read_precomputed(conn, version_id) or {"rows": []}
    rows = [r for r in pre["rows"] if r["series_id"] == series_id and r.get("space", "model") == "model"][:horizon]
    frame = pd.DataFrame(rows).drop(columns=["series_id", "space"], errors="ignore")
    if not frame.empty:
        frame["ds"] = pd.to_datetime(frame["ds"]).dt.tz_localize(None)
    return frame


def backtest_metrics(version: ModelVersion) -> pd.DataFrame:
    """Per-series backtest metrics stored with the version (RMSE, MASE, coverage, Sharpe ...)."""
    metrics = ((version.backtest or {}).get("metrics")) or {}
    return pd.DataFrame.from_dict(metrics, orient="index").rename_axis("series_id").reset_index()


def drift_rows(conn: psycopg.Connection) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The latest drift report and its Evidently-style rows (series, feature, method, score,
    threshold, drifted)."""
    row = conn.execute(
        "SELECT id, created_at, model_version, series, breach FROM drift_reports ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None, []
    report_id, created, version, series, breach = row
    rows = report_rows(series)
    meta = {"id": report_id, "created_at": created, "model_version": version, "breach": breach}
    return meta, rows


def drift_history(conn: psycopg.Connection, series_id: str, feature: str) -> pd.DataFrame:
    """A feature's drift score over the stored reports (created_at, score, threshold)."""
    rows = conn.execute(
        """SELECT created_at, (f ->> 'score')::float8, (f ->> 'threshold')::float8
           FROM drift_reports, jsonb_array_elements(series -> %s -> 'input') AS f
           WHERE f ->> 'feature' = %s ORDER BY id""",
        (series_id, feature),
    ).fetchall()
    return pd.DataFrame(rows, columns=["created_at", "score", "threshold"])


def serving_latency(
    conn: psycopg.Connection, service: str = "inference", minutes: int = 60, bucket_seconds: int = 60
) -> pd.DataFrame:
    """Per revision and time bucket: requests, p50/p95/p99 latency (ms), 4xx and 5xx counts."""
    rows = conn.execute(
        """SELECT date_bin(make_interval(secs => %(bucket)s), ts, TIMESTAMPTZ '2000-01-01') AS bucket, revision,
                  count(*) AS requests,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99,
                  count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS errors_4xx,
                  count(*) FILTER (WHERE status >= 500) AS errors_5xx
           FROM request_log WHERE service = %(service)s AND ts >= now() - make_interval(mins => %(minutes)s)
           GROUP BY 1, 2 ORDER BY 1, 2""",
        {"bucket": bucket_seconds, "service": service, "minutes": minutes},
    ).fetchall()
    columns = ["bucket", "revision", "requests", "p50", "p95", "p99", "errors_4xx", "errors_5xx"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["rate"] = frame["requests"] / bucket_seconds
    return frame


def backtest_forecasts(version: ModelVersion, series_id: str) -> pd.DataFrame:
    """The version's stored backtest forecasts of the series: cutoff, ds, y (actual), mean, bounds."""
    rows = ((version.backtest or {}).get("forecasts") or {}).get(series_id, [])
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["cutoff"], frame["ds"] = pd.to_datetime(frame["cutoff"]), pd.to_datetime(frame["ds"])
    return frame


def drift_windows(conn: psycopg.Connection, series_id: str, feature: str) -> dict[str, list[float]] | None:
    """The reference and current values the latest report compared for a series' feature."""
    row = conn.execute(
        """SELECT f FROM drift_reports, jsonb_array_elements(series -> %s -> 'input') AS f
           WHERE f ->> 'feature' = %s ORDER BY id DESC LIMIT 1""",
        (series_id, feature),
    ).fetchone()
    if row is None or "reference" not in row[0]:
        return None
    return {"reference": row[0]["reference"], "current": row[0]["current"]}


def accuracy_history(conn: psycopg.Connection, series_id: str) -> pd.DataFrame:
    """Realized one-step RMSE of the served model at each drift check, with the backtest's RMSE
    (the expectation) and the ratio that counts as drift."""
    rows = conn.execute(
        """SELECT created_at, (a ->> 'realized_rmse')::float8, (a ->> 'backtest_rmse')::float8,
                  (a ->> 'threshold')::float8
           FROM drift_reports, LATERAL (SELECT series -> %s -> 'accuracy' AS a) AS x
           WHERE jsonb_typeof(a) = 'object' ORDER BY id""",
        (series_id,),
    ).fetchall()
    return pd.DataFrame(rows, columns=["created_at", "realized_rmse", "backtest_rmse", "threshold"])


def rollouts(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The latest rollouts, newest first: id, service, blue, green, phase, weight, updated_at."""
    rows = conn.execute(
        """SELECT id, service, blue_revision, green_revision, phase, weight, updated_at
           FROM rollouts ORDER BY id DESC LIMIT %s""",
        (limit,),
    ).fetchall()
    keys = ("id", "service", "blue", "green", "phase", "weight", "updated_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def rollout_events(conn: psycopg.Connection, rollout_id: int) -> pd.DataFrame:
    """A rollout's events in order: ts, action, phase, step, weight (green %), reason, checks."""
    rows = conn.execute(
        """SELECT ts, action, phase, step, weight, failed_checks, reason, checks
           FROM rollout_events WHERE rollout_id = %s ORDER BY id""",
        (rollout_id,),
    ).fetchall()
    columns = ["ts", "action", "phase", "step", "weight", "failed_checks", "reason", "checks"]
    return pd.DataFrame(rows, columns=columns)


def serving_events(conn: psycopg.Connection, service: str = "inference", minutes: int = 60) -> pd.DataFrame:
    """Markers for the serving charts: revision starts (cold starts) and rollout promotions and
    rollbacks, each with ts, kind, revision and a label."""
    rows = conn.execute(
        """SELECT ts, 'start' AS kind, revision,
                  format('%%s ready in %%s s', revision, round(start_to_ready_s::numeric, 2))
           FROM revision_starts WHERE service = %(service)s AND ts >= now() - make_interval(mins => %(minutes)s)
           UNION ALL
           SELECT e.ts, e.action, r.green_revision, format('%%s %%s: %%s', e.action, r.green_revision, e.reason)
           FROM rollout_events e JOIN rollouts r ON r.id = e.rollout_id
           WHERE r.service = %(service)s AND e.action IN ('promote', 'rollback')
             AND e.ts >= now() - make_interval(mins => %(minutes)s)
           ORDER BY 1""",
        {"service": service, "minutes": minutes},
    ).fetchall()
    return pd.DataFrame(rows, columns=["ts", "kind", "revision", "label"])
