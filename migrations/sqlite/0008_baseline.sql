-- The SQLite journal as of version 8, in one step: what a new journal is
-- created with. Versions 1 to 8 were applied by ripcord's code before the
-- steps were files (1: the journal; 2: actions.admitted_at, the rollback
-- budget; 3: partition_owners, fencing; 4: inbox.origin; 5: silences,
-- silence_holds, evidence, progress_log, approvals.decided_via; 6: batch
-- incidents; 7: incidents.service; 8: verifications.stage). A journal at
-- one of those versions is brought to this one by `upgrade_before_files`
-- in src/journal/sqlite.rs (SQLite cannot add a column "if not exists").
-- Every statement is IF NOT EXISTS, so that upgrade may run it too.
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    partition TEXT NOT NULL,
    labels TEXT NOT NULL,
    tier TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    resolved_at INTEGER,
    fingerprint TEXT,
    seq INTEGER NOT NULL,
    fired INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    batch TEXT,
    service TEXT
);
CREATE INDEX IF NOT EXISTS incidents_by_partition ON incidents(partition, state);
CREATE TABLE IF NOT EXISTS decisions (
    key TEXT PRIMARY KEY,
    incident_id TEXT,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    tier TEXT NOT NULL,
    severity TEXT NOT NULL,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL,
    threshold REAL,
    baseline REAL,
    fingerprint TEXT,
    escalated_from TEXT,
    service TEXT,
    message TEXT NOT NULL,
    partition TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    batch TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_incident ON decisions(incident_id);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY REFERENCES decisions(key),
    incident_id TEXT,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    detail TEXT,
    -- When a rollback passed the budget (NULL: not admitted).
    admitted_at INTEGER
);
CREATE INDEX IF NOT EXISTS actions_by_state ON actions(state);
-- A lane's claim reads only its own kinds of pending actions.
CREATE INDEX IF NOT EXISTS actions_pending_by_kind ON actions(action) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS actions_by_incident ON actions(incident_id);
-- Post-rollback checks still to run: due_at is when, or until when a
-- process that took one holds it (a crash there runs it again after).
CREATE TABLE IF NOT EXISTS verifications (
    key TEXT PRIMARY KEY REFERENCES actions(key),
    due_at INTEGER NOT NULL,
    -- The next stage to run: one that passed never runs again.
    stage INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS verifications_by_due ON verifications(due_at);
-- The medium tier's sample check after each batch (issue 22 §2): one row
-- per picked instance of a batch done; its stages run as a verification
-- keyed `key`. A new table: older journals get it from this schema.
CREATE TABLE IF NOT EXISTS sample_checks (
    service TEXT NOT NULL,
    batch TEXT NOT NULL,
    done_at INTEGER NOT NULL,
    instance TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE REFERENCES actions(key),
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    of INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (service, batch, done_at, instance)
);
CREATE TABLE IF NOT EXISTS timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_by_incident ON timeline(incident_id, seq);
CREATE TABLE IF NOT EXISTS positions (
    partition TEXT PRIMARY KEY,
    next_offset INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    origin TEXT
);
CREATE INDEX IF NOT EXISTS inbox_by_time ON inbox(received_at);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    incident_id TEXT PRIMARY KEY,
    request_key TEXT NOT NULL,
    tier TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_by TEXT,
    decided_at INTEGER,
    note TEXT,
    decided_via TEXT,
    scope TEXT
);
CREATE INDEX IF NOT EXISTS approvals_due ON approvals(state, expires_at);
CREATE TABLE IF NOT EXISTS escalations (
    incident_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    step INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    next_at INTEGER,
    claimed_until INTEGER,
    state TEXT NOT NULL,
    acked_by TEXT,
    acked_at INTEGER
);
CREATE INDEX IF NOT EXISTS escalations_due ON escalations(state, next_at);
CREATE TABLE IF NOT EXISTS rollouts (
    service TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    changed_by TEXT NOT NULL,
    incident_id TEXT
);
CREATE TABLE IF NOT EXISTS upgrades (
    service TEXT PRIMARY KEY,
    batch TEXT,
    stage TEXT NOT NULL,
    done INTEGER,
    total INTEGER,
    message TEXT,
    updated_at INTEGER NOT NULL,
    open INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partition_owners (
    partition TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gate_tally (
    service TEXT NOT NULL,
    batch TEXT NOT NULL,
    minute INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    total REAL NOT NULL,
    low REAL NOT NULL,
    tier TEXT NOT NULL,
    PRIMARY KEY (service, batch, minute)
);
CREATE TABLE IF NOT EXISTS promotions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    batch TEXT,
    revision TEXT,
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS promotions_by_service ON promotions(service, seq);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    scope TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    until_service TEXT,
    until_batch TEXT,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expired_by TEXT
);
CREATE INDEX IF NOT EXISTS silences_by_end ON silences(ends_at);
CREATE INDEX IF NOT EXISTS silences_until ON silences(until_service) WHERE until_service IS NOT NULL;
CREATE TABLE IF NOT EXISTS evidence (
    incident_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    points TEXT NOT NULL,
    PRIMARY KEY (incident_id, at)
);
CREATE TABLE IF NOT EXISTS progress_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    batch TEXT,
    stage TEXT NOT NULL,
    done INTEGER,
    total INTEGER,
    message TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS progress_log_by_service ON progress_log(service, at);
CREATE TABLE IF NOT EXISTS silence_holds (
    source TEXT NOT NULL,
    action_key TEXT NOT NULL,
    action TEXT NOT NULL,
    incident_id TEXT,
    scope TEXT NOT NULL,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (source, action_key)
);
