-- Core schema: catalogue (providers, items, tags), audience (users), the event stream,
-- per-user profiles, decisions with propensities, and the message outbox.

create table providers (
    id          text primary key check (length(id) between 1 and 256),
    name        text not null,
    attributes  jsonb not null default '{}',
    created_at  timestamptz not null default now()
);

create table items (
    id          text primary key check (length(id) between 1 and 256),
    title       text not null default '',
    kind        text not null default 'track',
    provider_id text references providers (id) on delete set null,
    text        text,
    created_at  timestamptz not null default now(),
    attributes  jsonb not null default '{}',
    -- tf-idf weighted, L2-normalised item tag vector over tags.id (refreshed after tag changes)
    tag_vec     sparsevec(1000000),
    updated_at  timestamptz not null default now()
);
create index items_provider_idx on items (provider_id);
create index items_created_idx on items (created_at desc);

-- The tag vocabulary: one row per normalised tag; the id is its dimension in every sparsevec.
create table tags (
    id          integer generated always as identity (maxvalue 999999) primary key,
    name        text not null unique,
    family      text,
    genre       text,
    item_count  integer not null default 0,
    created_at  timestamptz not null default now()
);

create table item_tags (
    item_id     text not null references items (id) on delete cascade,
    tag_id      integer not null references tags (id) on delete cascade,
    weight      real not null check (weight > 0 and weight <= 1),
    source      text not null default 'import',   -- import | auto | llm | propagated | confirmed
    confidence  real not null default 1 check (confidence >= 0 and confidence <= 1),
    created_at  timestamptz not null default now(),
    primary key (item_id, tag_id)
);
create index item_tags_tag_idx on item_tags (tag_id);

create table users (
    id          text primary key check (length(id) between 1 and 256),
    timezone    text not null default 'UTC',
    locale      text,
    channels    jsonb not null default '{}',
    consent     jsonb not null default '{}',
    attributes  jsonb not null default '{}',
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create table events (
    seq         bigint generated always as identity primary key,
    id          text not null unique,          -- idempotency key: the same id is stored once
    user_id     text not null references users (id) on delete cascade,
    type        text not null,
    item_id     text references items (id) on delete set null,
    ts          timestamptz not null,
    value       double precision,
    message_id  text,
    context     jsonb not null default '{}',
    received_at timestamptz not null default now()
);
create index events_user_ts_idx on events (user_id, ts desc);
create index events_item_idx on events (item_id);
create index events_ts_idx on events (ts);

-- A user's tag-level preference profile. `tags` holds decayed weights as of `decayed_to`
-- (scale-free for ranking); `embedding` is a dense vector for the collaborative model.
create table user_profiles (
    user_id     text primary key references users (id) on delete cascade,
    tags        sparsevec(1000000),
    embedding   vector,
    decayed_to  timestamptz not null default now(),
    n_events    integer not null default 0,
    stats       jsonb not null default '{}',      -- hour-of-week, devices, channels, skip rate, …
    updated_at  timestamptz not null default now()
);

create table decisions (
    id             uuid primary key,               -- uuid5 of (user, run key): retries reuse it
    user_id        text not null references users (id) on delete cascade,
    created_at     timestamptz not null default now(),
    trigger        text not null default 'manual', -- manual | schedule | event
    policy_name    text not null,
    policy_version text not null,
    seed           bigint not null,
    candidates     jsonb not null,                 -- [{item_id, score, source}]
    chosen         jsonb not null,                 -- [item_id, …] in slate order
    propensities   double precision[] not null,    -- P(chosen[i] in slot i | earlier slots)
    channel        text,
    send_at        timestamptz,
    outcome        text not null,                  -- message | nothing_to_send | holdout | no_consent | …
    explanation    text,
    context        jsonb not null default '{}'
);
create index decisions_user_idx on decisions (user_id, created_at desc);

-- The outbox: a message is inserted in the same transaction as its decision, then claimed and
-- sent by a delivery worker; `id` is the idempotency key receivers dedupe on.
create table messages (
    id              uuid primary key,
    decision_id     uuid not null references decisions (id) on delete cascade,
    user_id         text not null references users (id) on delete cascade,
    channel         text not null,
    title           text not null,
    body            text not null,
    items           jsonb not null default '[]',
    send_at         timestamptz not null,
    status          text not null default 'pending'
                    check (status in ('pending', 'sending', 'sent', 'failed', 'dead', 'cancelled')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    sent_at         timestamptz,
    created_at      timestamptz not null default now()
);
create index messages_due_idx on messages (next_attempt_at) where status = 'pending';
create index messages_user_idx on messages (user_id, created_at desc);
