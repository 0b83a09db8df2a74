"""MetricsProvider: success rate, p99 latency and request count of one revision since a moment.

``PrometheusProvider`` asks a Prometheus server (PromQL templates below, data not code);
``DatabaseProvider`` reads the functions' request log when no Prometheus is configured.
Both exclude the /metrics scrapes and /openapi.json; health probes never reach the apps' metrics. A request a
revision refused as the client's fault (a 4xx: a malformed body, an unknown series, the rate
limit) is no evidence of its health either: it neither counts towards ``min_requests`` nor
passes, nor pulls the p99 latency down (a flood of junk made up the minimum in seconds and
diluted a green's errors). A green that refuses what blue answers fails divergence, whose
replays send both the same requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import httpx

from pefm.storage.database import Database


@dataclass(frozen=True)
class RevisionMetrics:
    requests: int
    success_rate: float | None
    p99_latency_ms: float | None


class MetricsProvider(Protocol):
    def revision_metrics(self, revision: str, since: datetime, until: datetime | None = None) -> RevisionMetrics:
        """The revision's requests from ``since`` up to ``until`` (default: now)."""
        ...


_SERVED = 'revision="{revision}",route!~"/metrics|/openapi.json|unmatched",status!~"4.."'
_UNROUTED_FAILURES = 'revision="{revision}",route="unmatched",status=~"5.."'


def _increase(series: str) -> str:
    """Each of ``series``' increase in the window, a series born inside it counted from 0. A
    series begins at its first count (a revision's first 500 of a route, a new replica's first
    requests), and ``increase`` needs two samples of it: that first count, and all the ones before
    its first scrape, were never counted (a green failing 2 of 100 requests, each status its
    first, had a success rate of 1). The two sides are disjoint: the series there in the hour
    before the window's start, and the others. That hour is a range, not an instant: a scrape that
    failed just before the start leaves staleness markers an instant selector stops at, and every
    series of the revision then counted its whole history."""
    then = f"present_over_time({series}[1h] offset {{window}}s)"
    return f"((increase({series}[{{window}}s]) and {then}) or (last_over_time({series}[{{window}}s]) unless {then}))"


def _count(selector: str) -> str:
    """Requests matching ``selector`` in the window (0 when none)."""
    return "(sum(" + _increase("pefm_requests_total{{" + selector + "}}") + ") or vector(0))"


_REQUESTS = _count(_SERVED) + " + " + _count(_UNROUTED_FAILURES)
PROMQL = {
    # The requests a rollout judges a revision by: those to the routes it serves that were not the
    # client's fault, and every one it failed before routing (a 503 while not ready). A request to
    # a path it does not serve (a 404 or 405 for anyone's junk), or one it refused (a 4xx), is no
    # evidence of its health, and must not make up the minimum number of requests or dilute its errors.
    "requests": _REQUESTS,
    "success_rate": _count(_SERVED + ',status!~"5.."') + " / (" + _REQUESTS + ")",
    "p99_latency_ms": (
        "1000 * histogram_quantile(0.99, sum by (le) ("
        + _increase("pefm_request_duration_seconds_bucket{{" + _SERVED + "}}")
        + "))"
    ),
}


MIN_WINDOW = 30
"""Seconds: the shortest window the Prometheus queries judge (two scrapes at the usual 15 s)."""


# Flagger counts a metric without a value ("no values found", or NaN) as a failed check, so its
# MetricTemplates give the passing value when the revision served nothing in the window: waiting
# for traffic is the confirm-traffic-increase and confirm-promotion webhooks' job on a cluster
# (min_requests since the weight last changed), as the local analysis, which sees no value, waits.
FLAGGER_PROMQL = {
    "success_rate": _count(_SERVED + ',status!~"5.."') + " / ((" + _REQUESTS + ") > 0) or on() vector(1)",
    "p99_latency_ms": "(" + PROMQL["p99_latency_ms"] + ") and on() (" + _count(_SERVED) + " > 0) or on() vector(0)",
}


class PrometheusProvider:
    def __init__(self, url: str, queries: dict[str, str] | None = None, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.queries = queries or PROMQL
        self.client = httpx.Client(timeout=timeout)

    def query(self, promql: str, at: datetime | None = None) -> float | None:
        """The scalar value of an instant query (at ``at``, default now), or None when it has no
        (finite) sample."""
        params = {"query": promql} | ({"time": f"{at.timestamp():.3f}"} if at is not None else {})
        response = self.client.get(f"{self.url}/api/v1/query", params=params)
        response.raise_for_status()
        result = response.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None

    def revision_metrics(self, revision: str, since: datetime, until: datetime | None = None) -> RevisionMetrics:
        until = until or datetime.now(UTC)
        window = int((until - since).total_seconds())
        if window < MIN_WINDOW:  # a longer one would judge the step before, or requests an earlier
            # analysis judged (``since`` is the last that did): no data of its own yet
            return RevisionMetrics(0, None, None)
        values = {k: self.query(q.format(revision=revision, window=window), until) for k, q in self.queries.items()}
        return RevisionMetrics(round(values["requests"] or 0), values["success_rate"], values["p99_latency_ms"])


class DatabaseProvider:
    def __init__(self, db: Database):
        self.db = db

    def revision_metrics(self, revision: str, since: datetime, until: datetime | None = None) -> RevisionMetrics:
        with self.db.connection() as conn:
            n, ok, p99 = conn.execute(
                """SELECT count(*), avg((status < 500)::int),
                          percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
                   FROM request_log WHERE revision = %s AND ts >= %s AND ts < coalesce(%s::timestamptz, 'infinity')
                     AND route NOT IN ('/metrics', '/openapi.json') AND (route <> 'unmatched' OR status >= 500)
                     AND status NOT BETWEEN 400 AND 499""",
                (revision, since, until),
            ).fetchone()
        return RevisionMetrics(int(n), None if ok is None else float(ok), None if p99 is None else float(p99))
