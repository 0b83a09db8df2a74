-- Rollouts that Flagger runs on a cluster, recorded by PEFM's webhooks next to the local
-- controller's: one row per Canary and canary revision (Knative never reuses a revision name;
-- Flagger's checksum cannot be the key, as confirm-rollout still carries the previous one), so
-- the dashboard, `pefm rollout status` and the registry treat both engines alike.
ALTER TABLE rollouts ADD COLUMN engine text NOT NULL DEFAULT 'local' CHECK (engine IN ('local', 'flagger'));
ALTER TABLE rollouts ADD COLUMN canary text;    -- <namespace>/<name> of the Flagger Canary
ALTER TABLE rollouts ADD CONSTRAINT rollouts_flagger_key CHECK (engine = 'local' OR canary IS NOT NULL);
CREATE UNIQUE INDEX rollouts_canary_revision ON rollouts (canary, green_revision) WHERE engine = 'flagger';
