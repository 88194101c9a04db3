-- Jobs written in the same transaction as the business data they are about,
-- relayed to the queue afterwards (outbox::relay). A job whose transaction
-- rolled back was never here; a row survives a crash before its push; a
-- push repeated after a crash is deduplicated by the row's idempotency key.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    run_at          BIGINT,
    max_attempts    BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    trace_id        TEXT,
    created_at      BIGINT NOT NULL
);
