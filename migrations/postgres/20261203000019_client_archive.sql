-- A client the firm stopped working with (crate::client_archive): hidden
-- from listings, its queued work cancelled, nothing deleted. `archive`
-- keeps what archiving stopped (JSON: invitations and apps), so that
-- `unarchive` restarts exactly those.
ALTER TABLE clients ADD COLUMN archived_at BIGINT;
ALTER TABLE clients ADD COLUMN archive TEXT;
