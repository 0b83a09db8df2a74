-- TimescaleDB when the server really has it, plain PostgreSQL otherwise.
--
-- With the extension: observations becomes a hypertable partitioned on ts (10-year chunks:
-- economic series span a century at low frequency) with native compression, segmented by
-- series, for chunks older than two years. No retention policy on observations: history is
-- the product, and ts is the economic date, not the arrival time.
-- Without it: the plain table and its unique index from 0001 are the whole story.
-- The runner decides (pefm.storage.timescale: the library preloaded, version >= 2.13) and says so
-- in the transaction's pefm.timescaledb setting. Every TimescaleDB function is called qualified
-- by the extension's schema, so a session whose search_path leaves that schema out works too.
-- Everything is EXECUTEd as strings so that this file parses on a server without the extension.
-- Corrected after release (see superseded.toml): the first text called the functions unqualified
-- and tried CREATE EXTENSION whenever the extension was available.

DO $$
DECLARE
    ts text;
BEGIN
    IF current_setting('pefm.timescaledb', true) IS DISTINCT FROM 'on' THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format('CREATE EXTENSION timescaledb SCHEMA %I',
                       CASE WHEN to_regnamespace('public') IS NOT NULL THEN 'public' ELSE current_schema() END);
    END IF;
    SELECT n.nspname INTO ts FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'timescaledb';
    EXECUTE format($q$SELECT %1$I.create_hypertable('observations', %1$I.by_range('ts', INTERVAL '3650 days'),
                                                    migrate_data => true)$q$, ts);
    EXECUTE $q$ALTER TABLE observations SET (
                    timescaledb.compress,
                    timescaledb.compress_segmentby = 'series_id',
                    timescaledb.compress_orderby = 'ts, vintage DESC')$q$;
    EXECUTE format($q$SELECT %1$I.add_compression_policy('observations', compress_after => INTERVAL '730 days')$q$,
                   ts);
END
$$;
