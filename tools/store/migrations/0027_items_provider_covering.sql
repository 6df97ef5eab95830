-- new_from_providers reads a provider's newest items with their titles: cover them in the index so
-- the per-(user, provider) look-up is an ordered index-only scan (replaces 0025's narrower index).
drop index if exists items_provider_created_idx;
create index if not exists items_provider_created_idx on items (provider_id, created_at desc, id) include (title);
