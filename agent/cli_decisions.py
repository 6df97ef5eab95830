"""`tagloop decisions …`: the decision log exported for off-policy evaluation, and dead letters."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tagloop.agent.cli_common import JsonFlag, emit
from tagloop.agent.settings import load_settings

decisions_app = typer.Typer(help="Logged decisions.", no_args_is_help=True)
err = Console(stderr=True, markup=False)

EXPORT_PROGRESS_MIN = 1_000  # an export of fewer decisions is quick: no progress lines


@decisions_app.command("export")
def decisions_export(
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Write every decision as one JSON line, for `tagloop eval ope --logs`.

    Each line: {decision_id, user_id, ts, policy, version, seed, candidates: [{item_id, score,
    source, provider, long_tail, exposure, tags}] (long_tail and exposure as the policy saw them;
    tags {tag id: weight} as stored at export time: what an offline replay of the slate policy
    needs),
    chosen: \\[item_id, ...] (slate order), propensities: \\[P(slot i = chosen\\[i] | slots before)],
    channel, send_at, context: {features..., arms: {channel: {arm, propensity, arms}, send_hour: {...}},
    outcome, trigger}, reward}  — reward is 1 when a message of the decision was opened or clicked
    (events with its message_id), else 0.
    """
    from tagloop.agent.database import connect
    from tagloop.agent.services import Tenths
    from tagloop.evals.report import check_writable
    from tagloop.tools.store.decision_log import iter_decision_log

    if out_file is not None:
        check_writable(out_file, "--out")
    with connect(load_settings()) as conn:
        total = conn.execute("select count(*) as n from decisions").fetchone()["n"]
        sink = out_file.open("w", encoding="utf-8") if out_file else sys.stdout
        tenths = Tenths(total)
        try:
            n = 0
            for record in iter_decision_log(conn):
                sink.write(json.dumps(record, default=str) + "\n")
                n += 1
                if tenths.crossed(n) and total >= EXPORT_PROGRESS_MIN:  # on stderr: stdout is the data
                    err.print(f"exported {n:,} of {total:,} decision(s)")
        finally:
            if out_file:
                sink.close()
    if out_file:
        err.print(f"wrote {n:,} decision(s) to {out_file}")


@decisions_app.command("dead-letters")
def dead_letters(
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Messages delivery gave up on (dead-lettered), newest first, with their last error."""
    from tagloop.agent.cli_common import table_of
    from tagloop.agent.database import connect
    from tagloop.tools.store.outbox import dead_count
    from tagloop.tools.store.outbox import dead_letters as dead

    with connect(load_settings()) as conn:
        rows = dead(conn, limit)
        total = dead_count(conn) if len(rows) == limit else len(rows)
    data = {"dead_letters": rows, "total": total}
    columns = ["id", "user_id", "channel", "attempts", "dead_at", "last_error"]
    shown = f"{len(rows):,} of {total:,}" if total > len(rows) else f"{len(rows):,}"
    table = table_of(f"{shown} dead letter(s)", columns, [[r[c] for c in columns] for r in rows])
    emit(data, as_json, table)
