"""The Overview and the Serving page read the request log at every refresh: one service over the
last minutes, every revision. The only index was (service, revision, ts DESC), which PostgreSQL 15
to 17 cannot use for that (seq scan: 3 million rows, 168 ms against 1.5 ms); migration 0022 adds
(service, ts DESC). The pages' own queries, as run, are explained on a log big enough that the
planner's choice is its own (no enable_seqscan off)."""

import psycopg

from dashboard import data


def test_the_overview_and_serving_queries_read_the_request_log_by_service_and_time(conn):
    [(index,)] = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'request_log_service_ts' AND schemaname = current_schema()"
    ).fetchall()
    assert index.endswith(".request_log USING btree (service, ts DESC)")
    conn.execute(  # two days of two revisions' requests, a tenth of them the monitor's
        """INSERT INTO request_log (ts, service, revision, route, method, status, latency_ms)
           SELECT now() - make_interval(secs => i), CASE WHEN i % 10 = 0 THEN 'monitor' ELSE 'inference' END,
                  'pefm-inference-' || (i % 2), '/v1/forecast', 'POST', 200, 3.0
           FROM generate_series(1, 200000) AS i"""
    )
    conn.execute("ANALYZE request_log")
    asked: list[tuple[str, object]] = []

    class Recording(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            asked.append((str(query), params))
            return super().execute(query, params, **kwargs)

    conn.cursor_factory = Recording
    try:
        data.traffic_from_log(conn, 15)
        data.serving_latency(conn, minutes=60, bucket_seconds=60)
    finally:
        conn.cursor_factory = psycopg.Cursor
    assert len(asked) == 2
    for query, params in asked:
        [(plan,)] = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchall()
        assert "request_log_service_ts" in str(plan), (query, plan)
