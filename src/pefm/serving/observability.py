"""Prometheus metrics and structured JSON logs for the functions.

Each app owns a registry (so several apps can live in one test process). Latency and request
counts carry the revision label: the rollout analysis reads success rate and p99 per revision
from exactly these series.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from pefm.serving.http import route_template

disable_created_metrics()  # no *_created series: half the exposition, nothing the queries use

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The metrics of one function process."""

    def __init__(self, service: str, revision: str):
        self.service = service
        self.revision = revision
        self.registry = CollectorRegistry()
        labels = ["service", "revision", "route", "method"]
        self.requests = Counter("pefm_requests", "HTTP requests served", [*labels, "status"], registry=self.registry)
        self.latency = Histogram(
            "pefm_request_duration_seconds",
            "HTTP request latency",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.forecasts = Counter(
            "pefm_forecasts_served",
            "Series forecasts served",
            ["revision", "model_version", "source"],
            registry=self.registry,
        )
        self.ingest_rows = Counter(
            "pefm_ingest_rows", "Observation rows by outcome", ["outcome"], registry=self.registry
        )
        self.ingest_group = Histogram(
            "pefm_ingest_group_writes",
            "Streamed writes committed together, per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "pefm_log_rows_dropped",
            "Request/prediction log rows not written",
            ["table"],
            registry=self.registry,
        )
        self.cache = Counter(
            "pefm_cache_requests",
            "Cache lookups by backend (redis, memory), kind (state, answer, ...) and result (hit, miss, error)",
            ["backend", "kind", "result"],
            registry=self.registry,
        )
        self.start_to_ready = Gauge(
            "pefm_start_to_ready_seconds",
            "Process start to ready",
            ["service", "revision"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple] = {}
        self.model_info = Gauge(
            "pefm_model_info",
            "The model version this revision serves",
            ["revision", "model_version", "family"],
            registry=self.registry,
        )

    def observe_request(self, scope: dict, status: int, seconds: float) -> None:
        key = (route_template(scope), scope.get("method", ""), status)
        children = self._children.get(key)
        if children is None:  # labels() resolves a child per call: keep them (bounded: routes x methods x codes)
            route, method, code = key
            children = self._children[key] = (
                self.requests.labels(self.service, self.revision, route, method, str(code)),
                self.latency.labels(self.service, self.revision, route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def mark_ready(self, process_started: float) -> float:
        """Record and return the seconds from process start to ready."""
        seconds = time.time() - process_started
        self.start_to_ready.labels(self.service, self.revision).set(seconds)
        return seconds

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any extra fields given."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: str = "INFO") -> None:
    """Route every log record to stderr as JSON lines (func-python's basicConfig included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
