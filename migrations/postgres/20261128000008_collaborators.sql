-- A firm's members (accountants), and which of them follow each client.
CREATE TABLE members (
    id         TEXT PRIMARY KEY,
    firm_id    TEXT NOT NULL,
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (firm_id, email_key)
);

CREATE TABLE client_collaborators (
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    member_id  TEXT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, member_id)
);
