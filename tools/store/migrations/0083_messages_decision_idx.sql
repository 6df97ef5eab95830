-- Messages by their decision: deleting a decision (`tagloop db purge`, or a user's, by cascade) looks
-- its messages up through the foreign key; without this index each deleted decision scanned the
-- whole messages table.
create index if not exists messages_decision_idx on messages (decision_id);
