-- A send in flight (crate::invitations::begin_send): what a retry needs to
-- send the identical message again when the first one's outcome is unknown
-- (the nonce the link's token derives from, the Date, the company and theme
-- labels), as JSON. Cleared once the outcome is known.
ALTER TABLE invitations ADD COLUMN send_frame TEXT;
-- The mail server's answer to the message (its queue id when it gives
-- one), addresses redacted: what to quote to the postmaster.
ALTER TABLE invitations ADD COLUMN smtp_reply TEXT;
-- Keys the server derives things from when no key is configured (the
-- invitation links' key): shared by every process on this database.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
