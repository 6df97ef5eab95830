-- Channel names in users' `consent` and `channels`, trimmed and lower-cased as ingest stores them
-- since this release: {"EMAIL": true} stored before left the user without email consent (sends ask
-- for "email") and kept an address the email check never saw. A user whose keys would collide once
-- folded ({"Email": true, "email": false}) is left as stored: `PUT` them again to decide.
with folded as (
    select u.id,
           (select coalesce(jsonb_object_agg(lower(btrim(e.key)), e.value), '{}'::jsonb)
            from jsonb_each(u.consent) as e) as consent,
           (select coalesce(jsonb_object_agg(lower(btrim(e.key)), e.value), '{}'::jsonb)
            from jsonb_each(u.channels) as e) as channels
    from users u
    where jsonb_typeof(u.consent) = 'object' and jsonb_typeof(u.channels) = 'object'
      and (exists (select 1 from jsonb_object_keys(u.consent) as k where k <> lower(btrim(k)))
           or exists (select 1 from jsonb_object_keys(u.channels) as k where k <> lower(btrim(k))))
      and (select count(*) from jsonb_object_keys(u.consent) as k)
          = (select count(distinct lower(btrim(k))) from jsonb_object_keys(u.consent) as k)
      and (select count(*) from jsonb_object_keys(u.channels) as k)
          = (select count(distinct lower(btrim(k))) from jsonb_object_keys(u.channels) as k)
)
update users u set consent = f.consent, channels = f.channels
from folded f
where u.id = f.id;
