-- Rollouts: the controller's whole state lives here, so a restarted controller resumes exactly
-- where it stopped; every transition is an event. Plus the local runtime's revisions and
-- traffic blocks (the single-machine stand-in for Knative's routing).

CREATE TABLE rollouts (
    id                  bigserial PRIMARY KEY,
    service             text NOT NULL,
    blue_revision       text NOT NULL,
    green_revision      text NOT NULL,
    green_model_version text,
    spec                jsonb NOT NULL,
    phase               text NOT NULL,
    step                integer NOT NULL,
    weight              integer NOT NULL CHECK (weight BETWEEN 0 AND 100),
    failed_checks       integer NOT NULL DEFAULT 0,
    step_started_at     timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- at most one unfinished rollout per service
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (service)
    WHERE phase NOT IN ('Succeeded', 'Failed', 'RolledBack');

CREATE TABLE rollout_events (
    id            bigserial PRIMARY KEY,
    rollout_id    bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    ts            timestamptz NOT NULL DEFAULT now(),
    action        text NOT NULL,
    phase         text NOT NULL,
    step          integer NOT NULL,
    weight        integer NOT NULL,
    failed_checks integer NOT NULL,
    reason        text NOT NULL,
    checks        jsonb NOT NULL DEFAULT '[]',
    observations  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX rollout_events_rollout ON rollout_events (rollout_id, id);

CREATE TABLE local_revisions (
    service       text NOT NULL,
    revision      text NOT NULL,
    url           text NOT NULL,
    model_version text,
    pid           integer,
    started_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, revision)
);

CREATE TABLE local_traffic (
    service    text PRIMARY KEY,
    traffic    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
