-- v4: who has seen which message (one read receipt per reader and message).
CREATE TABLE receipt (
    message_id INTEGER NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    puppet_id INTEGER NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, puppet_id)
) STRICT;
