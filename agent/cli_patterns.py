"""`tagloop patterns …`: what the event stream says, as the agent's candidate sources see it.

Thin commands over tools/patterns*.py (read-only): co-likes ("fans of X also like Y", with support,
confidence and lift), sequences ("A, B, C → D"), trends with their lifetime (rise, peak, decay) and
timing per tag (hour of week, weekday vs weekend in each user's own time zone). Each prints a table
or, with --json, one JSON object; `trends` and `timing` draw a plot with --plot (a PNG, or any
format matplotlib writes, chosen by the file's extension; a name without one gets `.png`). The
plot path is checked before any work and the path printed is the file written. When the window
ending at --now holds no positive events, the message says when the latest event was, so a data
set recorded in the past (Last.fm) is one `--now` away. Numbers are bounded (windows up to 100
years, trends over up to 2 years of days, sessions up to a week) and a seed or history entry the
store does not know is an error, not an empty result; a known one with no co-likes or nothing
following it gives an empty list with --json (exit 0) and a note on stderr saying so.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from tagloop.agent.cli_common import JsonFlag, emit, instant, int_option, plot_path, table_of
from tagloop.agent.cli_patterns_plots import plot_timing, plot_trends
from tagloop.agent.settings import load_settings
from tagloop.tools.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import psycopg

    from tagloop.tools.patterns_trends import Trend

patterns_app = typer.Typer(
    help="Patterns mined from the event stream: co-likes, sequences, trends, timing per tag.",
    no_args_is_help=True,
)
out = Console(markup=False)
err = Console(markup=False, stderr=True, soft_wrap=True, highlight=False)
Now = Annotated[str | None, typer.Option("--now", help="End of the window (RFC 3339; default now).")]
LevelOpt = Annotated[str, typer.Option("--level", help="item or tag.")]
K = Annotated[int, typer.Option("--k", help="How many to show.")]
PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", help="Also draw a plot here (.png, or .svg, .pdf, … by the extension)."),
]
MAX_WINDOW_DAYS = 36_500  # --window-days: 100 years
MAX_TREND_DAYS = 730  # --days of trends: a keys × days matrix of daily counts
MAX_SESSION_MINUTES = 7 * 24 * 60


def _level(level: str) -> Any:
    if level not in ("item", "tag"):
        raise InvalidInput(f"--level must be item or tag, got {level!r}")
    return level


def _since(at: datetime, window: timedelta, option: str) -> datetime:
    """`at − window`, or InvalidInput when that is before year 1."""
    try:
        return at - window
    except OverflowError:
        raise InvalidInput(f"{option} reaches before year 1 from {at.isoformat()}") from None


def _resolve(conn: psycopg.Connection[Any], keys: list[str], level: Any) -> list[str]:
    """`keys` as the store holds them (tags by name, alias or spelling, as `tagloop tag` reads
    them); NotFound naming the items (or tags) it does not hold."""
    from tagloop.tools.patterns import resolve_keys

    found = resolve_keys(conn, keys, level)
    known = {key: name for key, name in found.items() if name is not None}
    missing = [key for key in found if key not in known]
    if not missing:
        return [known[key] for key in keys]
    what = ("item" if level == "item" else "tag") + ("s" if len(missing) > 1 else "")
    hint = ": see `tagloop tag vocab`" if level == "tag" else ""
    if level == "item" and all(resolve_keys(conn, missing, "tag").values()):
        hint = (
            " (they are tags: pass --level tag)" if len(missing) > 1 else " (it is a tag: pass --level tag)"
        )
    raise NotFound(f"unknown {what} {', '.join(map(repr, missing))}{hint}")


def _require_events(conn: psycopg.Connection[Any], since: datetime, now: datetime) -> None:
    """NotFound naming the latest event when the window holds no positive events."""
    from tagloop.tools.patterns import POSITIVE

    row = conn.execute(
        "select exists (select 1 from events where type = any(%(pos)s) and ts > %(since)s"
        " and ts <= %(now)s) as any_, (select max(ts) from events) as latest",
        {"pos": POSITIVE, "since": since, "now": now},
    ).fetchone()
    if row and not row["any_"]:
        latest = row["latest"]
        hint = (
            f"; the latest event is at {latest.isoformat()} (pass --now)"
            if latest
            else "; import events first"
        )
        raise NotFound(f"no positive events between {since.isoformat()} and {now.isoformat()}{hint}")


def _titles(conn: psycopg.Connection[Any], keys: list[str]) -> dict[str, str]:
    rows = conn.execute("select id, title from items where id = any(%(ids)s)", {"ids": keys}).fetchall()
    return {r["id"]: r["title"] or "" for r in rows}


@patterns_app.command("co-likes")
def co_likes_command(
    seed: Annotated[str, typer.Argument(metavar="SEED", help="An item id (or a tag with --level tag).")],
    level: LevelOpt = "item",
    k: K = 20,
    min_support: Annotated[int, typer.Option(help="Fewest users liking both.")] = 2,
    window_days: Annotated[int, typer.Option(help="Window in days.")] = 365,
    now: Now = None,
    as_json: JsonFlag = False,
) -> None:
    """Fans of SEED also like …: ranked by shrunk lift, with support, confidence and lift."""
    from tagloop.agent.database import connect
    from tagloop.tools.patterns import co_likes

    at, lvl = instant(now, "--now"), _level(level)
    int_option("--k", k)
    int_option("--min-support", min_support)
    window = timedelta(days=int_option("--window-days", window_days, high=MAX_WINDOW_DAYS))
    since = _since(at, window, "--window-days")
    with connect(load_settings()) as conn:
        _require_events(conn, since, at)
        (seed,) = _resolve(conn, [seed], lvl)
        if lvl == "tag":
            err.print(
                f"co-likes of tag {seed!r}: reading {window_days:,} days of events (slow on large stores)"
            )
        found = co_likes(conn, seed, now=at, level=lvl, k=k, min_support=min_support, window=window)
        titles = _titles(conn, [c.key for c in found]) if lvl == "item" else {}
    rows = [{**asdict(c), "title": titles.get(c.key)} for c in found]
    table = table_of(
        f"fans of {seed} also like ({lvl}s, {window_days} days to {at:%Y-%m-%d})",
        ["key", "title", "support", "confidence", "lift", "score"],
        [
            [
                r["key"],
                r["title"] or "",
                r["support"],
                f"{r['confidence']:.3f}",
                f"{r['lift']:.2f}",
                f"{r['score']:.3f}",
            ]
            for r in rows
        ],
    )
    if not found:
        err.print(
            f"no co-likes of {seed!r}: no {lvl} is liked by {min_support} or more of its fans in the"
            f" {window_days} days to {at:%Y-%m-%d} (try a lower --min-support or more --window-days)"
        )
    if found or as_json:  # nothing to show is an empty list, not an error
        emit({"seed": seed, "level": lvl, "now": at.isoformat(), "co_likes": rows}, as_json, table)


@patterns_app.command("next")
def next_command(
    history: Annotated[list[str], typer.Argument(metavar="A B C …", help="What came before, oldest first.")],
    level: LevelOpt = "item",
    k: K = 10,
    window_days: Annotated[int, typer.Option(help="Window in days.")] = 90,
    session_minutes: Annotated[int, typer.Option(help="A gap longer than this starts a new session.")] = 30,
    now: Now = None,
    as_json: JsonFlag = False,
) -> None:
    """A, B, C → likely next items (or tags): first-order transitions within sessions, latest weighs most."""
    from tagloop.agent.database import connect
    from tagloop.tools.patterns import sequence_next

    at, lvl = instant(now, "--now"), _level(level)
    int_option("--k", k)
    window = timedelta(days=int_option("--window-days", window_days, high=MAX_WINDOW_DAYS))
    gap = timedelta(minutes=int_option("--session-minutes", session_minutes, high=MAX_SESSION_MINUTES))
    since = _since(at, window, "--window-days")
    with connect(load_settings()) as conn:
        _require_events(conn, since, at)
        history = _resolve(conn, history, lvl)
        found = sequence_next(conn, history, now=at, level=lvl, k=k, window=window, session_gap=gap)
        titles = _titles(conn, [s.key for s in found]) if lvl == "item" else {}
    rows = [{**asdict(s), "title": titles.get(s.key)} for s in found]
    table = table_of(
        f"after {' → '.join(history)} ({lvl}s)",
        ["key", "title", "probability", "transitions"],
        [[r["key"], r["title"] or "", f"{r['score']:.3f}", r["support"]] for r in rows],
    )
    if not found:
        err.print(
            f"nothing follows {' → '.join(history)}: no {lvl} outside the history comes next within"
            f" {session_minutes} minutes in the {window_days} days to {at:%Y-%m-%d}"
            " (try more --session-minutes or --window-days)"
        )
    if found or as_json:  # nothing to show is an empty list, not an error
        emit({"history": history, "level": lvl, "now": at.isoformat(), "next": rows}, as_json, table)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _trend_row(t: Trend) -> dict[str, Any]:
    """One trend for JSON; a rate or duration that cannot be estimated is None (null)."""
    life = t.lifetime
    return {
        "key": t.key,
        "phase": life.phase,
        "peak_date": t.peak_date.isoformat(),
        "rise_per_day": round(life.rise_per_day, 4),
        "decay_per_day": _rounded(life.decay_per_day, 4),
        "decay_observed": life.decay_observed,
        "half_life_days": _rounded(life.half_life_days, 2),
        "lifetime_days": _rounded(life.lifetime_days, 2),
        "days_left": _rounded(life.days_left, 2),
        "score": round(life.score, 4),
        "daily": t.daily,
    }


def _cell(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _decay_cell(row: dict[str, Any]) -> str:
    if row["decay_per_day"] is None:
        return "unknown"
    return f"{row['decay_per_day']}{'' if row['decay_observed'] else ' (assumed)'}"


@patterns_app.command("trends")
def trends_command(
    level: LevelOpt = "tag",
    days: Annotated[int, typer.Option(help="Days of daily counts.")] = 28,
    k: K = 20,
    min_events: Annotated[int, typer.Option(help="Fewest events in the window (at least 1).")] = 10,
    include_over: Annotated[bool, typer.Option(help="Also list trends that are over.")] = False,
    now: Now = None,
    plot: PlotOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Trending tags (or items) with each trend's phase, peak, rise and decay rates and lifetime."""
    from tagloop.agent.database import connect
    from tagloop.tools.patterns_trends import trending

    at, lvl = instant(now, "--now"), _level(level)
    int_option("--k", k)
    int_option("--min-events", min_events)
    if days < 7:
        raise InvalidInput(f"--days must be at least 7 (a week of baseline), got {days}")
    int_option("--days", days, high=MAX_TREND_DAYS)
    since = _since(at, timedelta(days=days), "--days")
    plot_file = plot_path(plot)
    with connect(load_settings()) as conn:
        _require_events(conn, since, at)
        found = trending(
            conn, now=at, level=lvl, days=days, k=k, min_events=min_events, include_over=include_over
        )
        titles = _titles(conn, [t.key for t in found]) if lvl == "item" else {}
    rows = [{**_trend_row(t), "title": titles.get(t.key)} for t in found]
    data: dict[str, Any] = {"level": lvl, "now": at.isoformat(), "days": days, "trends": rows}
    if plot_file is not None:
        data["plot"] = str(plot_trends(rows, at, days, plot_file))
    # an item's id (what `co-likes ID` takes) and its title apart; a tag is its own name
    named = ["key", "title"] if lvl == "item" else ["key"]
    table = table_of(
        f"trending {lvl}s ({days} days to {at:%Y-%m-%d})",
        [*named, "phase", "peak", "rise/day", "decay/day", "half-life d", "days left", "lifetime d"],
        [
            [
                *(r[c] or "" for c in named),
                r["phase"],
                r["peak_date"],
                r["rise_per_day"],
                _decay_cell(r),
                _cell(r["half_life_days"]),
                _cell(r["days_left"]),
                _cell(r["lifetime_days"]),
            ]
            for r in rows
        ],
    )
    emit(data, as_json, table)
    if plot_file is not None and not as_json:
        out.print(f"plot: {data['plot']}")


@patterns_app.command("timing")
def timing_command(
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only these tags (repeatable).")] = None,
    k: K = 20,
    min_events: Annotated[int, typer.Option(help="Fewest events per tag (at least 1).")] = 20,
    window_days: Annotated[int, typer.Option(help="Window in days.")] = 90,
    now: Now = None,
    plot: PlotOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """When each tag is played: weekend share and lift, peak hours of the week (users' own zones)."""
    from tagloop.agent.database import connect
    from tagloop.tools.patterns_timing import tag_timing

    at = instant(now, "--now")
    int_option("--k", k)
    int_option("--min-events", min_events)
    window = timedelta(days=int_option("--window-days", window_days, high=MAX_WINDOW_DAYS))
    since = _since(at, window, "--window-days")
    plot_file = plot_path(plot)
    with connect(load_settings()) as conn:
        _require_events(conn, since, at)
        if tag:
            tag = list(dict.fromkeys(_resolve(conn, tag, "tag")))
        found = tag_timing(
            conn, now=at, tags=tag or None, window=window, min_events=min_events, progress=err.print
        )
    if tag:
        missing = [t for t in tag if t not in found]
        if missing:
            raise NotFound(f"no timing for {', '.join(map(repr, missing))}: fewer than {min_events} events")
    ranked = sorted(found.values(), key=lambda t: (-t.events, t.tag))[:k]
    data: dict[str, Any] = {"now": at.isoformat(), "tags": [asdict(t) for t in ranked]}
    if plot_file is not None:
        data["plot"] = str(plot_timing(ranked[:6], plot_file))
    table = table_of(
        f"when tags are played ({window_days} days to {at:%Y-%m-%d})",
        ["tag", "events", "weekend share", "weekend lift", "peak hours"],
        [[t.tag, t.events, t.weekend_share, t.weekend_lift, ", ".join(t.peak_hours)] for t in ranked],
    )
    emit(data, as_json, table)
    if plot_file is not None and not as_json:
        out.print(f"plot: {data['plot']}")
