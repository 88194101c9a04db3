-- Registry request quotas (crate::sirene::quota): one row per request let
-- through to a provider, kept while it is inside the provider's window.
-- Every process that uses this database counts here, whatever carries the
-- queue, so N workers never send N times the quota.
CREATE TABLE quota_slots (
    name        TEXT NOT NULL,
    taken_at_ms INTEGER NOT NULL
);
CREATE INDEX quota_slots_by_name ON quota_slots (name, taken_at_ms);
