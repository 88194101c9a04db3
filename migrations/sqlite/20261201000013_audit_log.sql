-- The operators' audit trail (crate::audit): every operator action from
-- the command line, the dashboard or the admin API, with who (a token's
-- name, or the OS user), what, when, and the ids or filter it touched.
-- Kept audit.retention_days. No payload, email or token is stored here.
CREATE TABLE audit_log (
    id     TEXT PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
