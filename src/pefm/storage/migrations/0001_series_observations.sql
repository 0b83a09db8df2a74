-- The series catalog and the observations with their vintages.
--
-- An observation row is one value of one series at one timestamp as known from `vintage` on.
-- A revision is a new row with a later vintage; no row is ever updated in place, so the data
-- as known at any past moment can be read back (see pefm.storage.observations).

CREATE TABLE series (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    name        text NOT NULL CHECK (name <> ''),
    frequency   text NOT NULL CHECK (frequency IN ('D', 'B', 'W', 'M', 'Q', 'A')),
    unit        text NOT NULL DEFAULT '',
    transform   text NOT NULL DEFAULT 'none',
    source      text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE observations (
    series_id   text NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    ts          timestamptz NOT NULL,
    vintage     timestamptz NOT NULL,
    value       double precision NOT NULL
                CHECK (value <> 'NaN'::float8 AND value <> 'Infinity'::float8
                       AND value <> '-Infinity'::float8),
    source      text NOT NULL DEFAULT '',
    ingested_at timestamptz NOT NULL DEFAULT now()
);

-- One value per (series, timestamp, vintage). Ordered so that "latest vintage known at a
-- moment, per timestamp" (DISTINCT ON (series_id, ts) ... ORDER BY ts, vintage DESC) is an
-- index scan. It includes ts, as TimescaleDB requires of unique indexes on hypertables.
CREATE UNIQUE INDEX observations_series_ts_vintage
    ON observations (series_id, ts, vintage DESC);
