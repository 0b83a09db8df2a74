-- The model lifecycle as one loop: the registry follows rollouts, rollout state is written by
-- compare-and-set and routed until the router reports it, revisions without traffic are retired,
-- drift counts only checks that saw new data, and retraining resumes from its last completed step.

-- Registry: a candidate a rollout turned away is 'rejected', with the reason.
ALTER TABLE model_versions DROP CONSTRAINT model_versions_status_check;
ALTER TABLE model_versions ADD CONSTRAINT model_versions_status_check
    CHECK (status IN ('candidate', 'serving', 'retired', 'rejected'));
ALTER TABLE model_versions ADD COLUMN status_reason text;

-- Rollouts: `generation` grows with every state write (writes are compare-and-set on it);
-- `routed_generation` is the generation whose traffic the router last confirmed; a finished
-- rollout is `finalized` once its grace period is over (the loser's revision is retired).
ALTER TABLE rollouts ADD COLUMN blue_model_version text;
ALTER TABLE rollouts ADD COLUMN generation bigint NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN routed_generation bigint NOT NULL DEFAULT -1;
ALTER TABLE rollouts ADD COLUMN finished_at timestamptz;
ALTER TABLE rollouts ADD COLUMN finalized_at timestamptz;
UPDATE rollouts SET finished_at = updated_at, finalized_at = updated_at, routed_generation = generation
    WHERE phase IN ('Succeeded', 'Failed', 'RolledBack');
CREATE INDEX rollouts_service ON rollouts (service, id DESC);

-- Local revisions: when a revision left its service's traffic block (NULL while it is in it, or
-- before it ever was); retired after the grace period.
ALTER TABLE local_revisions ADD COLUMN unrouted_at timestamptz;

-- Drift: the hash of the data a check read, so repeated checks on unchanged data count once.
ALTER TABLE drift_reports ADD COLUMN data_sha256 text;
CREATE INDEX drift_reports_version ON drift_reports (model_version, id DESC);

-- Retraining jobs, keyed by a hash of what they train (family, parameters, series, backtest
-- spec, data hash; the candidate row holds each): the last completed step (trained, gated,
-- deployed, rollout-started, or a terminal one), so a job that crashed resumes where it stopped.
CREATE TABLE retrain_jobs (
    key         text PRIMARY KEY,
    step        text NOT NULL CHECK (step IN ('trained', 'gated', 'gates-failed', 'deployed', 'rollout-started')),
    candidate   text NOT NULL REFERENCES model_versions (id),
    revision    text,
    rollout_id  bigint REFERENCES rollouts (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
