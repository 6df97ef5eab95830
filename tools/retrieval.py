"""Candidate retrieval in SQL, and what a batch's sources share about its users.

`tag_candidates`: items ranked by the inner product between the user's tag profile and each item's
tag vector (pgvector HNSW; `TAGLOOP_TAG_SEARCH=exact` scans in the process instead,
tools/tag_exact.py), excluding what the user has already interacted with. One statement
serves a whole batch of users (a LATERAL join), so the agent makes one round trip per batch, not
per user — the only per-user retrieval query of a decision besides `cf`. Two ways to exclude:
- without the caller's seen sets: on the server (the user's items read once as an array rather
  than one index probe per scanned item, an HNSW iterative scan past them);
- with them (the agent has them in the batch's `BatchHistory`): the top k + max(k/2, 8), no filter,
  the seen ones dropped in Python, and only the users left short of k (their seen items crowd
  their top, or the approximate search returned fewer rows than asked) asked again with the server
  filter. The filter (`<> all(seen)`, linear in the
  user's ~100+ items per scanned item) was half the query's server time (0.22 → 0.11 ms per user
  on the 10,000-user demo data; bench/agent.py).

`CandidateLog`: the candidate set a decision logs, as parallel arrays (tools/store/decisions.py).

`load_history`: one statement per batch giving every user's seen items, most played providers
(precomputed in `user_top_providers`, tools/neighbors.py) and latest strong items; the sources
that work from precomputed or per-run tables (trending, new_from_providers, co_likes) filter and
rank in Python from it instead of walking events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row

from tagloop.tools import interests
from tagloop.tools.store.pending import Pending, request

POSITIVE = ["play", "complete", "like", "save", "add_to_playlist", "share", "click", "convert"]

# the rows of a candidate lateral `c` (which follows) for each user of the batch with a profile,
# with the items the user interacted with (`seen`, read once per user)
_SELECT_WITH_SEEN = """
select q.user_id, c.id as item_id, c.title, c.provider_id, -c.neg_ip as score
from unnest(%(users)s::text[]) as q(user_id)
join user_profiles p on p.user_id = q.user_id and p.tags is not null
cross join lateral (
    select coalesce(array_agg(e.item_id), '{}') as items from events e
    where e.user_id = q.user_id and e.item_id is not null
) seen
"""
_TAG_CANDIDATES = (
    _SELECT_WITH_SEEN
    + """cross join lateral (
    select i.id, i.title, i.provider_id, i.tag_vec <#> p.tags as neg_ip
    from items i
    where i.tag_vec is not null and i.id <> all(seen.items) and i.kind <> 'message'
    order by i.tag_vec <#> p.tags
    limit %(k)s
) c
order by q.user_id, c.neg_ip, c.id
"""
)
_TAG_TOP = """
select q.user_id, c.id as item_id, c.title, c.provider_id, -c.neg_ip as score
from unnest(%(users)s::text[]) as q(user_id)
join user_profiles p on p.user_id = q.user_id and p.tags is not null
cross join lateral (
    select i.id, i.title, i.provider_id, i.tag_vec <#> p.tags as neg_ip
    from items i
    where i.tag_vec is not null and i.kind <> 'message'
    order by i.tag_vec <#> p.tags
    limit %(k)s
) c
"""

# Exact: the items carrying one of the user's positively weighted tags (item_tags' tag index; the
# same confident rows the tag vectors are built from), ranked by the inner product. sparsevec text
# is 1-based: index - 1 is the tag id. For the users the HNSW search left on its zero plateau.
_TAG_EXACT = (
    _SELECT_WITH_SEEN
    + r"""cross join lateral (
    select coalesce(array_agg(m[1]::int - 1), '{}') as ids
    from regexp_matches(p.tags::text, '(\d+):([^,}]+)', 'g') as m
    where m[2]::float8 > 0
) liked
cross join lateral (
    select x.id, x.title, x.provider_id, x.neg_ip from (
        select i.id, i.title, i.provider_id, i.tag_vec <#> p.tags as neg_ip
        from items i
        where i.id in (
                select it.item_id from item_tags it where it.tag_id = any(liked.ids) and it.confidence >= 0.5
            )
          and i.tag_vec is not null and i.id <> all(seen.items) and i.kind <> 'message'
        offset 0  -- a fence: ordered outside it, the HNSW index cannot serve (and cut) the order
    ) x
    order by x.neg_ip, x.id
    limit %(k)s
) c
where c.neg_ip < 0
order by q.user_id, c.neg_ip, c.id
"""
)


class Candidate(NamedTuple):
    item_id: str
    title: str
    provider: str | None
    score: float
    source: str


@dataclass
class CandidateLog:
    """The candidate set a decision chose from, as parallel arrays; `sources[i]` has bit j set when
    `source_names[j]` proposed candidate i."""

    item_ids: list[str]
    scores: list[float]
    providers: list[str | None]
    sources: list[int]
    source_names: list[str]

    @classmethod
    def of(cls, rows: Sequence[tuple[str, float, str | None, str]], names: Sequence[str]) -> CandidateLog:
        """From (item_id, score, provider, "source+source") rows (names not listed are appended)."""
        ids, scores, providers, sources = (
            (list(col) for col in zip(*rows, strict=True)) if rows else ([], [], [], [])
        )
        return cls._with_masks(ids, scores, providers, sources, names)

    @classmethod
    def of_candidates(cls, candidates: Sequence[Candidate], names: Sequence[str]) -> CandidateLog:
        """The same from the candidates themselves (columns taken with one transpose)."""
        if not candidates:
            return cls([], [], [], [], list(names))
        ids, _, providers, scores, sources = zip(*candidates, strict=True)
        return cls._with_masks(list(ids), list(scores), list(providers), sources, names)

    @classmethod
    def _with_masks(
        cls,
        ids: list[str],
        scores: list[float],
        providers: list[str | None],
        sources: Sequence[str],
        names: Sequence[str],
    ) -> CandidateLog:
        known = list(names)
        bit = {n: 1 << j for j, n in enumerate(known)}
        mask_of: dict[str, int] = {}  # per distinct "source+source" string
        for source in dict.fromkeys(sources):
            mask = 0
            for name in filter(None, source.split("+")):
                if name not in bit:
                    bit[name] = 1 << len(known)
                    known.append(name)
                mask |= bit[name]
            mask_of[source] = mask
        return cls(ids, scores, providers, [mask_of[s] for s in sources], known)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> CandidateLog:
        rows = [(r["item_id"], r["score"], r.get("provider"), r.get("source") or "") for r in records]
        return cls.of(rows, [])

    def records(self) -> list[dict[str, Any]]:
        """The export's `[{item_id, score, source, provider}]`."""
        rows = zip(self.item_ids, self.scores, self.sources, self.providers, strict=True)
        names = self.source_names
        join = "+".join
        return [
            {"item_id": i, "score": s, "source": join(n for j, n in enumerate(names) if m >> j & 1),
             "provider": p}
            for i, s, m, p in rows
        ]  # fmt: skip


@dataclass(frozen=True)
class SentTagTop:
    """The unfiltered top `wide` of `tag_candidates` for `user_ids`, sent and not yet read (in
    pipeline mode the server works on it while the client goes on; agent/pipeline.py)."""

    user_ids: frozenset[str]
    k: int
    cursor: psycopg.Cursor[Any]

    def rows(self, user_ids: Sequence[str]) -> list[Any]:
        rows = self.cursor.fetchall()
        wanted = set(user_ids)
        return rows if wanted == self.user_ids else [r for r in rows if r[0] in wanted]


def send_tag_top(conn: psycopg.Connection[Any], user_ids: list[str], k: int) -> SentTagTop:
    """Send the unfiltered top read of `tag_candidates(conn, user_ids, k, seen)` without waiting
    for its rows. Its hnsw settings are transaction-local, as `_tag_rows` leaves them."""
    wide = wide_k(k)
    conn.execute(HNSW_SETTINGS, {"scan": "off", "ef": str(max(wide, 40))})
    cur = conn.cursor(row_factory=tuple_row, binary=True)
    cur.execute(_TAG_TOP, {"users": user_ids, "k": wide})
    return SentTagTop(frozenset(user_ids), k, cur)


def tag_candidates(
    conn: psycopg.Connection[Any],
    user_ids: list[str],
    k: int,
    seen: Mapping[str, frozenset[str]] | None = None,
    sent: SentTagTop | None = None,
    *,
    declared: bool = True,
) -> dict[str, list[Candidate]]:
    """Top-`k` unseen items per user by tag-profile similarity; a user it finds none for (no profile
    yet, or no unseen match) is given the unseen items carrying their declared interests, if any
    (unless `declared` is false).
    `seen`: every user's interacted items when the caller has them (then filtered here, see the
    module docstring); None to filter on the server. `sent`: the unfiltered read already sent for
    these users (`send_tag_top`), used when it covers them with the same k."""
    out: dict[str, list[Candidate]] = {u: [] for u in user_ids}
    if seen is None:
        plateau = _fill(out, _tag_rows(conn, _TAG_CANDIDATES, user_ids, k, "relaxed_order"), k, None)
    else:
        wide = wide_k(k)
        if sent is not None and sent.k == k and sent.user_ids.issuperset(user_ids):
            rows = sent.rows(user_ids)
        else:
            rows = _tag_rows(conn, _TAG_TOP, user_ids, wide, "off")  # unfiltered: rows in score order
        returned = Counter(map(itemgetter(0), rows))  # rows per user, counted in C
        plateau = _fill(out, rows, k, seen)
        # short of k once the seen items are dropped: asked again with the server filter, whether
        # their seen items crowded the wide top or the (approximate) search returned fewer rows
        # than asked; a user without a profile, for whom it returned none, is not
        short = [u for u in user_ids if len(out[u]) < k and returned[u] and u not in plateau]
        if short:
            for u in short:
                out[u] = []
            plateau |= _fill(out, _tag_rows(conn, _TAG_CANDIDATES, short, k, "relaxed_order"), k, None)
    exact = [u for u in user_ids if u in plateau and len(out[u]) < k]
    if exact:  # the graph search stopped among items sharing no tag: find the matches exactly
        for u in exact:
            out[u] = []
        _fill(out, _tag_rows(conn, _TAG_EXACT, exact, k, "off"), k, None)
    bare = [u for u in user_ids if not out[u]] if declared else []
    if bare and (wanted := interests.interests_of(conn, bare)):  # no tag from events: their interests
        for user, items in interests.declared_items(conn, wanted, k).items():
            out[user] = [Candidate(i, title, who, score, "tags") for i, title, who, score, _ in items]
    # equal scores by item id, as the SQL orders them: the HNSW search returns ties in the order of
    # its graph, which differs from one index build to the next (pgvector's levels are random)
    for candidates in out.values():
        candidates.sort(key=_best_first)
    return out


def _best_first(c: Candidate) -> tuple[float, str]:
    return (-c.score, c.item_id)


def wide_k(k: int) -> int:
    """How many to ask an unfiltered search for when the seen items are dropped afterwards."""
    return k + max(k // 2, 8)


HNSW_SETTINGS = (
    "select set_config('hnsw.iterative_scan', %(scan)s, true), set_config('hnsw.ef_search', %(ef)s, true)"
)


def _tag_rows(conn: psycopg.Connection[Any], query: str, user_ids: list[str], k: int, scan: str) -> list[Any]:
    with conn.transaction():
        conn.execute(HNSW_SETTINGS, {"scan": scan, "ef": str(max(k, 40))})
        with conn.cursor(row_factory=tuple_row, binary=True) as cur:  # binary: ~15% cheaper to read
            return cur.execute(query, {"users": user_ids, "k": k}).fetchall()


def _fill(
    out: dict[str, list[Candidate]], rows: list[Any], k: int, seen: Mapping[str, frozenset[str]] | None
) -> set[str]:
    """Add each user's unseen rows with a positive score (an item sharing none of the user's liked
    tags is no tag match) up to k; returns the users with a row scored ≤ 0: their HNSW search
    reached the plateau of items sharing no tag, where it may have missed the few that do."""
    new = tuple.__new__
    plateau = set()
    for user, item, title, provider, score in rows:
        if score <= 0:
            plateau.add(user)
            continue
        found = out[user]
        if len(found) < k and (seen is None or item not in seen[user]):
            found.append(new(Candidate, (item, title, provider, score, "tags")))
    return plateau


# The strong types are written out as in migration 0026's partial index, which they must match.
_HISTORY = """
select u.user_id, h.seen, coalesce(p.providers, '{}') as providers, coalesce(p.counts, '{}') as counts,
       s.seeds
from unnest(%(users)s::text[]) as u(user_id)
left join user_top_providers p on p.user_id = u.user_id
cross join lateral (
    select coalesce(array_agg(e.item_id), '{}') as seen from events e
    where e.user_id = u.user_id and e.item_id is not null
) h
cross join lateral (
    select coalesce(array_agg(t.item_id order by t.ts desc), '{}') as seeds from (
        select e.item_id, e.ts from events e
        where e.user_id = u.user_id and e.ts <= %(now)s and e.item_id is not null
          and e.type in ('like', 'save', 'add_to_playlist', 'share', 'complete', 'convert')
        order by e.ts desc
        limit %(seeds)s
    ) t
) s
"""


@dataclass(frozen=True)
class BatchHistory:
    """Per user of a batch: the items they interacted with, their most played providers (provider,
    positive events) and their latest strong items (newest first) as of the run clock."""

    seen: dict[str, frozenset[str]]
    providers: dict[str, list[tuple[str, int]]]
    seeds: dict[str, list[str]]

    @property
    def user_ids(self) -> list[str]:
        return list(self.seen)

    def restricted(self, user_ids: list[str]) -> BatchHistory:
        """The same for `user_ids` only (each of them must be in this history)."""
        if len(user_ids) == len(self.seen):
            return self
        return BatchHistory(
            {u: self.seen[u] for u in user_ids},
            {u: self.providers[u] for u in user_ids},
            {u: self.seeds[u] for u in user_ids},
        )


def load_history(
    conn: psycopg.Connection[Any], user_ids: list[str], now: datetime, *, providers: int = 5, seeds: int = 5
) -> BatchHistory:
    """One statement for the batch (users without events get empty entries)."""
    return request_history(conn, user_ids, now, providers=providers, seeds=seeds).result()


def request_history(
    conn: psycopg.Connection[Any], user_ids: list[str], now: datetime, *, providers: int = 5, seeds: int = 5
) -> Pending[BatchHistory]:
    """`load_history`, sent now and read later (tools/store/pending.py)."""

    def parse(rows: list[Any]) -> BatchHistory:
        seen: dict[str, frozenset[str]] = {u: frozenset() for u in user_ids}
        top: dict[str, list[tuple[str, int]]] = {u: [] for u in user_ids}
        latest: dict[str, list[str]] = {u: [] for u in user_ids}
        for user, items, provs, counts, strong in rows:
            seen[user] = frozenset(items)
            top[user] = list(zip(provs[:providers], counts, strict=False))
            latest[user] = strong
        return BatchHistory(seen, top, latest)

    return request(conn, _HISTORY, {"users": user_ids, "now": now, "seeds": seeds}, parse, tuples=True)


class FromHistory:
    """Base of the sources that rank from the batch's `BatchHistory` (candidates.HistorySource):
    the graph hands them one shared history through `fetch_for`; `fetch` loads it for them."""

    def fetch_for(
        self, conn: psycopg.Connection[Any], history: BatchHistory, k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        raise NotImplementedError

    def fetch(
        self, conn: psycopg.Connection[Any], user_ids: list[str], k: int, now: datetime
    ) -> dict[str, list[Candidate]]:
        return self.fetch_for(conn, load_history(conn, user_ids, now), k, now)
