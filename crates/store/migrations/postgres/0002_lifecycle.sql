ALTER TABLE keys ADD COLUMN next_rotation_at BIGINT;
CREATE INDEX IF NOT EXISTS keys_next_rotation ON keys (next_rotation_at);
CREATE INDEX IF NOT EXISTS keys_deletion ON keys (state, deletion_date);
CREATE TABLE IF NOT EXISTS key_aliases (
    instance_id TEXT NOT NULL,
    alias TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (instance_id, alias)
);
CREATE INDEX IF NOT EXISTS key_aliases_by_key ON key_aliases (instance_id, key_id);
CREATE TABLE IF NOT EXISTS key_rings (
    instance_id TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (instance_id, id)
);
CREATE TABLE IF NOT EXISTS instance_policies (
    instance_id TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (instance_id, policy_type)
);
CREATE TABLE IF NOT EXISTS registrations (
    instance_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    resource_crn TEXT NOT NULL,
    prevent_key_deletion BIGINT NOT NULL,
    description TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (instance_id, key_id, resource_crn)
)
