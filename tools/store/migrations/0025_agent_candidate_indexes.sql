-- Indexes for the agent's candidate sources (tools/candidates.py, tools/sequences.py).
-- new_from_providers: per (user, played provider), the provider's newest items in the window.
create index if not exists items_provider_created_idx on items (provider_id, created_at desc, id);
-- co_likes and sequence fan-out: the latest events on an item, newest first, with their user.
create index if not exists events_item_ts_idx on events (item_id, ts desc) include (user_id, type);
