-- What the functions record off the request path: every request (for rollout analysis when
-- Prometheus is not there) and every forecast served (for prediction drift and divergence).
-- Precomputed forecasts of each model version, so an inference revision is ready without
-- loading the model itself.

CREATE TABLE request_log (
    ts          timestamptz NOT NULL DEFAULT now(),
    service     text NOT NULL,
    revision    text NOT NULL,
    route       text NOT NULL,
    method      text NOT NULL,
    status      smallint NOT NULL,
    latency_ms  double precision NOT NULL
);
CREATE INDEX request_log_service_revision_ts ON request_log (service, revision, ts DESC);

CREATE TABLE predictions (
    ts            timestamptz NOT NULL DEFAULT now(),
    request_id    text NOT NULL,
    revision      text NOT NULL,
    model_version text NOT NULL,
    series_id     text NOT NULL,
    as_of         timestamptz,
    what_if       boolean NOT NULL DEFAULT false,
    horizon       integer NOT NULL,
    forecast      jsonb NOT NULL
);
CREATE INDEX predictions_series_ts ON predictions (series_id, ts DESC);
CREATE INDEX predictions_version_ts ON predictions (model_version, ts DESC);

ALTER TABLE model_versions ADD COLUMN precomputed jsonb;

-- TimescaleDB: both logs are time series of arrivals; compress after a week, keep 90 days. Only
-- when the runner decided for it (pefm.timescaledb, see 0002) and 0002 created the extension; every
-- call qualified by the extension's schema (corrected after release: see superseded.toml).
DO $$
DECLARE
    ts text;
BEGIN
    SELECT n.nspname INTO ts FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'timescaledb';
    IF current_setting('pefm.timescaledb', true) IS DISTINCT FROM 'on' OR ts IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format($q$SELECT %1$I.create_hypertable('request_log', %1$I.by_range('ts', INTERVAL '1 day'))$q$, ts);
    EXECUTE format($q$SELECT %1$I.create_hypertable('predictions', %1$I.by_range('ts', INTERVAL '1 day'))$q$, ts);
    EXECUTE $q$ALTER TABLE request_log SET (timescaledb.compress,
                    timescaledb.compress_segmentby = 'service, revision')$q$;
    EXECUTE $q$ALTER TABLE predictions SET (timescaledb.compress,
                    timescaledb.compress_segmentby = 'series_id')$q$;
    EXECUTE format($q$SELECT %1$I.add_compression_policy('request_log', compress_after => INTERVAL '7 days')$q$, ts);
    EXECUTE format($q$SELECT %1$I.add_compression_policy('predictions', compress_after => INTERVAL '7 days')$q$, ts);
    EXECUTE format($q$SELECT %1$I.add_retention_policy('request_log', drop_after => INTERVAL '90 days')$q$, ts);
    EXECUTE format($q$SELECT %1$I.add_retention_policy('predictions', drop_after => INTERVAL '90 days')$q$, ts);
END
$$;
