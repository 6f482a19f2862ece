-- Listing at scale (docs/design.md, "Listing at scale").
-- One index per sort field within an instance. Each ends with id, the tie-breaker every
-- listing sorts by last, so an ascending walk needs no sort and a descending one sorts only
-- the runs of equal values. The state, extractable and key ring ones also serve those filters.
-- Each also holds state and expiration_date, the effective state's inputs, so a page's key ids
-- are found, past any offset, in the index alone, and only the page's rows are read
-- (keys_list_id replaces keys_by_instance, its prefix).
CREATE INDEX IF NOT EXISTS keys_list_id ON keys (instance_id, id, state, expiration_date);
DROP INDEX IF EXISTS keys_by_instance;
CREATE INDEX IF NOT EXISTS keys_list_created ON keys (instance_id, created_at, id, state, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_updated ON keys (instance_id, updated_at, id, state, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_rotated ON keys (instance_id, last_rotate_date, id, state, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_deleted ON keys (instance_id, deletion_date, id, state, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_expires ON keys (instance_id, expiration_date, id, state);
CREATE INDEX IF NOT EXISTS keys_list_state ON keys (instance_id, state, id, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_extractable ON keys (instance_id, extractable, id, state, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_imported ON keys (instance_id, imported, id, state, expiration_date);
CREATE INDEX IF NOT EXISTS keys_list_ring ON keys (instance_id, key_ring_id, id, state, expiration_date);
-- How many keys each instance holds per key ring, stored state and extractable, so that a count
-- (HEAD /keys, and the search-space check of GET /keys?search=) reads a few rows, not every key.
-- slot (the last hex digit of the key id, as ids are time-ordered, so their first digits are
-- alike for years) spreads one instance's counter over 16 rows, so
-- concurrent writers on PostgreSQL rarely wait on the same row. Kept by the triggers below. It
-- is derived data, rebuilt from keys, and not copied by keyward admin migrate.
CREATE TABLE IF NOT EXISTS key_counts (
    instance_id TEXT NOT NULL,
    key_ring_id TEXT NOT NULL,
    state BIGINT NOT NULL,
    extractable BIGINT NOT NULL,
    slot TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key_ring_id, state, extractable, slot)
);
DELETE FROM key_counts;
INSERT INTO key_counts (instance_id, key_ring_id, state, extractable, slot, n)
    SELECT instance_id, key_ring_id, state, extractable, substr(id, 36, 1), COUNT(*)
    FROM keys GROUP BY instance_id, key_ring_id, state, extractable, substr(id, 36, 1);
CREATE TRIGGER IF NOT EXISTS key_counts_insert AFTER INSERT ON keys
BEGIN
    INSERT INTO key_counts (instance_id, key_ring_id, state, extractable, slot, n)
        VALUES (NEW.instance_id, NEW.key_ring_id, NEW.state, NEW.extractable, substr(NEW.id, 36, 1), 1)
        ON CONFLICT (instance_id, key_ring_id, state, extractable, slot) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS key_counts_delete AFTER DELETE ON keys
BEGIN
    UPDATE key_counts SET n = n - 1
        WHERE instance_id = OLD.instance_id AND key_ring_id = OLD.key_ring_id AND state = OLD.state
          AND extractable = OLD.extractable AND slot = substr(OLD.id, 36, 1);
END;
CREATE TRIGGER IF NOT EXISTS key_counts_update AFTER UPDATE OF instance_id, key_ring_id, state, extractable ON keys
WHEN OLD.instance_id IS NOT NEW.instance_id OR OLD.key_ring_id IS NOT NEW.key_ring_id
  OR OLD.state IS NOT NEW.state OR OLD.extractable IS NOT NEW.extractable
BEGIN
    UPDATE key_counts SET n = n - 1
        WHERE instance_id = OLD.instance_id AND key_ring_id = OLD.key_ring_id AND state = OLD.state
          AND extractable = OLD.extractable AND slot = substr(OLD.id, 36, 1);
    INSERT INTO key_counts (instance_id, key_ring_id, state, extractable, slot, n)
        VALUES (NEW.instance_id, NEW.key_ring_id, NEW.state, NEW.extractable, substr(NEW.id, 36, 1), 1)
        ON CONFLICT (instance_id, key_ring_id, state, extractable, slot) DO UPDATE SET n = n + 1;
END
