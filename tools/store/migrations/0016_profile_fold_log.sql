-- Profiles folded from the event log (tools/profile_folder.py) instead of inside each ingest request.
-- profile_fold_state: the folder's checkpoint, one row. Every event with seq <= last_seq has been
-- folded into its user's profile (or was written before this migration: the old ingest folded it
-- in its own transaction). A missing row means 0.
create table profile_fold_state (
    id        smallint primary key default 1 check (id = 1),
    last_seq  bigint not null,
    folded_at timestamptz not null default now()
);
insert into profile_fold_state (id, last_seq) select 1, coalesce(max(seq), 0) from events;

-- folded_seq: the user's events with seq <= folded_seq are in the profile whatever the checkpoint
-- says (set by a read-your-writes fold of one user and by rebuild_profiles); the folder skips them.
-- hour_of_week: the 168-slot activity histogram (Monday 00:00 local first), out of the stats jsonb
-- so folding a profile does not parse and re-serialise 168 integers.
alter table user_profiles
    add column folded_seq bigint not null default 0,
    add column hour_of_week integer[];

update user_profiles p
set hour_of_week = array(select h.v::int from jsonb_array_elements_text(p.stats -> 'hour_of_week')
                                              with ordinality as h(v, n) order by h.n),
    stats = p.stats - 'hour_of_week'
where jsonb_typeof(p.stats -> 'hour_of_week') = 'array';
