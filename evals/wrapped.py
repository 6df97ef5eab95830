"""A "Wrapped"-style summary of one user from the store (`tagloop report user ID`).

As of `at` (default now), over the last `window` days:
- top tags now and `window` days ago — the tag profile recomputed from the user's events at both
  instants with the profile weights of `tools.profiles` (decay half-life from settings; skips
  counted at the uncalibrated −0.5);
- how the profile moved: cosine similarity of the two tag vectors, the tags that rose and fell most
  (in shares of the whole profile), tags that are new;
- discoveries: providers the user first met in the window (first event ever), with the first item;
- the listening clock: events per hour of the day in the user's own time zone (a PNG);
- tagloop's messages in the window: sent and engaged (opened/clicked).
The decay stops at `MAX_HALF_LIVES` half-lives so a far-away `at` cannot underflow in SQL.
Read-only; `write_wrapped` renders it as markdown + HTML with the clock PNG (evals/report.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from tagloop.evals.report import Report, new_figure
from tagloop.tools.errors import InvalidInput, NotFound
from tagloop.tools.patterns import POSITIVE
from tagloop.tools.profiles import EVENT_WEIGHTS

_TAGS_AT = """
select t.name,
       sum(case when e.type = 'play' then ln(1 + greatest(coalesce(e.value, 1), 0))
                else coalesce((%(weights)s::jsonb ->> e.type)::float8, 0) end
           * power(0.5, least(greatest(extract(epoch from (%(at)s - e.ts)), 0) / %(hl)s, %(max_hl)s))
           * it.weight) as w
from events e
join item_tags it on it.item_id = e.item_id and it.confidence >= 0.5
join tags t on t.id = it.tag_id
where e.user_id = %(user)s and e.ts <= %(at)s
group by t.name
"""

# Decay stops at this many half-lives (0.5^600 ≈ 2e-181): PostgreSQL raises "value out of range:
# underflow" where a float8 power or product rounds to 0 (an event ~90 years before --at with a
# 30-day half-life); events older than that all weigh the same negligible amount.
MAX_HALF_LIVES = 600.0

_DISCOVERIES = """
select provider_id, first_at, item_id, title from (
    select i.provider_id, e.ts as first_at, i.id as item_id, i.title,
           row_number() over (partition by i.provider_id order by e.ts, i.id) as r
    from events e join items i on i.id = e.item_id
    where e.user_id = %(user)s and e.ts <= %(at)s and i.provider_id is not null
      and e.type = any(%(pos)s)  -- a provider only skipped or shown was not discovered
) x
where r = 1 and first_at > %(since)s
order by first_at, provider_id
"""

_CLOCK = """
select extract(hour from e.ts at time zone u.timezone)::int as hour, count(*) as n
from events e join users u on u.id = e.user_id
where e.user_id = %(user)s and e.ts > %(since)s and e.ts <= %(at)s and e.type = any(%(pos)s)
group by 1
"""

_MESSAGES = """
select count(*) as sent,
       count(*) filter (where exists (select 1 from events e
                                      where e.message_id = m.id::text and e.user_id = m.user_id
                                        and e.type in ('open', 'click'))) as engaged
from messages m
where m.user_id = %(user)s and m.status = 'sent' and m.sent_at > %(since)s and m.sent_at <= %(at)s
"""


@dataclass
class Wrapped:
    user_id: str
    timezone: str
    at: datetime
    window_days: int
    tags_now: list[tuple[str, float]]
    tags_before: list[tuple[str, float]]
    similarity: float | None
    rising: list[tuple[str, float]]
    falling: list[tuple[str, float]]
    new_tags: list[str]
    discoveries: list[dict[str, Any]]
    clock: list[int] = field(default_factory=lambda: [0] * 24)
    messages_sent: int = 0
    messages_engaged: int = 0
    # each of `tags_now`'s weight `window_days` ago (0.0: none), in or out of that day's top 10
    before_of_now: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["at"] = self.at.isoformat()
        return json.loads(json.dumps(data, default=str))


def _tag_weights(conn: psycopg.Connection[Any], user: str, at: datetime, hl: float) -> dict[str, float]:
    params = {
        "user": user,
        "at": at,
        "hl": hl * 86400.0,
        "max_hl": MAX_HALF_LIVES,
        "weights": json.dumps(EVENT_WEIGHTS),
    }
    return {r["name"]: float(r["w"]) for r in conn.execute(_TAGS_AT, params) if r["w"] and r["w"] > 0}


def _top(weights: dict[str, float], n: int) -> list[tuple[str, float]]:
    return [(t, round(w, 3)) for t, w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()} if total > 0 else {}


def build_wrapped(
    conn: psycopg.Connection[Any], user_id: str, *, at: datetime, half_life_days: float, window_days: int = 30
) -> Wrapped:
    """Everything the page shows (module docstring); unknown user → NotFound."""
    row = conn.execute("select id, timezone from users where id = %(u)s", {"u": user_id}).fetchone()
    if row is None:
        raise NotFound(f"unknown user {user_id!r} (import it first: tagloop import users FILE)")
    since = at - timedelta(days=window_days)
    now_w = _tag_weights(conn, user_id, at, half_life_days)
    before_w = _tag_weights(conn, user_id, since, half_life_days)
    now_s, before_s = _shares(now_w), _shares(before_w)
    tags = sorted(set(now_s) | set(before_s))
    delta = {t: now_s.get(t, 0.0) - before_s.get(t, 0.0) for t in tags}
    similarity = None
    if now_s and before_s:  # cosine of the shares: the same as of the weights, but never 0/0 when
        # the weights are tiny (a far-away `at`: their squares underflow)
        dot = sum(now_s.get(t, 0.0) * before_s.get(t, 0.0) for t in tags)
        norm = math.sqrt(sum(v * v for v in now_s.values()) * sum(v * v for v in before_s.values()))
        similarity = round(dot / norm, 4) if norm > 0 else None
    params = {"user": user_id, "at": at, "since": since, "pos": POSITIVE}
    clock = [0] * 24
    for r in conn.execute(_CLOCK, params):
        clock[int(r["hour"])] = int(r["n"])
    discoveries = [
        {
            "provider": r["provider_id"],
            "first_at": r["first_at"].isoformat(),
            "item_id": r["item_id"],
            "title": r["title"],
        }
        for r in conn.execute(_DISCOVERIES, params)
    ]
    msgs = conn.execute(_MESSAGES, params).fetchone() or {"sent": 0, "engaged": 0}
    ranked = sorted(delta.items(), key=lambda kv: (-kv[1], kv[0]))
    return Wrapped(
        user_id=user_id,
        timezone=row["timezone"],
        at=at,
        window_days=window_days,
        tags_now=_top(now_w, 10),
        tags_before=_top(before_w, 10),
        before_of_now={t: round(before_w.get(t, 0.0), 3) for t, _ in _top(now_w, 10)},
        similarity=similarity,
        rising=[(t, round(d, 4)) for t, d in ranked[:5] if d > 0],
        falling=[(t, round(d, 4)) for t, d in reversed(ranked[-5:]) if d < 0],
        new_tags=[t for t, _ in _top({t: now_w[t] for t in now_w if t not in before_w}, 10)],
        discoveries=discoveries,
        clock=clock,
        messages_sent=int(msgs["sent"]),
        messages_engaged=int(msgs["engaged"]),
    )


def write_wrapped(w: Wrapped, directory: Path) -> Path:
    """DIR/index.md (+ .html) and DIR/clock.png; returns the markdown path (InvalidInput when the
    directory cannot be written)."""
    try:
        return _write(w, directory)
    except OSError as exc:
        raise InvalidInput(f"cannot write the page under {directory}: {exc.strerror or exc}") from None


def _write(w: Wrapped, directory: Path) -> Path:
    report = Report(directory, title=f"Wrapped: user {w.user_id}, {w.window_days} days to {w.at:%Y-%m-%d}")
    report.add_heading("Top tags")
    before = w.before_of_now  # the earlier top 10 alone left tags just outside it blank
    rows: list[dict[str, str | float | None]] = [
        {"rank": i + 1, "tag now": t, "weight": v, f"weight {w.window_days} days ago": before.get(t)}
        for i, (t, v) in enumerate(w.tags_now)
    ]
    if rows:
        report.add_table(rows)
    else:
        report.add_text("No tagged listening yet.")
    report.add_heading("How the profile moved")
    moved = [
        f"Similarity to {w.window_days} days ago: {w.similarity if w.similarity is not None else 'n/a'}."
    ]
    if w.rising:
        moved.append("Rising: " + ", ".join(f"{t} (+{d:.1%})" for t, d in w.rising) + ".")
    if w.falling:
        moved.append("Falling: " + ", ".join(f"{t} ({d:.1%})" for t, d in w.falling) + ".")
    if w.new_tags:
        moved.append("New: " + ", ".join(w.new_tags) + ".")
    report.add_text("\n\n".join(moved))
    report.add_heading("Discoveries")
    if w.discoveries:
        report.add_table(
            [
                {"provider": d["provider"], "first item": d["title"], "first heard": d["first_at"][:10]}
                for d in w.discoveries[:20]
            ]
        )
        report.add_text(
            f"{len(w.discoveries)} provider(s) new to this user in the last {w.window_days} days."
        )
    else:
        report.add_text(f"No new providers in the last {w.window_days} days.")
    report.add_heading("Listening clock")
    fig = new_figure(7.0, 3.5)
    ax = fig.axes[0]
    ax.bar(np.arange(24), w.clock, color="tab:purple")
    ax.set_xticks(np.arange(0, 24, 3))
    ax.set_xlabel(f"hour of day ({w.timezone})")
    ax.set_ylabel("events")
    ax.set_title(f"When user {w.user_id} listens (last {w.window_days} days)")
    report.add_figure(fig, "clock", f"Events per local hour in {w.timezone}.")
    report.add_heading("Messages from tagloop")
    report.add_text(
        f"{w.messages_sent} sent, {w.messages_engaged} opened or clicked in the last {w.window_days} days."
    )
    return report.write()
