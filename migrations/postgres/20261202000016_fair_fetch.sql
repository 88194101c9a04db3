-- A fair share of each kind's workers: a job is interactive (0: a client
-- created by hand or through the hook) or bulk (1: an import's), and each
-- fetch serves the groups (firms) with due work in turn, interactive
-- before bulk. The fetch walks this index one (lane, group) at a time, so
-- its cost stays flat whatever the backlog; it replaces jobs_due, which
-- it covers (a kind's due jobs by run time, within a lane and group).
ALTER TABLE jobs ADD COLUMN bulk INTEGER NOT NULL DEFAULT 0;
DROP INDEX jobs_due;
CREATE INDEX jobs_fair ON jobs (kind, bulk, COALESCE(group_name, ''), run_at, id)
    WHERE state = 'queued';

ALTER TABLE outbox ADD COLUMN bulk INTEGER NOT NULL DEFAULT 0;
