-- Users whose time zone is CET, EET, MET or WET: PostgreSQL's `at time zone` reads these as fixed
-- abbreviations (CET is +01:00 all year) where Python's zoneinfo reads zones with summer time, so
-- SQL-built hour-of-week histograms put summer activity an hour early. Ingest now stores the IANA
-- zones they link to (tools/ingest/fields.py PG_ABBREVIATIONS); this rewrites stored users alike.
update users
set timezone = case timezone
                   when 'CET' then 'Europe/Brussels'
                   when 'MET' then 'Europe/Brussels'
                   when 'EET' then 'Europe/Athens'
                   when 'WET' then 'Europe/Lisbon'
               end
where timezone in ('CET', 'EET', 'MET', 'WET');
