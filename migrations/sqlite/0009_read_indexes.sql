-- What people read without slowing anyone: the open incidents of a service
-- (the gate), the open ones by urgency (the console's list), the newest
-- resolved; partial, so only open (or resolved) rows are indexed. And what
-- a rollback reads on its way: the rollbacks the budget counts. (Until
-- version 9 these were created at every start.)
CREATE INDEX IF NOT EXISTS incidents_open_by_service ON incidents(service, severity_rank, opened_at) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS incidents_open_by_urgency ON incidents(tier, severity_rank, opened_at) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS incidents_resolved_by_time ON incidents(resolved_at) WHERE state = 'resolved';
CREATE INDEX IF NOT EXISTS actions_rollbacks_admitted ON actions(admitted_at) WHERE action = 'rollback';
