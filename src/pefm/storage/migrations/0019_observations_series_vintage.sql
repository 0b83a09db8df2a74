-- What each series holds and since when (the dashboard's Overview and catalog, every refresh):
-- its first and last timestamp come from the (series_id, ts, vintage) index, and the latest
-- vintage, "known since", from this one. Without it every refresh read every observation
-- (1.4 s with two million minute bars). Vintages of a series mostly grow, so writes add to the
-- right edge of the index. On TimescaleDB the chunks get it; compressed chunks keep their own.

CREATE INDEX observations_series_vintage ON observations (series_id, vintage);
CREATE INDEX intraday_observations_series_vintage ON intraday_observations (series_id, vintage);
