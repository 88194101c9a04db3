-- Answers to hook requests sent with an Idempotency-Key: written in the
-- same transaction as what the request created, so a retried request gets
-- the first answer and creates nothing twice.
CREATE TABLE http_requests (
    key          TEXT PRIMARY KEY NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
