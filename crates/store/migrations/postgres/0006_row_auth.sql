-- Row authentication: a MAC under a key sealed by the master key over what each row means
-- (crates/store/src/rowtag.rs). NULL until the row is written or the upgrade tags it.
ALTER TABLE instances ADD COLUMN auth_tag BYTEA;
ALTER TABLE api_keys ADD COLUMN auth_tag BYTEA;
ALTER TABLE role_grants ADD COLUMN auth_tag BYTEA;
ALTER TABLE keys ADD COLUMN auth_tag BYTEA;
ALTER TABLE key_versions ADD COLUMN auth_tag BYTEA;
ALTER TABLE import_tokens ADD COLUMN auth_tag BYTEA;
ALTER TABLE key_aliases ADD COLUMN auth_tag BYTEA;
ALTER TABLE instance_policies ADD COLUMN auth_tag BYTEA
