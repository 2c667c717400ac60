-- Rollout gates (issue 10): request-success tallies per service, batch and
-- minute, added to by every pipeline commit (in the same transaction as
-- its positions, so a replayed sample is never counted twice); and humans'
-- promotions of a batch, bound to a revision when one was named.

CREATE TABLE gate_tally (
    service TEXT NOT NULL,
    batch TEXT NOT NULL,
    minute BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL,
    tier TEXT NOT NULL,
    PRIMARY KEY (service, batch, minute)
);

CREATE INDEX gate_tally_by_minute ON gate_tally (minute);

CREATE TABLE promotions (
    seq BIGSERIAL PRIMARY KEY,
    service TEXT NOT NULL,
    batch TEXT,
    revision TEXT,
    by_whom TEXT NOT NULL,
    note TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE INDEX promotions_by_service ON promotions (service, seq);
