-- When each key was last used for wrap, unwrap and rewrap, and by which principal: one row
-- per key and operation, plus op 'any' for the latest of the three (the listing filter
-- lastUsed reads it). Written in batches by the service (docs/design.md, "Key usage"),
-- never once per request. Not secret and not authenticated: a tampered row changes only
-- what the report says.
CREATE TABLE IF NOT EXISTS key_usage (
    instance_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    op TEXT NOT NULL,
    last_at BIGINT NOT NULL,
    last_by TEXT NOT NULL,
    PRIMARY KEY (key_id, op)
);
