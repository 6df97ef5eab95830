-- The recommender served from Postgres (issue 6). A trained model is a row of rec_models (its
-- fold-in parameters as the model.json/model.npz pair of tools/recommender/store.py, so any process
-- can serve it) and one vector per item in item_vectors. Dimensions differ per model, so `vec` has
-- no typmod; each model gets its own partial expression HNSW index
--   create index item_vectors_hnsw_m<ID> on item_vectors using hnsw ((vec::vector(D)) vector_ip_ops)
--   where model_id = <ID>
-- created by tools/recommender/pg.py after the bulk load, and retrieval is
--   order by vec::vector(D) <#> :user_vec limit k.
-- Exactly one model is 'active'; a new model is 'building' until its index exists.
create table rec_models (
    id           bigint generated always as identity primary key,
    dim          integer not null check (dim between 1 and 2000),
    status       text not null default 'building' check (status in ('building', 'active', 'retired')),
    params       jsonb not null default '{}',
    stats        jsonb not null default '{}',
    meta         bytea,          -- model.json (ids, tags, params)
    arrays       bytea,          -- model.npz (item vectors, fold-in matrices, tag vectors)
    trained_at   timestamptz not null default now(),
    activated_at timestamptz
);
create unique index rec_models_one_active on rec_models ((true)) where status = 'active';

create table item_vectors (
    model_id  bigint not null references rec_models (id) on delete cascade,
    item_id   text not null references items (id) on delete cascade,
    vec       vector not null,
    cold      boolean not null default false,   -- placed from its tags after training (Release Radar)
    primary key (model_id, item_id)
);

-- "has this user seen this item" is asked per candidate by every retrieval query
create index if not exists events_user_item_idx on events (user_id, item_id);
