-- Reads that never slow anyone (issue 16): the console's list reads the
-- most urgent open incidents, the gate a service's open ones, both
-- through indexes instead of every incident. `service` is the incident's
-- `service` label (labels are a JSON list of [name, value] pairs).

ALTER TABLE incidents ADD COLUMN service TEXT;

UPDATE incidents SET service = (
    SELECT p ->> 1 FROM jsonb_array_elements(labels::jsonb) p WHERE p ->> 0 = 'service' LIMIT 1
);

CREATE INDEX incidents_open_by_service ON incidents (service, severity_rank, opened_at) WHERE state = 'open';
CREATE INDEX incidents_open_by_urgency ON incidents (tier, severity_rank, opened_at) WHERE state = 'open';
CREATE INDEX incidents_resolved_by_time ON incidents (resolved_at) WHERE state = 'resolved';
