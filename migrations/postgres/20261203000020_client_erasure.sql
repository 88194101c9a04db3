-- When a client's people were erased (crate::erasure): the client stays,
-- archived for good, with the company facts; its people's data is gone.
ALTER TABLE clients ADD COLUMN erased_at BIGINT;
