-- v5: what a chat-info event replaced, so sides see the chat as of each event (e.g. the old name of a rename).
CREATE TABLE chat_info_change (
    message_id INTEGER PRIMARY KEY REFERENCES message (id) ON DELETE CASCADE,
    chat_id INTEGER NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    old_name TEXT NOT NULL DEFAULT '',
    old_name_ts INTEGER NOT NULL DEFAULT 0,
    old_topic TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX chat_info_change_chat_idx ON chat_info_change (chat_id, message_id);
