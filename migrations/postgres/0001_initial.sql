-- v1: chats, puppets, messages and their per-side links; reactions; outbox; checkpoints; quarantine; key-value.
CREATE TABLE chat (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    name_ts BIGINT NOT NULL DEFAULT 0,
    topic TEXT NOT NULL DEFAULT '',
    encryption TEXT NOT NULL DEFAULT 'off',
    created_at BIGINT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE chat_link (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chat_id BIGINT NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    side TEXT NOT NULL,
    remote_chat_id TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (side, remote_chat_id),
    UNIQUE (chat_id, side)
);

CREATE TABLE puppet (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin_side TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE puppet_link (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    puppet_id BIGINT NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    side TEXT NOT NULL,
    remote_user_id TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (side, remote_user_id)
);

CREATE TABLE chat_member (
    chat_id BIGINT NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    puppet_id BIGINT NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    joined BIGINT NOT NULL DEFAULT 1,
    changed_ts BIGINT NOT NULL,
    PRIMARY KEY (chat_id, puppet_id)
);

CREATE TABLE message (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    chat_id BIGINT NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    sender_puppet_id BIGINT REFERENCES puppet (id),
    origin_side TEXT NOT NULL,
    kind TEXT NOT NULL,
    target_message_id BIGINT REFERENCES message (id),
    ts BIGINT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX message_chat_idx ON message (chat_id, id);

CREATE TABLE message_link (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id BIGINT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    side TEXT NOT NULL,
    remote_msg_id TEXT NOT NULL,
    part TEXT NOT NULL DEFAULT '',
    UNIQUE (side, remote_msg_id, part)
);
CREATE INDEX message_link_msg_idx ON message_link (message_id, side);

CREATE TABLE reaction (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id BIGINT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    puppet_id BIGINT NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    reaction_key TEXT NOT NULL,
    event_message_id BIGINT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    UNIQUE (message_id, puppet_id, reaction_key)
);

CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    side TEXT NOT NULL,
    chat_id BIGINT NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    message_id BIGINT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    done_at BIGINT NOT NULL DEFAULT 0,
    UNIQUE (side, message_id)
);
CREATE INDEX outbox_pending_idx ON outbox (side, state, id);

CREATE TABLE ingest_checkpoint (
    mailbox TEXT PRIMARY KEY,
    uidvalidity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE quarantine (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    side TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw BYTEA,
    created_at BIGINT NOT NULL
);
CREATE INDEX quarantine_remote_idx ON quarantine (side, remote_id);

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
