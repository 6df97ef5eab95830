-- Tags the catalogue owner took off an item (`tagloop tag remove ITEM TAG`): `tagloop tag items`
-- never proposes them for that item again. An import's `tags` replace the catalogue's own tags
-- only (source `import`), so before this a wrong proposed or behaviour-confirmed tag could not be
-- removed at all: a retag or `tags: null` kept it, and each `tag items` run proposed it again.
create table if not exists item_tag_rejections (
    item_id     text not null references items (id) on delete cascade,
    tag_id      integer not null references tags (id) on delete cascade,
    rejected_at timestamptz not null default now(),
    primary key (item_id, tag_id)
);
create index if not exists item_tag_rejections_tag_idx on item_tag_rejections (tag_id);
