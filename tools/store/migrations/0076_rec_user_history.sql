-- What the reasons of a recommendation need, stored with the user's vector (issue 6) and stamped
-- with it (rec_user_vectors.event_seq / interests): the user's history in the model's item indices
-- with raw weights, and the providers they play. `tagloop recommend` and the HTTP route then read
-- the top-k and these in one round trip instead of re-aggregating the user's events per request.
alter table rec_user_vectors
    add column if not exists hist_items   integer[] not null default '{}',
    add column if not exists hist_weights float8[] not null default '{}',
    add column if not exists providers    text[] not null default '{}';
