-- Partner applications: the firm's catalogue, and each client's activations.

-- One row per app of a firm's catalogue (`dossier app load`); `definition`
-- is the validated entry as JSON.
CREATE TABLE app_catalogue (
    firm_id     TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    definition  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (firm_id, app_id)
);

-- A client's access to an app. `settings` is a JSON object whose secret
-- values are sealed (AEAD, see secrets.rs). `generation` goes up on each
-- enable/disable, so a job for an older one does nothing. `status`:
-- pending (set-up queued), active, failed (permanent refusal, reason in
-- last_error), disabling (teardown queued), disabled.
CREATE TABLE client_apps (
    client_id          TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    app_id             TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('redirection', 'automation')),
    on_director_portal INTEGER NOT NULL DEFAULT 0,
    settings           TEXT NOT NULL DEFAULT '{}',
    status             TEXT NOT NULL
        CHECK (status IN ('pending', 'active', 'failed', 'disabling', 'disabled')),
    generation         INTEGER NOT NULL DEFAULT 0,
    external_id        TEXT,
    partner_status     TEXT,
    last_error         TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (client_id, app_id)
);
