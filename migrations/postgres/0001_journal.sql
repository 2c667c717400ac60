-- ripcord's journal on PostgreSQL: the same tables as the SQLite journal,
-- shared by every replica of a cluster. Times are Unix milliseconds.
-- Applied once by the first replica to start (under an advisory lock);
-- recorded in ripcord_migrations.

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    partition TEXT NOT NULL,
    labels TEXT NOT NULL,
    tier TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    opened_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    resolved_at BIGINT,
    fingerprint TEXT,
    seq INTEGER NOT NULL,
    fired INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX incidents_by_partition ON incidents (partition, state);

CREATE TABLE decisions (
    key TEXT PRIMARY KEY,
    incident_id TEXT,
    seq INTEGER NOT NULL,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    tier TEXT NOT NULL,
    severity TEXT NOT NULL,
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    value DOUBLE PRECISION,
    threshold DOUBLE PRECISION,
    baseline DOUBLE PRECISION,
    fingerprint TEXT,
    escalated_from TEXT,
    service TEXT,
    message TEXT NOT NULL,
    partition TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX decisions_by_incident ON decisions (incident_id);

CREATE TABLE actions (
    key TEXT PRIMARY KEY REFERENCES decisions (key),
    -- Claim order (oldest first).
    seq BIGSERIAL,
    incident_id TEXT,
    action TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- The process holding the claim: the fencing token.
    owner TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    detail TEXT,
    -- When a rollback passed the budget (NULL: not admitted).
    admitted_at BIGINT
);
CREATE INDEX actions_pending ON actions (state, action, seq);
CREATE INDEX actions_by_incident ON actions (incident_id);
CREATE INDEX actions_admitted ON actions (admitted_at) WHERE admitted_at IS NOT NULL;

-- Post-rollback checks still to run: due_at is when, or until when a
-- process that took one holds it (a crash there runs it again after).
CREATE TABLE verifications (
    key TEXT PRIMARY KEY REFERENCES actions (key),
    due_at BIGINT NOT NULL
);
CREATE INDEX verifications_by_due ON verifications (due_at);

CREATE TABLE timeline (
    seq BIGSERIAL PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX timeline_by_incident ON timeline (incident_id, seq);

CREATE TABLE positions (
    partition TEXT PRIMARY KEY,
    next_offset BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- HTTP bodies: warm a restarted replica's windows, and let each replica
-- follow the alerts the others accepted.
CREATE TABLE inbox (
    seq BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    body BYTEA NOT NULL,
    origin TEXT
);
CREATE INDEX inbox_by_time ON inbox (received_at);

-- Processes alive: each heartbeats; one silent past the lease is dead.
CREATE TABLE owners (
    owner TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);

CREATE TABLE approvals (
    incident_id TEXT PRIMARY KEY,
    request_key TEXT NOT NULL,
    tier TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    note TEXT
);
CREATE INDEX approvals_due ON approvals (state, expires_at);

CREATE TABLE escalations (
    incident_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    step INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    next_at BIGINT,
    claimed_until BIGINT,
    state TEXT NOT NULL,
    acked_by TEXT,
    acked_at BIGINT
);
CREATE INDEX escalations_due ON escalations (state, next_at);

CREATE TABLE rollouts (
    service TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL,
    changed_at BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    incident_id TEXT
);

CREATE TABLE upgrades (
    service TEXT PRIMARY KEY,
    batch TEXT,
    stage TEXT NOT NULL,
    done BIGINT,
    total BIGINT,
    message TEXT,
    updated_at BIGINT NOT NULL,
    open BOOLEAN NOT NULL
);

-- Who owns each Kafka partition, and since which claim: a commit carries
-- the epoch it holds and is refused once another replica claimed since.
CREATE TABLE partition_owners (
    partition TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL
);

CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_at BIGINT NOT NULL
);
