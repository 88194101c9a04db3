-- The job queue of the embedded (SQLite) deployment.
-- Times are epoch milliseconds. `state` is what is stored: queued, running,
-- done or dead; "pending", "scheduled" and "retrying" are queued jobs told
-- apart by run_at and attempts when they are shown.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    idempotency_key  TEXT UNIQUE,
    trace_id         TEXT,
    last_error       TEXT,
    errors           TEXT NOT NULL DEFAULT '[]',
    result           TEXT
);

-- The fetch: due queued jobs of one kind, oldest first.
CREATE INDEX jobs_due ON jobs (kind, run_at) WHERE state = 'queued';
-- The rescuer: leases that ran out.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
-- Listings and counts by kind and state, and retention of finished jobs.
CREATE INDEX jobs_kind_state ON jobs (kind, state, updated_at);

CREATE TABLE workers (
    name           TEXT PRIMARY KEY NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    kinds          TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    running        INTEGER NOT NULL DEFAULT 0
);
