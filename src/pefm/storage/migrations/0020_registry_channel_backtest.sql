-- A backtest stored after registration (pefm backtest --version) is announced on channel
-- pefm_registry too, as a status or gate report change is (0013 left it to the mirror's periodic
-- sync). The trigger is made again with the column added; the function stays 0013's. model_versions
-- is a plain table (never a hypertable), so this is the same with and without TimescaleDB.
DROP TRIGGER model_versions_announced ON model_versions;
CREATE TRIGGER model_versions_announced AFTER INSERT OR UPDATE OF status, gate_report, backtest ON model_versions
    FOR EACH STATEMENT EXECUTE FUNCTION pefm_registry_changed();
