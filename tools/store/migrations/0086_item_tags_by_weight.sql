-- A tag's confident items, heaviest first: the declared-interest candidates (tools/interests.py)
-- read the top few of each interest tag instead of every item carrying it (a tag on 100,000 items
-- cost ~350 ms per user with no events in every batch of the agent's `tags` source).
create index if not exists item_tags_tag_weight_idx on item_tags (tag_id, weight desc, item_id)
    where confidence >= 0.5;
