-- The tag vocabulary in the store (issue 5): spelling variants merged into one canonical tag
-- (`aliases` keeps the merged surface forms), `family` is the broad level and `genre` the middle
-- level of microgenre → genre → broad; dense tag embeddings (PPMI + SVD) searchable by HNSW.
alter table tags add column aliases text[] not null default '{}';
alter table tags add column taxonomy_at timestamptz;                 -- when family/genre were last set
create index tags_family_idx on tags (family);
create index tags_aliases_idx on tags using gin (aliases);

-- item_tags.source: import | keyword | llm | cooccurrence | colisten | provider | embedding |
-- popular | confirmed.  Auto sources are replaced by each `tagloop tag items`; confidence < 0.5
-- is provisional (kept out of item vectors and profiles until behaviour confirms it).
create index item_tags_source_idx on item_tags (source) where source <> 'import';

create table tag_embeddings (
    tag_id      integer primary key references tags (id) on delete cascade,
    embedding   vector(64) not null,
    trained_at  timestamptz not null default now()
);
-- Cosine HNSW index: related tags are an ORDER BY embedding <=> query LIMIT k.
create index tag_embeddings_hnsw on tag_embeddings using hnsw (embedding vector_cosine_ops);
