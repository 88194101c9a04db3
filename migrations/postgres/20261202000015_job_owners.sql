-- Whom a job works for and what it works on (Dossier: the firm and the
-- client), so that operators find and act on one client's or one firm's
-- jobs without reading the backlog; and the indexes the other filters of
-- `dossier jobs list` use. Partial: jobs without the field cost nothing,
-- and none holds `updated_at`, so a job's state changes leave them alone.
ALTER TABLE jobs ADD COLUMN group_name TEXT;
ALTER TABLE jobs ADD COLUMN subject TEXT;
CREATE INDEX jobs_group ON jobs (group_name) WHERE group_name IS NOT NULL;
CREATE INDEX jobs_subject ON jobs (subject) WHERE subject IS NOT NULL;
CREATE INDEX jobs_trace ON jobs (trace_id) WHERE trace_id IS NOT NULL;
-- The error filter reads failed jobs only, newest first.
CREATE INDEX jobs_failed ON jobs (updated_at) WHERE last_error IS NOT NULL;

ALTER TABLE outbox ADD COLUMN group_name TEXT;
ALTER TABLE outbox ADD COLUMN subject TEXT;
