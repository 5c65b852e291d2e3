-- v1: chats, puppets, messages and their per-side links; reactions; outbox; checkpoints; quarantine; key-value.
CREATE TABLE chat (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    name_ts INTEGER NOT NULL DEFAULT 0,
    topic TEXT NOT NULL DEFAULT '',
    encryption TEXT NOT NULL DEFAULT 'off',
    created_at INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE TABLE chat_link (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    side TEXT NOT NULL,
    remote_chat_id TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (side, remote_chat_id),
    UNIQUE (chat_id, side)
) STRICT;

CREATE TABLE puppet (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin_side TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
) STRICT;

CREATE TABLE puppet_link (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    puppet_id INTEGER NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    side TEXT NOT NULL,
    remote_user_id TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    UNIQUE (side, remote_user_id)
) STRICT;

CREATE TABLE chat_member (
    chat_id INTEGER NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    puppet_id INTEGER NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    joined INTEGER NOT NULL DEFAULT 1,
    changed_ts INTEGER NOT NULL,
    PRIMARY KEY (chat_id, puppet_id)
) STRICT;

CREATE TABLE message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    chat_id INTEGER NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    sender_puppet_id INTEGER REFERENCES puppet (id),
    origin_side TEXT NOT NULL,
    kind TEXT NOT NULL,
    target_message_id INTEGER REFERENCES message (id),
    ts INTEGER NOT NULL,
    content TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX message_chat_idx ON message (chat_id, id);

CREATE TABLE message_link (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    side TEXT NOT NULL,
    remote_msg_id TEXT NOT NULL,
    part TEXT NOT NULL DEFAULT '',
    UNIQUE (side, remote_msg_id, part)
) STRICT;
CREATE INDEX message_link_msg_idx ON message_link (message_id, side);

CREATE TABLE reaction (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    puppet_id INTEGER NOT NULL REFERENCES puppet (id) ON DELETE CASCADE,
    reaction_key TEXT NOT NULL,
    event_message_id INTEGER NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    UNIQUE (message_id, puppet_id, reaction_key)
) STRICT;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    side TEXT NOT NULL,
    chat_id INTEGER NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    done_at INTEGER NOT NULL DEFAULT 0,
    UNIQUE (side, message_id)
) STRICT;
CREATE INDEX outbox_pending_idx ON outbox (side, state, id);

CREATE TABLE ingest_checkpoint (
    mailbox TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    side TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw BLOB,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX quarantine_remote_idx ON quarantine (side, remote_id);

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
