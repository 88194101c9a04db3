-- Clients of the firm and what the registries say about them.
-- `entered` holds what the user typed, `registry` the registry's answer,
-- `company` the values in force (typed values win), `differences` where the
-- two disagree. JSON objects keyed by field name (`legal_name`, `address.city`…).
CREATE TABLE clients (
    id                 TEXT PRIMARY KEY NOT NULL,
    firm_id            TEXT NOT NULL,
    siret              TEXT,
    entered            TEXT NOT NULL DEFAULT '{}',
    registry           TEXT,
    company            TEXT NOT NULL DEFAULT '{}',
    differences        TEXT NOT NULL DEFAULT '[]',
    directors          TEXT NOT NULL DEFAULT '[]',
    enrichment_status  TEXT NOT NULL DEFAULT 'pending'
        CHECK (enrichment_status IN ('pending', 'enriched', 'not_found', 'skipped')),
    enrichment_message TEXT,
    warning            TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    enriched_at        INTEGER
);

-- One SIRET once per firm; clients without a SIRET are allowed.
CREATE UNIQUE INDEX clients_firm_siret ON clients (firm_id, siret) WHERE siret IS NOT NULL;
