-- The Overview's and the Serving page's reads of the request log, at every refresh: one service
-- over the last minutes, all its revisions. The (service, revision, ts DESC) index of 0004 serves
-- them only where the planner can skip through the revisions (PostgreSQL 18); PostgreSQL 15 to 17
-- read the whole table (3 million rows: 168 ms, against 1.5 ms with this index). On TimescaleDB
-- (request_log a hypertable, 0004) the chunks get it, as they got 0019's; compressed chunks keep
-- their own. Not CONCURRENTLY: each migration runs in a transaction, as every index here was made.

CREATE INDEX request_log_service_ts ON request_log (service, ts DESC);
