-- Re-sealing under a new master key looks rows up by the key that sealed them.
CREATE INDEX IF NOT EXISTS key_versions_master_key ON key_versions (master_key_id);
CREATE INDEX IF NOT EXISTS import_tokens_master_key ON import_tokens (master_key_id);
