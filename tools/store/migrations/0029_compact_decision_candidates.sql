-- Decisions log their candidate set as parallel arrays instead of a JSON list of objects (about a
-- tenth of the bytes, no JSON to build or parse): candidate_ids[i] with candidate_scores[i],
-- candidate_providers[i] and candidate_sources[i] — a bit mask over source_names (bit j set when
-- source_names[j+1] proposed it). Older rows keep `candidates` jsonb; the export reads either.
alter table decisions alter column candidates drop not null;
alter table decisions add column if not exists candidate_ids text[];
alter table decisions add column if not exists candidate_scores double precision[];
alter table decisions add column if not exists candidate_providers text[];
alter table decisions add column if not exists candidate_sources smallint[];
alter table decisions add column if not exists source_names text[];
