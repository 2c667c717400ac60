-- The medium tier's sample check after each batch (issue 22 §2): one row
-- per picked instance of a batch done; its stages run as a verification
-- keyed `key`, so a passed stage never runs again across replicas.

CREATE TABLE sample_checks (
    service TEXT NOT NULL,
    batch TEXT NOT NULL,
    done_at BIGINT NOT NULL,
    instance TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE REFERENCES actions (key),
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    "of" INTEGER NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (service, batch, done_at, instance)
);
