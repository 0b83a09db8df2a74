-- The registry announces its changes on channel pefm_registry (pefm.tracking's mirror listens): a
-- version registered, its status or gate report changed, a rollout started, moved phase or ended.
-- PostgreSQL sends the notification when the transaction commits, never for one that rolls back.
CREATE FUNCTION pefm_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pefm_registry', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER model_versions_announced AFTER INSERT OR UPDATE OF status, gate_report ON model_versions
    FOR EACH STATEMENT EXECUTE FUNCTION pefm_registry_changed();
CREATE TRIGGER rollouts_announced AFTER INSERT OR UPDATE OF phase, green_model_version ON rollouts
    FOR EACH STATEMENT EXECUTE FUNCTION pefm_registry_changed();
