-- Folder trees (arborescences), fiscal years (exercices) and the folders
-- of each client's document tree.

-- A firm's tree templates, as loaded from config/trees/*.toml. `definition`
-- is the validated template as JSON. At most one default per firm.
CREATE TABLE tree_templates (
    id          TEXT PRIMARY KEY NOT NULL,
    firm_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    is_default  INTEGER NOT NULL DEFAULT 0,
    definition  TEXT NOT NULL,
    source      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (firm_id, name)
);
CREATE UNIQUE INDEX tree_templates_one_default ON tree_templates (firm_id) WHERE is_default = 1;

-- Template definitions as clients received them, stored once each and
-- keyed by the SHA-256 of the definition: editing a template later does not
-- move existing clients' folders, and 10,000 clients on one tree share one row.
CREATE TABLE tree_snapshots (
    id            TEXT PRIMARY KEY NOT NULL,
    template_name TEXT NOT NULL,
    definition    TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- The tree each client's folders follow, fixed at set-up.
CREATE TABLE client_trees (
    client_id     TEXT PRIMARY KEY NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    template_name TEXT NOT NULL,
    snapshot_id   TEXT NOT NULL REFERENCES tree_snapshots (id),
    created_at    INTEGER NOT NULL
);

-- Dates are ISO 8601 text (YYYY-MM-DD): compared as text on both engines.
-- `label` is the exercice folder's name; unique per client, like the start.
CREATE TABLE exercices (
    id              TEXT PRIMARY KEY NOT NULL,
    client_id       TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    start_date      TEXT NOT NULL CHECK (start_date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    end_date        TEXT NOT NULL CHECK (end_date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    label           TEXT NOT NULL,
    origin          TEXT NOT NULL CHECK (origin IN ('manual', 'rollover')),
    created_at      INTEGER NOT NULL,
    folders_done_at INTEGER,
    CHECK (end_date >= start_date),
    UNIQUE (client_id, start_date),
    UNIQUE (client_id, label)
);
CREATE INDEX exercices_folders_pending ON exercices (created_at) WHERE folders_done_at IS NULL;

-- Every folder of every client's tree, keyed by its path ("Comptabilité/
-- Achats/2025/2025-01 Janvier"): the key makes writing a folder twice a
-- no-op, whoever writes it.
CREATE TABLE client_folders (
    client_id   TEXT NOT NULL,
    path        TEXT NOT NULL,
    parent_path TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('directory', 'exercice', 'month')),
    theme       TEXT,
    exercice_id TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, path)
) WITHOUT ROWID;
