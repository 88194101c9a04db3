-- Kinds whose concurrency an operator set (`dossier queues scale`): each
-- worker gives the kind this many slots instead of its configured
-- concurrency, read about twice a second, live and across restarts.
-- Each worker's current slots per kind are in its heartbeat row.
CREATE TABLE queue_scales (
    kind        TEXT PRIMARY KEY,
    concurrency BIGINT NOT NULL CHECK (concurrency BETWEEN 1 AND 1024),
    set_by      TEXT NOT NULL,
    set_at      BIGINT NOT NULL
);
ALTER TABLE workers ADD COLUMN concurrency TEXT NOT NULL DEFAULT '{}';
