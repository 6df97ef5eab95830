"""What the user/item routes do, so routers stay thin: catalogue and user upserts (validated like
file imports), the events page, the profile view, recommendations with explanations, a manual
agent run under the user's run lock, and erasure. Each takes a connection from the caller."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from tagloop.agent.context import LOCAL_CHANNELS
from tagloop.agent.http import schemas
from tagloop.agent.http.problems import FieldErrors, PayloadTooLarge
from tagloop.agent.runshare import RunShare
from tagloop.agent.settings import Settings
from tagloop.policies.guards import consented
from tagloop.tools import interests, profile_folder, triggers
from tagloop.tools.errors import Conflict, NotFound
from tagloop.tools.ingest import loader
from tagloop.tools.ingest.records import FieldError, parse_item, parse_user
from tagloop.tools.profiles import Profile, load_profiles
from tagloop.tools.retrieval import POSITIVE, tag_candidates
from tagloop.tools.store import runs
from tagloop.tools.store import users as store
from tagloop.tools.tagging_names import display_tag
from tagloop.tools.wording import habit

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_RECORDS = 1000  # items or users in one POST (OpenAPI's maxItems), as events in one POST /v1/events


def _parse_many(payload: Any, parse: Callable[[dict[str, Any]], Any], *, path_id: str | None) -> list[Any]:
    """Validate an object (PUT, `path_id` set: the body's id must match or be absent) or an array
    of up to MAX_RECORDS (413 beyond, like a batch of events)."""
    single = path_id is not None
    batch = [payload] if single else payload
    if not isinstance(batch, list) or (single and not isinstance(payload, dict)):
        raise FieldErrors([("body", "must be an object" if single else "must be an array of objects")])
    if len(batch) > MAX_RECORDS:
        raise PayloadTooLarge(f"{len(batch):,} records in one request; the limit is {MAX_RECORDS:,}")
    records, errors = [], []
    for index, data in enumerate(batch):
        where = "" if single else f"[{index}]"
        if not isinstance(data, dict):
            errors.append((where or "body", f"must be an object, got {type(data).__name__}"))
            continue
        if single:
            given = data.get("id")  # a number is the id as text, as in POST and imports
            if given is not None and (isinstance(given, bool) or str(given) != path_id):
                errors.append(("id", f"does not match the path id {path_id!r}"))
                continue
            data = {**data, "id": path_id}
        try:
            records.append(parse(data))
        except FieldError as exc:
            errors.append((f"{where}.{exc.field}" if where else exc.field, exc.reason))
    if errors:
        raise FieldErrors(errors)
    return records


def put_items(conn: psycopg.Connection[Any], payload: Any, *, path_id: str | None = None) -> int:
    return loader.store_items(conn, _parse_many(payload, parse_item, path_id=path_id))


def put_users(conn: psycopg.Connection[Any], payload: Any, *, path_id: str | None = None) -> int:
    return loader.store_users(conn, _parse_many(payload, parse_user, path_id=path_id))


def events_page(
    conn: psycopg.Connection[Any], user_id: str, *, limit: int, before: datetime | None
) -> dict[str, Any]:
    if not store.user_exists(conn, user_id):
        raise NotFound(f"unknown user {user_id!r}")
    rows, next_before = store.list_events(conn, user_id, limit=limit, before=before)
    return {"events": rows, "next_before": next_before}


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {k: round(v / total, 4) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def profile_view(
    conn: psycopg.Connection[Any],
    user_id: str,
    *,
    fold: profile_folder.FoldOptions | None = None,
    configured: frozenset[str] = LOCAL_CHANNELS,
) -> schemas.Profile:
    """The profile as the user's committed events make it: with `fold`, events the profile folder
    has not reached yet are folded first (read-your-writes). `configured`: the channels this
    deployment delivers on (runner.configured_channels); a channel outside it is not reachable."""
    now = datetime.now(UTC)
    if fold is not None:
        profile_folder.fold_user(conn, user_id, fold, now=now)
    profiles = load_profiles(conn, [user_id], top=20)
    if user_id not in profiles:
        raise NotFound(f"unknown user {user_id!r}")
    p = profiles[user_id]
    stats: dict[str, Any] = p.stats or {}
    user = conn.execute(
        """select u.consent, u.channels, pr.updated_at from users u
           left join user_profiles pr on pr.user_id = u.id where u.id = %(id)s""",
        {"id": user_id},
    ).fetchone()
    outbox = conn.execute(
        """select channel, count(*) filter (where status = 'sent') as sent,
                  count(*) filter (where status in ('pending', 'sending')) as queued
           from messages where user_id = %(id)s group by channel""",
        {"id": user_id},
    ).fetchall()
    sent = {r["channel"]: r["sent"] for r in outbox}
    queued = {r["channel"]: r["queued"] for r in outbox}
    hist = list(stats.get("hour_of_week") or [0] * 168)
    total = sum(hist) or 1
    best = sorted(range(168), key=lambda s: -hist[s])[:3]
    engaged: dict[str, dict[str, int]] = stats.get("channels") or {}
    consent: dict[str, bool] = (user or {}).get("consent") or {}
    addresses: dict[str, Any] = (user or {}).get("channels") or {}
    names = sorted(set(consent) | set(engaged) | set(sent) | set(addresses))
    unsubscribed = runs.unsubscribes(conn, [user_id]).get(user_id, {})

    def blocked_at(channel: str) -> datetime | None:
        times = [t for key, t in unsubscribed.items() if key in ("*", channel)]
        return max(times) if times else None

    source_tags: dict[str, dict[str, float]] = stats.get("source_tags") or {}
    tag_names = _tag_names(conn, {int(t) for weights in source_tags.values() for t in weights})
    return schemas.Profile(
        user_id=user_id,
        n_events=p.n_events,
        updated_at=(user or {}).get("updated_at"),
        top_tags=[schemas.TagWeight(tag=t, weight=w) for t, w in p.top_tags],
        skip_rate=float(stats.get("skip_rate", 0.0)),
        replays=int(stats.get("replays", 0)),
        timing=schemas.Timing(
            timezone=p.timezone,
            hour_of_week=hist,
            best_hours=[f"{DAYS[s // 24]} {s % 24:02d}:00" for s in best if hist[s] > 0],
            weekday_share=round(sum(hist[: 5 * 24]) / total, 4) if sum(hist) else 0.0,
            weekend_share=round(sum(hist[5 * 24 :]) / total, 4) if sum(hist) else 0.0,
        ),
        channels=[
            schemas.ChannelPreference(
                channel=c,
                consent=consent.get(c) is True,
                sent=sent.get(c, 0),
                queued=queued.get(c, 0),
                engagement=engaged.get(c, {}),
                unsubscribed_at=blocked_at(c),
                configured=c in configured,
                reachable=c in configured
                and consented(consent, unsubscribed, c, now)
                and (c in addresses or c in LOCAL_CHANNELS),
            )
            for c in names
        ],
        devices=_shares(stats.get("devices") or {}),
        sources=_shares(stats.get("sources") or {}),
        regions=_shares(stats.get("regions") or {}),
        source_tags={
            s: [
                schemas.TagWeight(tag=tag_names[int(t)], weight=round(w, 3))
                for t, w in sorted(ws.items(), key=lambda kv: -kv[1])[:5]
                if int(t) in tag_names
            ]
            for s, ws in source_tags.items()
        },
    )


def _tag_names(conn: psycopg.Connection[Any], ids: set[int]) -> dict[int, str]:
    rows = conn.execute("select id, name from tags where id = any(%(ids)s)", {"ids": sorted(ids)})
    return {r["id"]: r["name"] for r in rows}


def recommendations(
    conn: psycopg.Connection[Any], user_id: str, k: int, *, fold: profile_folder.FoldOptions | None = None
) -> schemas.Recommendations:
    """The agent's candidates for the user, each explained by the user's top tags it carries (with
    `fold`, from the profile with every committed event folded in)."""
    if fold is not None:
        profile_folder.fold_user(conn, user_id, fold, now=datetime.now(UTC))
    profiles = load_profiles(conn, [user_id], top=30)
    if user_id not in profiles:
        raise NotFound(f"unknown user {user_id!r}")
    from tagloop.tools.recommender.serving import recommend  # the trained model, when there is one

    if (cf := recommend(conn, user_id, k, now=datetime.now(UTC))) is not None:
        return schemas.Recommendations(
            user_id=user_id,
            items=[
                schemas.Recommendation(
                    item_id=r.item_id,
                    title=r.title,
                    provider=r.provider,
                    score=round(r.score, 6),
                    explanation=r.reason,
                    cold=r.cold,
                )
                for r in cf
            ],
        )
    return schemas.Recommendations(user_id=user_id, items=_untrained(conn, user_id, k, profiles[user_id]))


# the most popular items the user has not met, by users with a positive event (no model yet)
_POPULAR_UNSEEN = """
select i.id, i.title, i.provider_id, i.kind, count(distinct e.user_id) as fans
from events e join items i on i.id = e.item_id
where e.type = any(%(positive)s)
  and not exists (select 1 from events s where s.user_id = %(user)s and s.item_id = e.item_id)
  and i.id <> all(%(taken)s) and i.kind <> 'message'
group by i.id, i.title, i.provider_id, i.kind
order by fans desc, i.id
limit %(k)s
"""


# the kind (the words of a reason) and the confident tags, heaviest first, of the items a reason names
_KINDS_AND_TAGS = """
select i.id, i.kind,
       array(select t.name from item_tags it join tags t on t.id = it.tag_id
             where it.item_id = i.id and it.confidence >= 0.5 order by it.weight desc, t.name) as tags
from items i where i.id = any(%(ids)s)
"""


def _declared(conn: psycopg.Connection[Any], user_id: str, k: int) -> list[schemas.Recommendation]:
    """Before any training, for a user whose events give no tag yet: the unseen items carrying
    their declared interests (`attributes.interests`), "because you like X"."""
    wanted = interests.interests_of(conn, [user_id])
    return [
        schemas.Recommendation(
            item_id=item,
            title=title,
            provider=provider,
            score=round(score, 6),
            explanation=f"because you like {' and '.join(display_tag(t) for t in shared[:2])}",
            cold=False,
        )
        for item, title, provider, score, shared in interests.declared_items(conn, wanted, k).get(user_id, [])
    ]


def _untrained(
    conn: psycopg.Connection[Any], user_id: str, k: int, profile: Profile
) -> list[schemas.Recommendation]:
    """Before any `tagloop train`: the items sharing the user's liked tags (tag search), each
    explained by the user's strongest tags it carries (a user whose events give none: the items
    carrying their declared interests), then the most popular unseen items."""
    liked = dict(profile.top_tags)
    candidates = tag_candidates(conn, [user_id], k, declared=False)[user_id]  # interests: below
    facts = {
        r["id"]: (r["kind"], r["tags"])
        for r in conn.execute(_KINDS_AND_TAGS, {"ids": [c.item_id for c in candidates]})
    }
    out = []
    for c in candidates:
        kind, tags = facts.get(c.item_id, (None, []))
        words = habit(kind)
        shared = sorted((t for t in tags if liked.get(t, 0) > 0), key=lambda t: -liked[t])[:2]
        if not shared:  # a tag outside the user's top ones: still a match, named generally
            because = f"because it shares tags with {words.what}"
        else:
            because = f"because {words.often} {' and '.join(display_tag(t) for t in shared)}"
        out.append(
            schemas.Recommendation(
                item_id=c.item_id,
                title=c.title,
                provider=c.provider,
                score=round(c.score, 6),
                explanation=because,
                cold=False,
            )
        )
    if not out and not profile.top_tags:
        out = _declared(conn, user_id, k)
    if len(out) < k:
        params = {
            "positive": POSITIVE,
            "user": user_id,
            "taken": [r.item_id for r in out],
            "k": k - len(out),
        }
        for r in conn.execute(_POPULAR_UNSEEN, params):
            out.append(
                schemas.Recommendation(
                    item_id=r["id"],
                    title=r["title"],
                    provider=r["provider_id"],
                    score=0.0,
                    explanation=habit(r["kind"]).popular,
                    cold=False,
                )
            )
    return out


def run_options(payload: Any) -> bool:
    """`send_now` of a run request's body (schemas.RunRequest), its types strict: `"yes"` or `1`
    is not a yes."""
    if not isinstance(payload, dict):
        raise FieldErrors([("body", f"must be an object, got {type(payload).__name__}")])
    errors = [
        (key, "is not a field of a run request (known: send_now)") for key in payload if key != "send_now"
    ]
    send_now = payload.get("send_now", False)
    if not isinstance(send_now, bool):
        errors.append(("send_now", f"must be true or false, got {_json_type(send_now)}"))
    if errors:
        raise FieldErrors(errors)
    return bool(send_now)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def run_now(
    conn: psycopg.Connection[Any],
    settings: Settings,
    user_id: str,
    *,
    send_now: bool,
    fold: profile_folder.FoldOptions | None = None,
    share: RunShare | None = None,
) -> schemas.RunDecision:
    """Run the agent for one user under the user's run lock (409 while another run holds it), on
    the profile with every committed event folded in (with `fold`); `share`: the app's run facts
    and trending ranking (agent/runshare.py)."""
    from tagloop.agent.runner import run_users  # the graph is built on first use, not at app import

    if not store.user_exists(conn, user_id):
        raise NotFound(f"unknown user {user_id!r}")
    if fold is not None:
        try:
            profile_folder.fold_user(conn, user_id, fold, now=datetime.now(UTC))
        except psycopg.errors.ForeignKeyViolation:  # erased since `user_exists`
            conn.rollback()
            raise NotFound(f"unknown user {user_id!r}") from None
    conn.commit()
    with triggers.run_lock(conn, user_id) as got:
        if not got:
            raise Conflict(f"a run for user {user_id!r} is already in progress; try again shortly")
        outcomes = run_users(conn, settings, [user_id], trigger="manual", send_now=send_now, share=share)
        conn.commit()
    if not outcomes:
        raise NotFound(f"unknown user {user_id!r}")
    o = outcomes[0]
    name, _, version = o.policy.partition("@")
    return schemas.RunDecision(
        user_id=o.user_id,
        decision_id=o.decision_id,
        outcome=o.outcome,
        channel=o.channel,
        chosen=[
            schemas.ChosenItem(
                item_id=str(c["item_id"]), title=str(c.get("title") or ""), score=float(c.get("score") or 0.0)
            )
            for c in o.chosen
        ],
        propensities=o.propensities,
        send_at=datetime.fromisoformat(o.send_at) if o.send_at else None,
        policy=name,
        policy_version=version,
        explanation=o.explanation or o.reason,  # why no message, when there is none
        title=o.title,
        message_id=o.message_id,
        delivered=o.delivered,
        delivery=o.delivery,
        delivery_error=o.delivery_error,
        held_back=o.held_back,
    )


def erase(conn: psycopg.Connection[Any], user_id: str) -> schemas.Erased:
    deleted = store.erase_user(conn, user_id)
    if not deleted.get("users"):
        raise NotFound(f"unknown user {user_id!r}")
    return schemas.Erased(user_id=user_id, deleted=deleted)
