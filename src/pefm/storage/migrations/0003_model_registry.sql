-- The model registry: every trained model version, its artifact, how it was trained and how it
-- did. A version is registered whole (one INSERT) or not at all.

CREATE TABLE model_versions (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    family          text NOT NULL,
    params          jsonb NOT NULL,
    series_ids      text[] NOT NULL CHECK (cardinality(series_ids) > 0),
    data_as_of      timestamptz NOT NULL,
    data_sha256     text NOT NULL CHECK (length(data_sha256) = 64),
    artifact        bytea NOT NULL,
    artifact_sha256 text NOT NULL CHECK (length(artifact_sha256) = 64),
    backtest        jsonb,
    gate_report     jsonb,
    status          text NOT NULL DEFAULT 'candidate'
                    CHECK (status IN ('candidate', 'serving', 'retired')),
    parent_id       text REFERENCES model_versions (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX model_versions_status ON model_versions (status, created_at DESC);
CREATE INDEX model_versions_series ON model_versions USING gin (series_ids);
