"""`tagloop tag …`: the tag vocabulary, auto-tagging, confirmation, removal by hand, embeddings and
emerging clusters.

Thin commands over `tools/tagging/store*.py`: open the database, call one service, commit, print a
table (or one JSON object with --json). Problems that do not stop a batch (an empty vocabulary, a
dead LLM, items without text) are listed in the summary; the exit code stays 0. Options out of
range (`--k 0`, `--limit -1`, `--min-share 5`, `--history-days 1e308`, NaN) are an `InvalidInput`
before the database is opened: one `error:` line and exit 2 from agent/cli.py's main. The long
commands (`items`, `trends`) report their steps on stderr, so --json stdout stays one object.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from tagloop.agent.cli_common import JsonFlag, emit, int_option, table_of
from tagloop.agent.settings import load_settings
from tagloop.tools.errors import InvalidInput, NotFound

tag_app = typer.Typer(
    help="Tags: vocabulary, auto-tagging, embeddings, emerging clusters.", no_args_is_help=True
)
out = Console(markup=False)
err = Console(stderr=True, markup=False)
Seed = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]
MAX_K = 1000  # tags per item / related tags
MAX_DAYS = 36_500.0  # a century of history; far beyond, `now - history` leaves the calendar


def _within(
    option: str, value: float, low: float, high: float, *, low_open: bool = False, why: str = ""
) -> None:
    """`value` in [low, high] ((low, high] with low_open), a finite number."""
    inside = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not inside:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidInput(f"{option} must be a number in {bounds}{why}, got {value:g}")


def _progress(line: str) -> None:
    err.print(line)


@tag_app.command("vocab")
def vocab(
    level: Annotated[str, typer.Option(help="microgenre (each tag), genre or broad.")] = "microgenre",
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 30,
    as_json: JsonFlag = False,
) -> None:
    """Merge spelling variants, assign families and genres, and show the vocabulary with counts."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store import sync_vocabulary, vocabulary_rows

    if level not in ("microgenre", "genre", "broad"):
        raise InvalidInput(f"--level must be microgenre, genre or broad, got {level!r}")
    int_option("--limit", limit)
    with connect(load_settings()) as conn:
        sync = sync_vocabulary(conn)
        rows = vocabulary_rows(conn, level)
        conn.commit()
    problems = [] if sync.vocab.tags else ["the tag vocabulary is empty: import items with tags first"]
    data = {
        "level": level,
        "vocabulary": len(sync.vocab),
        "groups": len(rows),
        "merged": sync.merged,
        "tags": [r.__dict__ for r in rows[:limit]],
        "problems": problems,
    }
    table = table_of(
        f"tags by {level} ({len(rows):,}; {len(sync.vocab):,} tags)",
        ["name", "tags", "items", "family", "genre", "aliases"],
        [
            [r.name, r.tags, r.item_count, r.family or "", r.genre or "", ", ".join(r.aliases[:4])]
            for r in rows[:limit]
        ],
    )
    emit(data, as_json, table)
    for line in problems if not as_json else []:
        out.print(line, style="yellow")


@tag_app.command("items")
def items(
    only_untagged: Annotated[
        bool, typer.Option("--only-untagged", help="Only items without known tags.")
    ] = False,
    kind: Annotated[str | None, typer.Option(help="Only items of this kind (e.g. message).")] = None,
    k: Annotated[int, typer.Option(help=f"Most tags proposed per item (1 to {MAX_K}).")] = 10,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Deterministic path only.")] = False,
    seed: Seed = 7,
    as_json: JsonFlag = False,
) -> None:
    """Propose tags with confidences for items (keyword, LLM when configured, propagation) and store them."""
    from tagloop.agent.database import connect
    from tagloop.agent.runner import llm_of
    from tagloop.tools.tagging.store_service import tag_items

    int_option("--k", k, high=MAX_K)
    settings = load_settings()
    llm = None if no_llm else llm_of(settings)
    with connect(settings) as conn:
        report = tag_items(
            conn,
            rng=np.random.default_rng(seed),
            llm=llm,
            only_untagged=only_untagged,
            kind=kind,
            k=k,
            progress=_progress,
        )
        conn.commit()
    data = report.as_dict()
    keys = (
        "items",
        "tagged",
        "skipped_already_tagged",
        "without_text",
        "without_signal",
        "proposals",
        "provisional",
        "stored",
        "confirmed",
        "llm_batches",
        "llm_failed_batches",
        "llm_out_of_vocabulary",
    )
    emit(
        data,
        as_json,
        table_of(
            "tag items",
            ["what", "count"],
            [[key, data[key]] for key in keys] + [[f"source: {s}", n] for s, n in data["by_source"].items()],
        ),
    )
    for line in data["problems"] if not as_json else []:
        out.print(line, style="yellow")


@tag_app.command("confirm")
def confirm(
    min_users: Annotated[int, typer.Option(help="Users whose taste supports the tag.")] = 2,
    min_share: Annotated[
        float, typer.Option(help="…as a share of the item's positive users, in (0, 1].")
    ] = 0.25,
    min_lift: Annotated[
        float, typer.Option(help="…that share over the share of all users with the tag in their taste.")
    ] = 2.0,
    as_json: JsonFlag = False,
) -> None:
    """Promote provisional tags that users with the tag in their history liked or saved, more often
    than users at large do."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store_autotag import confirm_by_behaviour

    int_option("--min-users", min_users)
    _within("--min-share", min_share, 0.0, 1.0, low_open=True)
    _within("--min-lift", min_lift, 0.0, 1e6)
    with connect(load_settings()) as conn:
        n = confirm_by_behaviour(conn, min_users=min_users, min_share=min_share, min_lift=min_lift)
        conn.commit()
    emit({"confirmed": n}, as_json) if as_json else out.print(f"confirmed {n:,} provisional tag(s)")


@tag_app.command("remove")
def remove(
    item: Annotated[str, typer.Argument(help="The item's id.")],
    tag: Annotated[str, typer.Argument(help="The tag, in any spelling of a stored tag.")],
    as_json: JsonFlag = False,
) -> None:
    """Take a tag off an item for good, whatever gave it (an import, `tag items`, behaviour): later
    `tag items` runs never propose it for that item again, and imports or PUTs that still give it
    do not write it back (`tag restore` lifts this)."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store_rejections import remove_item_tag

    with connect(load_settings()) as conn:
        done = remove_item_tag(conn, item, tag)
        conn.commit()
    what = (
        f"removed {done.tag!r} ({done.removed})" if done.removed else f"{done.item!r} had no tag {done.tag!r}"
    )
    emit(done.__dict__, as_json) if as_json else out.print(
        f"{what}; imports and `tag items` will not give it to {done.item!r} again"
    )


@tag_app.command("restore")
def restore(
    item: Annotated[str, typer.Argument(help="The item's id.")],
    tag: Annotated[str, typer.Argument(help="The tag, in any spelling of a stored tag.")],
    as_json: JsonFlag = False,
) -> None:
    """Undo `tag remove` for an item: the next import, PUT or `tag items` run that gives the tag
    writes it again (nothing is written now)."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store_rejections import restore_item_tag

    with connect(load_settings()) as conn:
        done = restore_item_tag(conn, item, tag)
        conn.commit()
    what = (
        f"{done.tag!r} may be given to {done.item!r} again by the next import or `tag items` run"
        if done.restored
        else f"{done.tag!r} had not been taken off {done.item!r}: nothing to restore"
    )
    emit(done.__dict__, as_json) if as_json else out.print(what)


@tag_app.command("embed")
def embed(
    user_weight: Annotated[
        float, typer.Option(help="Weight of users' histories against item tag sets, 0 to 100.")
    ] = 0.0,
    seed: Seed = 7,
    as_json: JsonFlag = False,
) -> None:
    """Learn tag embeddings (PPMI + SVD) and store them in pgvector; families use them next."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store import sync_vocabulary
    from tagloop.tools.tagging.store_embeddings import train_and_store

    _within("--user-weight", user_weight, 0.0, 100.0)
    with connect(load_settings()) as conn:
        sync_vocabulary(conn)
        report = train_and_store(conn, np.random.default_rng(seed), user_weight=user_weight)
        sync = sync_vocabulary(conn, refresh=True)
        conn.commit()
    problems = [] if report.tags else ["the tag vocabulary is empty: import items with tags first"]
    data = {**report.__dict__, "families_set": sync.families_set, "problems": problems}
    emit(data, as_json) if as_json else out.print(
        f"embedded {report.embedded:,} of {report.tags:,} tag(s) in {report.dim} dimensions"
        + "".join(f"; {p}" for p in problems)
    )


@tag_app.command("related")
def related(
    tag: str,
    k: Annotated[int, typer.Option(help=f"How many related tags (1 to {MAX_K}).")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Tags nearest to TAG by embedding cosine (HNSW index); run `tagloop tag embed` first."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store import find_tag
    from tagloop.tools.tagging.store_embeddings import related as nearest

    int_option("--k", k, high=MAX_K)
    with connect(load_settings()) as conn:
        found = find_tag(conn, tag)
        if found is None:
            raise NotFound(f"unknown tag {tag!r}: see `tagloop tag vocab`")
        result = nearest(conn, found[0], k)
    if result is None:
        raise NotFound(f"tag {found[1]!r} has no embedding: run `tagloop tag embed` (rare tags get none)")
    data = {"tag": found[1], "related": [{"tag": t, "similarity": s} for t, s in result]}
    emit(
        data,
        as_json,
        table_of(f"tags related to {found[1]}", ["tag", "cosine"], [[t, f"{s:.3f}"] for t, s in result]),
    )


@tag_app.command("trends")
def trends(
    window_days: Annotated[float, typer.Option(help="Recent window, days.")] = 7.0,
    history_days: Annotated[
        float, typer.Option(help=f"Events read to tell new from old, days (at most {MAX_DAYS:,.0f}).")
    ] = 365.0,
    by: Annotated[
        str, typer.Option(help="Collections: auto (playlists and sessions), playlist or session.")
    ] = "auto",
    now: Annotated[
        datetime | None,
        typer.Option(
            help="Evaluate as of this time, UTC unless an offset is given.",
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
        ),
    ] = None,
    min_size: Annotated[int, typer.Option(help="Collections in the recent window.")] = 3,
    min_growth: Annotated[float, typer.Option(help="(recent + 1) / (previous + 1) at least.")] = 2.0,
    limit: Annotated[int, typer.Option(help="Most clusters listed.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Emerging tag combinations: new, growing and big enough in recent playlists or sessions."""
    from tagloop.agent.database import connect
    from tagloop.tools.tagging.store_trends import find_trends

    if by not in ("auto", "playlist", "session"):
        raise InvalidInput(f"--by must be auto, playlist or session, got {by!r}")
    _within("--history-days", history_days, 0.0, MAX_DAYS, low_open=True)
    _within(
        "--window-days", window_days, 0.0, history_days / 2, low_open=True, why=" (half of --history-days)"
    )
    int_option("--min-size", min_size)
    _within("--min-growth", min_growth, 0.0, 1e9, low_open=True)
    int_option("--limit", limit)
    as_of = (now.replace(tzinfo=UTC) if now.tzinfo is None else now) if now else datetime.now(UTC)
    with connect(load_settings()) as conn:
        report = find_trends(
            conn,
            as_of,
            window=timedelta(days=window_days),
            history=timedelta(days=history_days),
            collections=by,
            min_size=min_size,
            min_growth=min_growth,
            limit=limit,
            progress=_progress,
        )
    data = {
        "now": as_of.isoformat(),
        "collections": report.collections,
        "events": report.events,
        "trends": [t.as_dict() for t in report.trends],
    }
    emit(
        data,
        as_json,
        table_of(
            f"emerging clusters ({report.collections}s, {report.events:,} events)",
            ["name", "first seen", "growth", "size"],
            [
                [t.name, t.trend.first_seen.date(), f"{t.trend.growth:.1f}", t.trend.size]
                for t in report.trends
            ],
        ),
    )
