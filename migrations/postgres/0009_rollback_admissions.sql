-- The rollback budget counts the rollbacks admitted in its window before
-- each rollback: through this index, not over every action (a storm
-- leaves hundreds of thousands of message actions beside a few rollbacks).

CREATE INDEX actions_rollbacks_admitted ON actions (admitted_at) WHERE action = 'rollback';
