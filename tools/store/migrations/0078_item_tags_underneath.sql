-- An imported tag takes over the row of another source it repeats (one row per item and tag), and
-- keeps what it took over in `underneath` (source, weight, confidence): when a later import leaves
-- the tag out, the row goes back to it instead of disappearing. Before, a keyword or confirmed tag
-- an import had once repeated was lost for good (and `tag items --only-untagged` skipped the item).
alter table item_tags add column if not exists underneath jsonb;
