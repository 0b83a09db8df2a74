-- Every start of a function revision (a cold start, when Knative scales from zero): when it
-- became ready and how long that took. Written off the start path by the log writer.

CREATE TABLE revision_starts (
    ts               timestamptz NOT NULL DEFAULT now(),
    service          text NOT NULL,
    revision         text NOT NULL,
    start_to_ready_s double precision NOT NULL
);
CREATE INDEX revision_starts_service_ts ON revision_starts (service, ts DESC);
