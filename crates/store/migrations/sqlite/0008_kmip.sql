-- KMIP adapters (docs/kmip.md): an adapter is bound to a root key (crk_id) of its instance,
-- client certificates are registered on it (matched by their SHA-256 fingerprint, unique over
-- all adapters so that a certificate names one adapter), and the objects its clients create
-- are stored with their material wrapped under the root key (wrapped is emptied when destroyed).
-- Every row carries its row-authentication tag from the start (crates/store/src/rowtag.rs).
CREATE TABLE IF NOT EXISTS kmip_adapters (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    profile TEXT NOT NULL,
    crk_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    auth_tag BLOB NOT NULL,
    UNIQUE (instance_id, name)
);
CREATE TABLE IF NOT EXISTS kmip_client_certs (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    adapter_id TEXT NOT NULL,
    name TEXT NOT NULL,
    certificate TEXT NOT NULL,
    fingerprint BLOB NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    auth_tag BLOB NOT NULL,
    UNIQUE (adapter_id, name)
);
CREATE TABLE IF NOT EXISTS kmip_objects (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    adapter_id TEXT NOT NULL,
    object_type BIGINT NOT NULL,
    state BIGINT NOT NULL,
    meta BLOB NOT NULL,
    wrapped TEXT,
    row_version BIGINT NOT NULL,
    created_by_cert_id TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by_cert_id TEXT,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    destroyed_by_cert_id TEXT,
    destroyed_by TEXT,
    destroyed_at BIGINT,
    auth_tag BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kmip_adapters_instance ON kmip_adapters (instance_id, created_at, id);
CREATE INDEX IF NOT EXISTS kmip_client_certs_adapter ON kmip_client_certs (adapter_id, created_at, id);
CREATE INDEX IF NOT EXISTS kmip_objects_adapter ON kmip_objects (adapter_id, created_at, id)
