-- The incident review (issue 11): the evidence decisions carried (the
-- window's values, for the review's chart), every progress an upgrade
-- reported (batch starts), and how each human verdict came.

CREATE TABLE evidence (
    incident_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    points TEXT NOT NULL,
    PRIMARY KEY (incident_id, at)
);

CREATE TABLE progress_log (
    seq BIGSERIAL PRIMARY KEY,
    service TEXT NOT NULL,
    batch TEXT,
    stage TEXT NOT NULL,
    done BIGINT,
    total BIGINT,
    message TEXT,
    at BIGINT NOT NULL
);

CREATE INDEX progress_log_by_service ON progress_log (service, at);

ALTER TABLE approvals ADD COLUMN decided_via TEXT;
