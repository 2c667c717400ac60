-- Batch incidents (issue 17): a bad batch is one incident. The batch and
-- its members as the latest decision saw them, on the incident and on
-- each decision (the action stage reads its decision back), and the blast
-- radius a human approved.

ALTER TABLE incidents ADD COLUMN batch TEXT;
ALTER TABLE decisions ADD COLUMN batch TEXT;
ALTER TABLE approvals ADD COLUMN scope TEXT;
