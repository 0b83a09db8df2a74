-- Drift reports (summary per series plus the Evidently snapshot) and the retraining log.

CREATE TABLE drift_reports (
    id             bigserial PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    model_version  text NOT NULL,
    data_as_of     timestamptz NOT NULL,
    series         jsonb NOT NULL,
    drifted_series text[] NOT NULL,
    breach         boolean NOT NULL,
    evidently      jsonb NOT NULL
);
CREATE INDEX drift_reports_created ON drift_reports (created_at DESC);

CREATE TABLE retrain_events (
    id         bigserial PRIMARY KEY,
    ts         timestamptz NOT NULL DEFAULT now(),
    run_id     text NOT NULL,
    step       text NOT NULL,
    reason     text NOT NULL,
    candidate  text,
    details    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX retrain_events_run ON retrain_events (run_id, id);
