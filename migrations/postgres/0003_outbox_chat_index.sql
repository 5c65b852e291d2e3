-- v3: per-chat outbox reads (the drainer reads one chat's pending rows in order).
CREATE INDEX outbox_chat_pending_idx ON outbox (side, state, chat_id, id);
