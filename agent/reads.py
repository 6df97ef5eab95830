"""The reads that start a batch's decision, as pending statements (tools/store/pending.py): the
users' context for `load_context` — user rows, profiles, recent and scheduled sends (caps),
unsubscribes, per-user arm evidence — sent together, read when the node needs them. In a
chunked batch the run's pipeline sends them for the next chunk while this one is decided
(agent/pipeline.py); otherwise `load_context` sends and reads them at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tagloop.agent.state import UserContext
from tagloop.tools.interests import parse_interests
from tagloop.tools.profiles import Profile, request_profiles
from tagloop.tools.store import runs
from tagloop.tools.store.pending import Pending, request

SENDS_WINDOW = timedelta(days=8)  # caps look back a week; a day more for time zones
ARMS_WINDOW = timedelta(days=90)


@dataclass(frozen=True)
class PendingUsers:
    user_ids: tuple[str, ...]
    rows: Pending[list[dict[str, Any]]]
    profiles: Pending[dict[str, Profile]]
    sends: Pending[dict[str, dict[str, list[datetime]]]]
    unsubscribed: Pending[dict[str, dict[str, datetime]]]
    arms: Pending[tuple[runs.ArmCounts, dict[str, runs.ArmCounts]]]

    def result(self) -> dict[str, UserContext]:
        """Known users only (unknown ids are left out), in the order the ids were given."""
        found = {r["id"]: r for r in self.rows.result()}
        profiles, sends = self.profiles.result(), self.sends.result()
        unsubscribed, (_, arms) = self.unsubscribed.result(), self.arms.result()
        return {
            u: UserContext(
                u,
                r["timezone"],
                r["locale"],
                r["channels"],
                r["consent"],
                profiles[u],
                sends=dict(sends.get(u, {})),
                unsubscribed=unsubscribed.get(u, {}),
                arms=arms[u],
                interests=parse_interests(r["interests"]),
            )
            for u in self.user_ids
            if (r := found.get(u)) is not None
        }


def request_users(
    conn: psycopg.Connection[Any],
    user_ids: list[str],
    now: datetime,
    tag_names: dict[int, str] | None = None,
) -> PendingUsers:
    """Send the users' context reads; `tag_names`: the run's cache of tag names (profiles)."""
    ids = list(dict.fromkeys(user_ids))
    return PendingUsers(
        tuple(ids),
        request(
            conn,
            "select id, timezone, locale, channels, consent, attributes -> 'interests' as interests"
            " from users where id = any(%(ids)s)",
            {"ids": ids},
            list,
        ),
        request_profiles(conn, ids, names=tag_names),
        runs.request_send_times(conn, ids, since=now - SENDS_WINDOW, include_pending=True),
        runs.request_unsubscribes(conn, ids),
        runs.request_arm_counts(conn, since=now - ARMS_WINDOW, user_ids=ids),
    )
