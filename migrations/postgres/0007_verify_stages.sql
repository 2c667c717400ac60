-- Staged verification (issue 22): the next stage of a post-rollback
-- verification to run. A stage that passed is never run again, across
-- restarts and failover. (0006 is another branch's.)

ALTER TABLE verifications ADD COLUMN stage INTEGER NOT NULL DEFAULT 0;
