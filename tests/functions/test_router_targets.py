"""Prometheus finds the revisions the local router sends traffic to through the router itself
(``/_router/targets``, HTTP service discovery, with the admin token): a green a rollout starts
listens on a port no static configuration knows, and with ``PEFM_PROMETHEUS_URL`` set its
analysis had no data until ``max_wait_seconds`` rolled it back. A real router process and a real
Prometheus, scraping a revision's real metrics."""

import time

import httpx
from prometheus_client import start_http_server

from pefm.local.runtime import free_port
from pefm.rollout.providers import PrometheusProvider
from pefm.serving.observability import ServiceMetrics
from tests.functions import test_router_replicas
from tests.functions.test_router_replicas import ADMIN, route, start_router
from tests.prometheus import start_prometheus

stack = test_router_replicas.stack


class Route:
    path = "/v1/forecast"


def test_prometheus_discovers_a_revisions_replicas_through_the_router(stack, tmp_path):
    runtime, db = stack
    metrics = ServiceMetrics("inference", "sd-green")
    metrics.observe_request({"type": "http", "method": "POST", "route": Route()}, 200, 0.01)
    port = free_port()
    exporter, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.prometheus.registry)
    route(db, "sd", "sd-green", [f"http://127.0.0.1:{port}"])
    router = start_router(runtime, "sd")
    assert httpx.get(f"{router}/_router/targets", timeout=10).status_code == 401  # replica addresses: admin only
    listed = httpx.get(f"{router}/_router/targets", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert listed.json() == [
        {
            "targets": [f"127.0.0.1:{port}"],
            "labels": {"__meta_pefm_service": "sd", "__meta_pefm_revision": "sd-green"},
        }
    ]
    config = (
        "  - job_name: pefm-revisions\n"
        f"    http_sd_configs: [{{url: '{router}/_router/targets', refresh_interval: 1s,"
        f" authorization: {{type: Bearer, credentials: {ADMIN}}}}}]\n"
    )
    prometheus = start_prometheus([], tmp_path, scrape_configs=config)
    try:
        provider = PrometheusProvider(prometheus.url)
        counted = 'pefm_requests_total{job="pefm-revisions",revision="sd-green",route="/v1/forecast"}'
        deadline = time.monotonic() + 60
        while provider.query(counted) != 1:  # its own revision label, not exported_revision
            assert time.monotonic() < deadline, httpx.get(f"{prometheus.url}/api/v1/targets", timeout=10).text
            time.sleep(0.5)
    finally:
        prometheus.stop()
        exporter.shutdown()
