-- The recipient of a sent message that `tagloop db purge` deleted (tools/store/retention.py): an
-- unsubscribe link (agent/http/unsubscribe.py) names a message id and never expires, so the link of
-- an old mail finds its user and channel here once the message row is gone.
create table if not exists unsubscribe_recipients (
    message_id uuid primary key,
    user_id    text not null references users (id) on delete cascade,
    channel    text not null
);
create index if not exists unsubscribe_recipients_user_idx on unsubscribe_recipients (user_id);
