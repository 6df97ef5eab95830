-- Dead letters by when they died: `tagloop decisions dead-letters` (newest first), `tagloop outbox`
-- and the tagloop_outbox_messages{status="dead"} gauge, computed at every /metrics scrape, count
-- and list them without reading the whole messages table (sent ones are the bulk of it).
create index if not exists messages_dead_idx on messages (dead_at desc) where status = 'dead';
