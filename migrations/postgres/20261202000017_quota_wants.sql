-- Interactive lookups waiting for a registry's quota (crate::sirene::quota):
-- while one waits, bulk lookups (an import's) take no slot of that
-- provider, so that a client created by hand gets the next free one
-- however many of an import's lookups are queued for it. A row lives
-- until its waiter takes a slot, or until `until_ms` if it went away.
CREATE TABLE quota_wants (
    name     TEXT NOT NULL,
    waiter   TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (name, waiter)
);
