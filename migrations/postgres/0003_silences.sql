-- Silences (issue 11): what humans hold back, and the audit of what each
-- one (or a maintenance window, as `window:<name>`) held back. Times are
-- milliseconds since the epoch, like every other table.

CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    scope TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    until_service TEXT,
    until_batch TEXT,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expired_by TEXT
);

CREATE INDEX silences_by_end ON silences (ends_at);
CREATE INDEX silences_until ON silences (until_service) WHERE until_service IS NOT NULL;

CREATE TABLE silence_holds (
    source TEXT NOT NULL,
    action_key TEXT NOT NULL,
    action TEXT NOT NULL,
    incident_id TEXT,
    scope TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (source, action_key)
);
