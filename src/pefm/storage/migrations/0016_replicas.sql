-- Replicas (pefm.local.runtime): the local runtime runs a revision as N processes behind the local
-- router, as Knative runs a revision as N pods. A revision's row lists them in replica order (urls
-- and pids, one each; a pid may be unknown) and carries its containerConcurrency: how many
-- requests the router lets one replica have in flight (0: no limit), as a Knative revision's spec
-- does. The single url and pid of each row become a list of one.
ALTER TABLE local_revisions
    ADD COLUMN urls text[],
    ADD COLUMN pids integer[],
    ADD COLUMN container_concurrency integer NOT NULL DEFAULT 0 CHECK (container_concurrency >= 0);
UPDATE local_revisions SET urls = ARRAY[url], pids = ARRAY[pid];
ALTER TABLE local_revisions
    ALTER COLUMN urls SET NOT NULL,
    ALTER COLUMN pids SET NOT NULL,
    ADD CONSTRAINT local_revisions_replicas
        CHECK (cardinality(urls) >= 1 AND cardinality(pids) = cardinality(urls)),
    DROP COLUMN url,
    DROP COLUMN pid;
