-- Failed secure imports against the instance's import token, counted for the token named in
-- import_failures_token (a new token starts again from zero). Past the cap the token is locked.
ALTER TABLE import_tokens ADD COLUMN import_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE import_tokens ADD COLUMN import_failures_token TEXT;
