-- One version serves at a time. An inference revision serves one version, but promotion retired
-- only the serving versions sharing a series with the promoted one, so a version of other series
-- stayed 'serving' in the registry while no revision served it, and the gates compared a
-- candidate with one of the two while its promotion retired both. Promotion now retires every
-- other serving version (pefm.forecasting.registry.promote); here, the serving versions but the
-- one the registry answered with (the most recently promoted) are retired as replaced by it, and
-- the database allows no second. model_versions is a plain table (never a hypertable).
WITH newest AS (
    SELECT id FROM model_versions WHERE status = 'serving' ORDER BY status_changed_at DESC, id LIMIT 1
)
UPDATE model_versions v
SET status = 'retired', status_reason = 'replaced by ' || newest.id, status_changed_at = clock_timestamp()
FROM newest
WHERE v.status = 'serving' AND v.id <> newest.id;

CREATE UNIQUE INDEX model_versions_one_serving ON model_versions ((true)) WHERE status = 'serving';
