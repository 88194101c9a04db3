-- Firms as records (crate::firms): a client, template, app catalogue,
-- member or import names a firm that exists, so a typo is refused rather
-- than silently starting a new firm. The firms the data already names are
-- recorded here, each with its id as its name. A firm `default` is what
-- the command line acts for without --firm (a one-firm installation).
CREATE TABLE firms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO firms (id, name, created_at)
SELECT firm_id, firm_id, (extract(epoch FROM now()) * 1000)::BIGINT
FROM (
    SELECT firm_id FROM clients
    UNION SELECT firm_id FROM tree_templates
    UNION SELECT firm_id FROM app_catalogue
    UNION SELECT firm_id FROM members
    UNION SELECT firm_id FROM imports
) AS named;
INSERT INTO firms (id, name, created_at)
SELECT 'default', 'default', (extract(epoch FROM now()) * 1000)::BIGINT
WHERE NOT EXISTS (SELECT 1 FROM firms WHERE id = 'default');

-- API tokens issued by `dossier token create` (crate::api_tokens). Only
-- the SHA-256 of a token is kept; the token itself is shown once. A token
-- with a firm sees that firm only (scope `hooks`); `admin` tokens are
-- platform-wide. Revoked and expired tokens stay, for the record.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    firm_id      TEXT REFERENCES firms (id),
    scope        TEXT NOT NULL CHECK (scope IN ('hooks', 'admin')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    CHECK ((scope = 'hooks') = (firm_id IS NOT NULL))
);
CREATE INDEX api_tokens_firm ON api_tokens (firm_id, created_at);
