-- Bulk imports (import massif). A client remembers the firm's own
-- reference for it and, when an import created it, which import and which
-- line: re-importing a file matches clients by SIRET, else by reference,
-- and an interrupted import resumes without creating a line twice.
ALTER TABLE clients ADD COLUMN external_ref TEXT;
ALTER TABLE clients ADD COLUMN import_id TEXT;
ALTER TABLE clients ADD COLUMN import_line INTEGER;
CREATE UNIQUE INDEX clients_firm_external_ref ON clients (firm_id, external_ref) WHERE external_ref IS NOT NULL;
CREATE UNIQUE INDEX clients_import_line ON clients (import_id, import_line) WHERE import_id IS NOT NULL;

-- One import: the file as received (a worker on another machine reads it
-- from here), its progress and its final report. The `bulk_import` job that
-- runs it is leased by the queue like any job; a retried run resumes.
CREATE TABLE imports (
    id             TEXT PRIMARY KEY NOT NULL,
    firm_id        TEXT NOT NULL,
    file_name      TEXT NOT NULL,
    content        BLOB NOT NULL,
    options        TEXT NOT NULL DEFAULT '{}',
    status         TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'refused', 'failed')),
    rows_total     INTEGER NOT NULL DEFAULT 0,
    rows_validated INTEGER NOT NULL DEFAULT 0,
    rows_created   INTEGER NOT NULL DEFAULT 0,
    rows_skipped   INTEGER NOT NULL DEFAULT 0,
    rows_refused   INTEGER NOT NULL DEFAULT 0,
    jobs_enqueued  INTEGER NOT NULL DEFAULT 0,
    report         TEXT,
    errors_csv     TEXT,
    error          TEXT,
    schedule       TEXT,
    source_path    TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER
);
CREATE INDEX imports_firm ON imports (firm_id, created_at);
