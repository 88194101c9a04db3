-- Kinds an operator paused (`dossier queues pause`, the dashboard, the
-- admin API): no worker fetches their jobs until resumed. Every worker
-- reads this table about twice a second. It lives with the queue's tables.
CREATE TABLE queue_pauses (
    kind      TEXT PRIMARY KEY,
    reason    TEXT NOT NULL,
    paused_by TEXT NOT NULL,
    paused_at BIGINT NOT NULL
);
