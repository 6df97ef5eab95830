-- events (item_id) is covered by the prefix of events_item_ts_idx (item_id, ts desc) include (...):
-- one index less to maintain on every ingested event.
drop index if exists events_item_idx;
create index if not exists events_item_ts_idx on events (item_id, ts desc) include (user_id, type);
