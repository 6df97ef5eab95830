-- Agent runs waiting to happen. One row per user at most: a strong interaction (event-triggered)
-- or a due cadence (scheduled) upserts the row, keeping the earliest due time, so bursts coalesce
-- into one run. Workers claim due rows with FOR UPDATE SKIP LOCKED and delete them when done.
create table run_queue (
    user_id      text primary key references users (id) on delete cascade,
    due_at       timestamptz not null,
    trigger      text not null,                  -- event | schedule | manual
    reason       text,
    requested_at timestamptz not null default now()
);
create index run_queue_due_idx on run_queue (due_at);

-- Per-user cadence (e.g. weekly discovery mix, release digest): when the next scheduled run is due.
create table user_schedules (
    user_id     text not null references users (id) on delete cascade,
    cadence     text not null,                   -- a cadence name from settings, e.g. weekly_discovery
    next_run_at timestamptz not null,
    last_run_at timestamptz,
    primary key (user_id, cadence)
);
create index user_schedules_due_idx on user_schedules (next_run_at);
