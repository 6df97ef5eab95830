-- A cold item's vector (placed from its tags after training, tools/recommender/serving.py) follows
-- its tags: any change to the item's tags marks the vector stale, and the next placement computes it
-- again. Before, an item placed while it had no tags kept a zero vector until the next training,
-- however it was tagged meanwhile (a re-PUT with tags, `tagloop tag items`).
alter table item_vectors add column if not exists stale boolean not null default false;
create index if not exists item_vectors_stale_idx on item_vectors (model_id) where stale;

create or replace function item_vectors_mark_stale() returns trigger language plpgsql as $$
begin
    update item_vectors v set stale = true
    from (select distinct item_id from changed) c
    where v.item_id = c.item_id and v.cold and not v.stale;
    return null;
end
$$;

drop trigger if exists item_tags_insert_stale on item_tags;
create trigger item_tags_insert_stale after insert on item_tags
    referencing new table as changed for each statement execute function item_vectors_mark_stale();
drop trigger if exists item_tags_update_stale on item_tags;
create trigger item_tags_update_stale after update on item_tags
    referencing new table as changed for each statement execute function item_vectors_mark_stale();
drop trigger if exists item_tags_delete_stale on item_tags;
create trigger item_tags_delete_stale after delete on item_tags
    referencing old table as changed for each statement execute function item_vectors_mark_stale();
