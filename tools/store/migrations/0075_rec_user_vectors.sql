-- Stored user vectors of the served recommender (issue 6), so top-k is one statement: the user's
-- vector is read from this table inside the HNSW query instead of being folded in per request.
-- A row is valid for `model_id` while the user has no event after `event_seq` (the largest
-- events.seq folded in; 0 for none) and their declared interests equal `interests`; a stale or
-- missing row makes tools/recommender/serving.py fold the user in from the events and rewrite it.
-- `tagloop train` writes every user's row for the new model before activating it.
create table if not exists rec_user_vectors (
    user_id    text primary key references users (id) on delete cascade,
    model_id   bigint not null references rec_models (id) on delete cascade,
    event_seq  bigint not null default 0,
    interests  jsonb,
    vec        vector not null,
    updated_at timestamptz not null default now()
);

-- The freshness check reads max(seq) of one user's events and the seen filter probes (user, item):
-- both index-only with seq carried in the (user_id, item_id) index of 0030 (replaced, not added:
-- the same number of indexes to maintain per ingested event).
drop index if exists events_user_item_idx;
create index if not exists events_user_item_idx on events (user_id, item_id) include (seq);
