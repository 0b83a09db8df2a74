"""PEFM's PromQL (the local provider's, and Flagger's MetricTemplates') over a real Prometheus
scraping a revision's real metrics: a series that begins inside the window (a revision's first 500
of a route, its first 503, a new replica's first requests) is counted from 0. ``increase`` needs
two samples of a series, so the count a series begins with was never counted: a green failing 2 of
its requests in 110, each the first of its status, passed a 99% success-rate bound at 100%."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import start_http_server

from pefm.local.runtime import free_port
from pefm.rollout.providers import FLAGGER_PROMQL, MIN_WINDOW, PROMQL, PrometheusProvider
from pefm.serving.observability import ServiceMetrics
from tests.prometheus import start_prometheus


class Route:
    path = "/v1/forecast"


def served(metrics: ServiceMetrics, status: int, seconds: float, n: int = 1) -> None:
    for _ in range(n):
        metrics.observe_request({"type": "http", "method": "POST", "route": Route()}, status, seconds)


def test_the_first_failures_of_each_status_are_counted(tmp_path):
    metrics = ServiceMetrics("inference", "green")
    port = free_port()
    exporter, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.prometheus.registry)
    prometheus = start_prometheus([f"127.0.0.1:{port}"], tmp_path)
    try:
        provider = PrometheusProvider(prometheus.url)
        began = datetime.now(UTC)
        served(metrics, 200, 0.01, 10)
        scraped = 'pefm_requests_total{revision="green",status="200"}'
        deadline = time.monotonic() + 30
        while provider.query(scraped) != 10:  # scraped at least once before the failures begin
            assert time.monotonic() < deadline
            time.sleep(0.2)
        served(metrics, 200, 0.01, 98)
        served(metrics, 500, 2.0)  # each the first of its status: a series of its own, from here on
        served(metrics, 503, 2.0)
        failed = 'sum(pefm_requests_total{revision="green",status=~"5.."})'
        deadline = time.monotonic() + 30
        while provider.query(failed) != 2 or provider.query(scraped) != 108:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2.5)  # two more scrapes of every series: an increase() could be taken of each
        since = datetime.now(UTC) - timedelta(seconds=MIN_WINDOW)
        assert since < began  # the window holds all of it
        judged = provider.revision_metrics("green", since)
        assert judged.requests == 110
        assert judged.success_rate == pytest.approx(108 / 110)
        assert judged.p99_latency_ms > 1000  # the two slow failures are the slowest 1%
        window = int((datetime.now(UTC) - since).total_seconds())
        rendered = {k: provider.query(q.format(revision="green", window=window)) for k, q in FLAGGER_PROMQL.items()}
        assert rendered["success_rate"] == pytest.approx(108 / 110) and rendered["p99_latency_ms"] > 1000
    finally:
        prometheus.stop()
        exporter.shutdown()


def test_a_scrape_missed_at_the_window_start_does_not_count_the_history(tmp_path):
    """A failed scrape writes staleness markers, at which an instant selector finds nothing: with
    the window starting in such a gap, every series of the revision passed for one born inside the
    window, and its whole history was counted (1,101 requests, 99% good, for 100 at 90%)."""
    metrics = ServiceMetrics("inference", "green")
    port = free_port()
    exporter, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.prometheus.registry)
    prometheus = start_prometheus([f"127.0.0.1:{port}"], tmp_path)
    provider = PrometheusProvider(prometheus.url)
    good = 'pefm_requests_total{revision="green",status="200"}'

    def scraped(query: str, value: float) -> None:
        deadline = time.monotonic() + 30
        while provider.query(query) != value:
            assert time.monotonic() < deadline, (query, value)
            time.sleep(0.2)

    try:
        served(metrics, 200, 0.01, 1000)  # the steps before, judged already
        served(metrics, 500, 0.01)
        scraped(good, 1000)
        time.sleep(1.5)
        exporter.shutdown()  # its next scrapes fail: staleness markers
        exporter.server_close()
        time.sleep(1.5)
        since = time.time()  # the window starts in the gap
        time.sleep(1.5)
        exporter, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.prometheus.registry)
        scraped(good, 1000)
        served(metrics, 200, 0.01, 90)
        served(metrics, 500, 0.01, 10)
        scraped(good, 1090)
        time.sleep(2.5)
        window = int(time.time() - since) + 1
        requests = provider.query(PROMQL["requests"].format(revision="green", window=window))
        rate = provider.query(PROMQL["success_rate"].format(revision="green", window=window))
        assert 90 <= requests < 200, requests  # increase() extrapolates to the window's edges, not 1,101
        assert rate == pytest.approx(0.9, abs=0.02), rate
    finally:
        prometheus.stop()
        exporter.shutdown()
