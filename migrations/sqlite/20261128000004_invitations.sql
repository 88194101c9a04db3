-- Invitations of a client's director and employees to the platform.
-- Only the SHA-256 of a token is stored; `generation` goes up on each
-- resend, and a job for an older generation sends nothing.
-- `send_state`: `sending` from the moment a token is issued until the SMTP
-- server has the envelope; `committing` from just before the message body
-- goes out until the server's answer is recorded (see invitations::send).
CREATE TABLE invitations (
    id               TEXT PRIMARY KEY NOT NULL,
    client_id        TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    email_key        TEXT NOT NULL,
    first_name       TEXT NOT NULL,
    last_name        TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('director', 'employee')),
    invited_by       TEXT REFERENCES invitations (id),
    themes           TEXT NOT NULL DEFAULT '[]',
    status           TEXT NOT NULL
        CHECK (status IN ('draft', 'queued', 'sent', 'accepted', 'expired', 'revoked')),
    generation       INTEGER NOT NULL DEFAULT 0,
    token_hash       TEXT UNIQUE,
    expires_at       INTEGER,
    send_state       TEXT CHECK (send_state IN ('sending', 'committing')),
    message_id       TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    queued_at        INTEGER,
    sent_at          INTEGER,
    accepted_at      INTEGER,
    revoked_at       INTEGER,
    expired_at       INTEGER,
    -- Set when the one reminder is queued; that generation's email says so.
    reminded_at      INTEGER,
    reminder_generation INTEGER
);

-- One live invitation per person and client (emails compared lowercased).
CREATE UNIQUE INDEX invitations_live ON invitations (client_id, email_key)
    WHERE status IN ('draft', 'queued', 'sent');
CREATE INDEX invitations_client ON invitations (client_id);
