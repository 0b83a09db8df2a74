-- Forecasts a model version made at past origins (issue 15): "what did we forecast then". An
-- as-of forecast is computed once (re-estimated on the data known then), kept here at the
-- precomputed shape in both spaces, and shared by every replica and revision of the version.
CREATE TABLE origin_forecasts (
    model_version text NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    series_id     text NOT NULL,
    cutoff        timestamptz NOT NULL,  -- the series' last observation the forecast was made from
    space         text NOT NULL CHECK (space IN ('level', 'model')),
    known_at      timestamptz NOT NULL,  -- the moment its data were read as of
    levels        integer[] NOT NULL,
    rows          jsonb NOT NULL,        -- [{ds, mean, lo-80, hi-80, ...}] as the API returns them
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version, series_id, cutoff, space)
);
