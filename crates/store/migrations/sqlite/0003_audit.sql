CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_unix BIGINT NOT NULL,
    time TEXT NOT NULL,
    request_id TEXT NOT NULL,
    correlation_id TEXT,
    principal TEXT NOT NULL,
    instance TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    source TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time_unix);
CREATE INDEX IF NOT EXISTS audit_log_principal ON audit_log (principal, time_unix);
CREATE INDEX IF NOT EXISTS audit_log_key ON audit_log (key_id, time_unix);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, time_unix);
CREATE INDEX IF NOT EXISTS audit_log_instance ON audit_log (instance, time_unix)
