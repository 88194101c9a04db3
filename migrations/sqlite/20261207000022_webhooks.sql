-- The firms' event webhooks (crate::events). An endpoint is where one
-- firm's events go; its secret is sealed with apps.encryption_keys like
-- the partner secrets. failing_since: the first failure of the current run
-- of failures (NULL once a delivery succeeds); an endpoint failing for
-- webhooks.disable_after_secs is disabled with a reason.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    firm_id TEXT NOT NULL REFERENCES firms(id),
    url TEXT NOT NULL,
    -- JSON array of event types.
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER,
    failing_since INTEGER,
    disabled_at INTEGER,
    disabled_reason TEXT
);
CREATE INDEX webhook_endpoints_firm ON webhook_endpoints (firm_id);

-- What happened, written in the transaction of the change that caused it.
-- seq orders one client's events (clients.event_seq, bumped under the
-- client's row lock); an import's one event has seq 1. The body holds no
-- personal data: ids, states, counts, company facts.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    firm_id TEXT NOT NULL,
    type TEXT NOT NULL,
    client_id TEXT,
    import_id TEXT,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_client ON events (client_id, seq);
CREATE INDEX events_firm ON events (firm_id, created_at);

-- One event for one endpoint: written with the event, closed by the
-- webhook_delivery job. ordering_key is the client (or import) whose
-- events go out in seq order: a delivery waits while an earlier one of
-- the same key and endpoint is pending.
CREATE TABLE webhook_deliveries (
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    ordering_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    -- pending, delivered, failed (out of attempts), abandoned (endpoint disabled)
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    -- The receiver's last answer: status and a short excerpt, redacted.
    last_answer TEXT,
    delivered_at INTEGER,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, ordering_key, seq)
    WHERE status = 'pending';

-- The last event sequence number given to the client's events, and when
-- every onboarding step was first finished (client.ready is sent once).
ALTER TABLE clients ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN ready_at INTEGER;
