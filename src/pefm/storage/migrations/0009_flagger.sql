-- Rollouts that Flagger runs on a cluster, recorded by PEFM's webhooks next to the local
-- controller's: one row per Canary and Flagger checksum (a new revision is a new checksum), so
-- the dashboard, `pefm rollout status` and the registry treat both engines alike.
ALTER TABLE rollouts ADD COLUMN engine text NOT NULL DEFAULT 'local' CHECK (engine IN ('local', 'flagger'));
ALTER TABLE rollouts ADD COLUMN canary text;    -- <namespace>/<name> of the Flagger Canary
ALTER TABLE rollouts ADD COLUMN checksum text;  -- Flagger's checksum of the canary it analyses
ALTER TABLE rollouts ADD CONSTRAINT rollouts_flagger_key
    CHECK (engine = 'local' OR (canary IS NOT NULL AND checksum IS NOT NULL));
CREATE UNIQUE INDEX rollouts_canary_checksum ON rollouts (canary, checksum) WHERE engine = 'flagger';
