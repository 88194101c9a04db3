-- The job queue's tables on PostgreSQL, kept column for column with the
-- SQLite migration so that every backend stores the same record.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    payload          JSONB NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    idempotency_key  TEXT UNIQUE,
    trace_id         TEXT,
    last_error       TEXT,
    errors           JSONB NOT NULL DEFAULT '[]'::jsonb,
    result           JSONB
);

CREATE INDEX jobs_due ON jobs (kind, run_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_kind_state ON jobs (kind, state, updated_at);

CREATE TABLE workers (
    name           TEXT PRIMARY KEY,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    kinds          JSONB NOT NULL,
    started_at     BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    running        INTEGER NOT NULL DEFAULT 0
);
