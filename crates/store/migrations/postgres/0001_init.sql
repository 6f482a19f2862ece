CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS principals (
    iam_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    iam_id TEXT NOT NULL REFERENCES principals(iam_id),
    key_hash BYTEA NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS role_grants (
    instance_id TEXT NOT NULL REFERENCES instances(id),
    iam_id TEXT NOT NULL REFERENCES principals(iam_id),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, iam_id, role)
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    tags TEXT NOT NULL,
    state BIGINT NOT NULL,
    extractable BIGINT NOT NULL,
    imported BIGINT NOT NULL,
    key_ring_id TEXT NOT NULL,
    expiration_date BIGINT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_rotate_date BIGINT,
    deletion_date BIGINT,
    deleted_by TEXT,
    state_changed_at BIGINT NOT NULL,
    current_version TEXT NOT NULL,
    attrs TEXT NOT NULL,
    row_version BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_instance ON keys (instance_id, id);
CREATE TABLE IF NOT EXISTS key_versions (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    master_key_id TEXT NOT NULL,
    UNIQUE (key_id, seq)
);
CREATE TABLE IF NOT EXISTS import_tokens (
    instance_id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    expiration_secs BIGINT NOT NULL,
    max_retrievals BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    nonce BYTEA NOT NULL,
    public_pem TEXT NOT NULL,
    sealed_private BYTEA NOT NULL,
    master_key_id TEXT NOT NULL
);
