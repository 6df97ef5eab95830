-- Online profiles and message credit.
-- decision_feedback: engagement with tagloop's own messages (events carrying a message_id),
-- credited to the decision that sent the message; one row per decision, updated per event batch.
create table decision_feedback (
    decision_id   uuid primary key references decisions (id) on delete cascade,
    user_id       text not null references users (id) on delete cascade,
    channel       text,
    opens         integer not null default 0,
    clicks        integer not null default 0,
    converts      integer not null default 0,
    negatives     integer not null default 0,   -- dismiss / unsubscribe / dislike after the message
    other         integer not null default 0,
    reward        double precision not null default 0,
    first_event_at timestamptz,
    last_event_at  timestamptz
);
create index decision_feedback_user_idx on decision_feedback (user_id);

-- Event ids of recently seen message ids are looked up by text (events.message_id is text).
create index if not exists events_message_idx on events (message_id) where message_id is not null;
