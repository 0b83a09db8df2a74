-- TimescaleDB when the server has it, plain PostgreSQL otherwise.
--
-- With the extension: observations becomes a hypertable partitioned on ts (10-year chunks:
-- economic series span a century at low frequency) with native compression, segmented by
-- series, for chunks older than two years. No retention policy on observations: history is
-- the product, and ts is the economic date, not the arrival time.
-- Without it: the plain table and its unique index from 0001 are the whole story.
-- Everything is EXECUTEd as strings so that this file parses on a server without the extension.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        EXECUTE 'CREATE EXTENSION IF NOT EXISTS timescaledb';
        EXECUTE $q$SELECT create_hypertable('observations', by_range('ts', INTERVAL '3650 days'),
                                            migrate_data => true)$q$;
        EXECUTE $q$ALTER TABLE observations SET (
                        timescaledb.compress,
                        timescaledb.compress_segmentby = 'series_id',
                        timescaledb.compress_orderby = 'ts, vintage DESC')$q$;
        EXECUTE $q$SELECT add_compression_policy('observations', compress_after => INTERVAL '730 days')$q$;
    END IF;
END
$$;
