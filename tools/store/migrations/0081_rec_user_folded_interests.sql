-- The tag interests a stored user vector folds in when they are more than the declared ones: the
-- tags of the items added after training that the user played (history.add_new_item_interests).
-- The reasons of the stored-vector path read them; without them a user known through new items
-- got "because you like bossa nova" once, then "popular with listeners right now". Null: the
-- declared interests alone (`interests`).
alter table rec_user_vectors add column if not exists folded_interests jsonb;
