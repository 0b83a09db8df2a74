-- Intraday and irregular series: bars of one minute to one hour, and event-time ticks
-- (pefm.data.frequency). Their observations have a table of their own, the same columns and
-- vintage rules as observations (pefm.storage.observations routes by the series' frequency):
-- a hypertable has one chunk interval, and ten-year chunks (0002) suit quarterly data, not a
-- minute series that adds 525,600 rows a year. With TimescaleDB: one-day chunks, compressed
-- after a week, segmented by series. Without it: the same unique index, whose (series_id, ts)
-- prefix serves a series' range and as-of reads, and a BRIN index on ts for the scans by time
-- across series (the daily bars) that a table appended in time order keeps small.

ALTER TABLE series DROP CONSTRAINT series_frequency_check;
ALTER TABLE series ADD CONSTRAINT series_frequency_check
    CHECK (frequency IN ('D', 'B', 'W', 'M', 'Q', 'A', '1min', '5min', '15min', '30min', '1h', 'tick'));

CREATE TABLE intraday_observations (
    series_id   text NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    ts          timestamptz NOT NULL,
    vintage     timestamptz NOT NULL,
    value       double precision NOT NULL
                CHECK (value <> 'NaN'::float8 AND value <> 'Infinity'::float8
                       AND value <> '-Infinity'::float8),
    source      text NOT NULL DEFAULT '',
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX intraday_observations_series_ts_vintage
    ON intraday_observations (series_id, ts, vintage DESC);
CREATE INDEX intraday_observations_ts ON intraday_observations USING brin (ts);

DO $$
DECLARE
    ts text;
BEGIN
    IF current_setting('pefm.timescaledb', true) IS DISTINCT FROM 'on' THEN
        RETURN;
    END IF;
    SELECT n.nspname INTO ts FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'timescaledb';
    EXECUTE 'DROP INDEX intraday_observations_ts';  -- TimescaleDB's chunks are the time index
    EXECUTE format($q$SELECT %1$I.create_hypertable('intraday_observations', %1$I.by_range('ts', INTERVAL '1 day'),
                                                    migrate_data => true)$q$, ts);
    EXECUTE $q$ALTER TABLE intraday_observations SET (
                    timescaledb.compress,
                    timescaledb.compress_segmentby = 'series_id',
                    timescaledb.compress_orderby = 'ts, vintage DESC')$q$;
    EXECUTE format($q$SELECT %1$I.add_compression_policy('intraday_observations', compress_after => INTERVAL '7 days')$q$,
                   ts);
END
$$;

-- Every observation, whichever table holds it: for what reads across all series (the catalog).
CREATE VIEW all_observations AS
    SELECT series_id, ts, vintage, value, source, ingested_at FROM observations
    UNION ALL
    SELECT series_id, ts, vintage, value, source, ingested_at FROM intraday_observations;

-- Daily bars of the intraday series as known at a moment (each timestamp's latest vintage <= it),
-- by UTC day (date_bin). One definition for both uses: read for one series as of any moment
-- (pefm.storage.bars; a plain SQL function, so the planner inlines it and the series filter
-- reaches the index; its body is bound to this schema's table when it is created), and materialized as known now in daily_bars for reads across series.
-- A materialized view on both servers: a bar must take each timestamp's latest vintage (DISTINCT
-- ON), which a TimescaleDB continuous aggregate cannot express, and summing a revision into a bar
-- next to the value it revised would be wrong.
CREATE FUNCTION intraday_daily_bars(as_of timestamptz)
RETURNS TABLE (series_id text, day timestamptz, open float8, high float8, low float8, close float8,
               observations bigint, last_ts timestamptz)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT series_id,
           date_bin(INTERVAL '1 day', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           (array_agg(value ORDER BY ts))[1],
           max(value),
           min(value),
           (array_agg(value ORDER BY ts DESC))[1],
           count(*),
           max(ts)
    FROM (SELECT DISTINCT ON (series_id, ts) series_id, ts, value
          FROM intraday_observations WHERE vintage <= as_of
          ORDER BY series_id, ts, vintage DESC) latest
    GROUP BY 1, 2;
END;

CREATE MATERIALIZED VIEW daily_bars AS SELECT * FROM intraday_daily_bars('infinity');
CREATE UNIQUE INDEX daily_bars_series_day ON daily_bars (series_id, day);

-- Only the owner may refresh a materialized view: this function lets the component roles that
-- write intraday data do it (CONCURRENTLY: readers keep the old bars meanwhile).
DO $$
BEGIN
    EXECUTE format($q$CREATE FUNCTION refresh_daily_bars() RETURNS void LANGUAGE sql SECURITY DEFINER
                      SET search_path = %I, pg_temp
                      AS 'REFRESH MATERIALIZED VIEW CONCURRENTLY daily_bars'$q$, current_schema());
END
$$;
REVOKE ALL ON FUNCTION refresh_daily_bars() FROM PUBLIC;
