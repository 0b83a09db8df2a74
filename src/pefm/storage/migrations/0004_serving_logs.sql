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

-- TimescaleDB: both logs are time series of arrivals; compress after a week, keep 90 days.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$SELECT create_hypertable('request_log', by_range('ts', INTERVAL '1 day'))$q$;
        EXECUTE $q$SELECT create_hypertable('predictions', by_range('ts', INTERVAL '1 day'))$q$;
        EXECUTE $q$ALTER TABLE request_log SET (timescaledb.compress,
                        timescaledb.compress_segmentby = 'service, revision')$q$;
        EXECUTE $q$ALTER TABLE predictions SET (timescaledb.compress,
                        timescaledb.compress_segmentby = 'series_id')$q$;
        EXECUTE $q$SELECT add_compression_policy('request_log', compress_after => INTERVAL '7 days')$q$;
        EXECUTE $q$SELECT add_compression_policy('predictions', compress_after => INTERVAL '7 days')$q$;
        EXECUTE $q$SELECT add_retention_policy('request_log', drop_after => INTERVAL '90 days')$q$;
        EXECUTE $q$SELECT add_retention_policy('predictions', drop_after => INTERVAL '90 days')$q$;
    END IF;
END
$$;
