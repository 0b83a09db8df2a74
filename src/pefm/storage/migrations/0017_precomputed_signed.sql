-- The trainer's signature covers the forecasts precomputed beside the artifact too
-- (pefm.storage.signing): their sha256, as canonical JSON. Versions signed before keep NULL and are
-- not loaded until `pefm models sign` (by default every such version) signs them again, forecasts
-- included.

ALTER TABLE model_versions
    ADD COLUMN precomputed_sha256 text CHECK (precomputed_sha256 ~ '^[0-9a-f]{64}$');
