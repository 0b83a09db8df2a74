-- Model artifacts are signed by the trainer (pefm.storage.signing): the signature over the
-- version's id, family and artifact sha256, and the id of the Ed25519 key that made it. Versions
-- registered before keep NULLs and are not loaded until `pefm models sign` signs them.

ALTER TABLE model_versions
    ADD COLUMN artifact_key       text CHECK (artifact_key ~ '^[0-9a-f]{16}$'),
    ADD COLUMN artifact_signature bytea CHECK (octet_length(artifact_signature) = 64),
    ADD CONSTRAINT model_versions_signed_whole CHECK ((artifact_key IS NULL) = (artifact_signature IS NULL));
