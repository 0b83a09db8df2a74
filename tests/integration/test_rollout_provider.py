"""The local rollout analysis reads the request log (a real PostgreSQL): requests to the routes a
revision serves count, and so does every failure before routing; 404s and 405s of paths it does
not serve (anyone's junk), and 4xx answers (the client's fault), neither make up the minimum of
requests nor dilute its errors."""

from datetime import UTC, datetime, timedelta

import pytest

from pefm.rollout.providers import DatabaseProvider


def test_junk_requests_neither_count_nor_pass(db):
    rows = [
        ("/v1/forecast", "POST", 200, 3.0),
        ("/v1/forecast", "POST", 500, 4.0),
        *[("/v1/forecast", "POST", status, 0.2) for status in (404, 409, 422, 429) * 10],  # refused: left out
        ("unmatched", "GET", 503, 1.0),  # not ready: failed before routing, counted
        *[("unmatched", "OTHER", 404, 0.5)] * 20,  # junk: left out
        ("unmatched", "GET", 405, 0.5),
        ("/metrics", "GET", 200, 900.0),
    ]
    with db.connection() as conn:
        for route, method, status, ms in rows:
            conn.execute(
                """INSERT INTO request_log (service, revision, route, method, status, latency_ms)
                   VALUES ('inference', 'green', %s, %s, %s, %s)""",
                (route, method, status, ms),
            )
    metrics = DatabaseProvider(db).revision_metrics("green", datetime.now(UTC) - timedelta(minutes=5))
    assert metrics.requests == 3
    assert metrics.success_rate == pytest.approx(1 / 3)
    assert metrics.p99_latency_ms < 5  # neither /metrics nor the junk
