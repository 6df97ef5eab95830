"""Items and users into PostgreSQL: COPY into a staging table, insert the new ids, then merge the
rest into what is stored (records.py: a field a record does not give keeps its stored value; lines
repeating an id are merged in file order). Used by imports (loader.py) and the HTTP API alike."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from tagloop.tools.ingest import records as rec
from tagloop.tools.store import catalogue

R = TypeVar("R", rec.ItemRecord, rec.UserRecord)


def by_id(records: Iterable[R], merge: Callable[[R, R], R]) -> dict[str, R]:
    """One record per id, in first-seen order: lines repeating an id merged in file order
    (`merge(earlier, later)`: records.merged_item / merged_user)."""
    out: dict[str, R] = {}
    for r in records:
        out[r.id] = merge(out[r.id], r) if r.id in out else r
    return out


def _stage(cur: psycopg.Cursor[Any], table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
    """A temporary table `table` (`columns`: its SQL column list) holding `rows`, dropped at commit."""
    name = sql.Identifier(table)
    cur.execute(sql.SQL("create temp table {} ({}) on commit drop").format(name, sql.SQL(columns)))
    with cur.copy(sql.SQL("copy {} from stdin").format(name)) as copy:
        for row in rows:
            copy.write_row(row)


def store_items(conn: psycopg.Connection[Any], items: Sequence[rec.ItemRecord]) -> int:
    """Upsert items, merging: a new item gets the record (title '', kind 'track', created_at now
    when absent); a stored one keeps every field the record does not give (`ItemRecord`), so a
    file of `id,tags` retags items without touching their titles, and created_at never moves unless
    given. Lines repeating an id are merged in file order. Returns the items written."""
    if not items:
        return 0
    items = list(by_id(items, rec.merged_item).values())
    catalogue.upsert_providers(conn, {i.provider for i in items if i.provider})
    with conn.cursor() as cur:
        _stage(
            cur,
            "stage_items",
            """id text, title text, kind text, provider_id text, text text, created_at timestamptz,
               attributes jsonb, given text[]""",
            (
                (
                    i.id,
                    i.title,
                    i.kind,
                    i.provider,
                    i.text,
                    i.created_at,
                    json.dumps(i.attributes),
                    sorted(i.given),
                )
                for i in items
            ),
        )
        # new ids inserted (and dropped from the stage) first, then the stored ones merged: a row
        # a concurrent writer inserts meanwhile is seen by the update, a later statement
        cur.execute(
            """with fresh as (
                   insert into items (id, title, kind, provider_id, text, created_at, attributes)
                   select id, coalesce(title, ''), coalesce(kind, 'track'), provider_id, text,
                          coalesce(created_at, now()), attributes
                   from stage_items
                   on conflict (id) do nothing
                   returning id)
               delete from stage_items s using fresh where s.id = fresh.id"""
        )
        cur.execute(
            """update items i set
                   title = coalesce(s.title, i.title),
                   kind = coalesce(s.kind, i.kind),
                   provider_id = case when 'provider' = any(s.given) then s.provider_id
                                      else i.provider_id end,
                   text = case when 'text' = any(s.given) then s.text else i.text end,
                   created_at = coalesce(s.created_at, i.created_at),
                   attributes = case when 'attributes' = any(s.given) then s.attributes
                                     else i.attributes || s.attributes end,
                   updated_at = now()
               from stage_items s
               where s.id = i.id"""
        )
    retagged = {i.id: i.tags for i in items if "tags" in i.given}
    catalogue.replace_item_tags(conn, retagged, source="import")
    return len(items)


def store_users(
    conn: psycopg.Connection[Any], users: Sequence[rec.UserRecord], *, keep_stored: bool = False
) -> int:
    """Upsert users, merging as `store_items` does (`UserRecord`): a file of `id,consent` changes
    consent and keeps time zones, addresses and locales. `updated_at` marks when consent was last
    written (an unsubscribe received before it no longer counts: tools/store/runs.py), so it moves
    only for a record that gives `consent`. Returns the users written.

    `keep_stored`: only new users are inserted, the stored ones are left as they are (a known data
    set's converted users, whose consent is made up: re-importing it must not undo an unsubscribe);
    returns the users inserted."""
    if not users:
        return 0
    users = list(by_id(users, rec.merged_user).values())
    with conn.cursor() as cur:
        _stage(
            cur,
            "stage_users",
            """id text, timezone text, locale text, channels jsonb, consent jsonb, attributes jsonb,
               given text[]""",
            (
                (
                    u.id,
                    u.timezone,
                    u.locale,
                    json.dumps(u.channels),
                    json.dumps(u.consent),
                    json.dumps(u.attributes),
                    sorted(u.given),
                )
                for u in users
            ),
        )
        cur.execute(
            """with fresh as (
                   insert into users (id, timezone, locale, channels, consent, attributes)
                   select id, coalesce(timezone, 'UTC'), locale, channels, consent, attributes
                   from stage_users
                   on conflict (id) do nothing
                   returning id)
               delete from stage_users s using fresh where s.id = fresh.id"""
        )
        if keep_stored:
            return max(cur.rowcount, 0)
        cur.execute(
            """update users u set
                   timezone = coalesce(s.timezone, u.timezone),
                   locale = case when 'locale' = any(s.given) then s.locale else u.locale end,
                   channels = case when 'channels' = any(s.given) then s.channels else u.channels end,
                   consent = case when 'consent' = any(s.given) then s.consent else u.consent end,
                   attributes = case when 'attributes' = any(s.given) then s.attributes
                                     else u.attributes || s.attributes end,
                   updated_at = case when 'consent' = any(s.given) then now() else u.updated_at end
               from stage_users s
               where s.id = u.id"""
        )
    return len(users)
