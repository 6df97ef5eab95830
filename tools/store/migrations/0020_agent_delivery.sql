-- The agent and delivery: per-decision arm choices (channel, send hour) with propensities and the
-- run key that made the decision id; per-message send hour (the bandit arm credited by opens and
-- clicks), and a claim lease so a message claimed by a worker that died is retried, not lost.
alter table decisions add column run_key text;
alter table decisions add column arms jsonb not null default '{}';   -- {channel: {arm, propensity, arms}, send_hour: {...}}

alter table messages add column send_hour smallint;                  -- local hour arm, null = immediate
alter table messages add column claimed_until timestamptz;           -- lease of a 'sending' claim
alter table messages add column dead_at timestamptz;

create index messages_lease_idx on messages (claimed_until) where status = 'sending';
create index messages_sent_idx on messages (user_id, channel, sent_at) where status = 'sent';
create index if not exists events_message_idx on events (message_id) where message_id is not null;
create index events_user_type_idx on events (user_id, type, ts) where type = 'unsubscribe';
create index events_user_item_idx on events (user_id, item_id);
