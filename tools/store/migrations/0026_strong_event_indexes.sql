-- co_likes (tools/candidates.py) walks strong events only: a user's latest, and an item's latest
-- likers. Partial indexes over those ~4% of events; the predicate is the one the query spells out.
create index if not exists events_strong_user_idx on events (user_id, ts desc) include (item_id)
    where type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert');
create index if not exists events_strong_item_idx on events (item_id, ts desc) include (user_id)
    where type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert');
