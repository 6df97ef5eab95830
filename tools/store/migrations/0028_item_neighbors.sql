-- Precomputed co-likes (tools/neighbors.py): each item's top neighbours by co-occurrence in users'
-- recent strong events, refreshed when stale, so the agent's co_likes source is one join per batch.
create table if not exists item_neighbors (
    item_id     text not null,
    neighbor_id text not null,
    score       real not null,
    support     integer not null,
    primary key (item_id, neighbor_id)
);
create table if not exists item_neighbors_state (
    singleton    boolean primary key default true check (singleton),
    as_of        timestamptz not null,   -- the run clock the table was computed for
    events_seq   bigint not null,        -- max(events.seq) when it was computed
    refreshed_at timestamptz not null default now()
);
-- Each user's most played providers (positive events), refreshed with item_neighbors, for the
-- new_from_providers source.
create table if not exists user_top_providers (
    user_id   text primary key,
    providers text[] not null,   -- most played first
    counts    integer[] not null
);
