"""`tagloop eval tagging` (SPEC §6): how well auto-tagging recovers hidden item tags.

Learns from KNOWN item tags (`item_id,tag[,weight]`) and optional interactions
(`user_id,item_id,weight`), predicts for every item of HELD the tags it lacks in KNOWN, and
reports precision@5 / recall@10 for tagloop's `TagModel` (blend weights tuned on a validation
split carved from KNOWN, never on HELD) and for the most-popular-tags baseline. Tags are compared
after `clean_surface` (case and spacing), not merged as synonyms, so the task stays the file's.

`evaluate_tagging(known_rows, held_rows, interaction_rows, seed)` is the pure core the CLI and
bench call; `tagging_command` is the typer command registered in evals/cli.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tagloop.evals.progress import stages
from tagloop.evals.report import check_writable
from tagloop.tools.errors import InvalidInput, TagloopError
from tagloop.tools.recommender.data import csv_rows, parse_weight
from tagloop.tools.tagging.matrices import interaction_matrix, item_tag_matrix
from tagloop.tools.tagging.model import BlendWeights, TagModel, top_k
from tagloop.tools.tagging.tuning import precision_recall, tune_blend
from tagloop.tools.tagging.vocabulary import clean_surface

Row = tuple[str, str, float]
TOP_OUT = 20


@dataclass
class TaggingReport:
    tagloop: dict[str, float]
    popular_tags: dict[str, float]
    n_items: int
    weights: BlendWeights
    ranked: dict[str, list[str]] = field(default_factory=dict)
    without_evidence: int = 0  # held items with no known tag and no interaction: popularity only

    def as_json(self) -> dict[str, object]:
        return {
            "tagloop": self.tagloop,
            "popular_tags": self.popular_tags,
            "n_items": self.n_items,
            "items_without_evidence": self.without_evidence,
            "blend_weights": self.weights.as_dict(),
        }


def read_rows(path: Path, columns: tuple[str, str], what: str) -> list[Row]:
    """Rows `(a, b, weight)` of a CSV whose header has `columns` and optionally `weight` (a finite
    number >= 0, default 1, read as `eval recsys` reads it); a file without data rows is an error."""
    if not path.exists():
        raise InvalidInput(f"{what} file not found: {path}")
    rows: list[Row] = []
    for line, rec in csv_rows(path, columns):
        a, b = rec[columns[0]], rec[columns[1]]
        if not a or not b:
            raise InvalidInput(f"{path}:{line}: empty {columns[0] if not a else columns[1]}")
        rows.append((a, b, parse_weight(path, line, rec.get("weight") or "", 1.0)))
    if not rows:
        raise InvalidInput(
            f"{path}: no data rows (expected {','.join(columns)}[,weight] lines after the header)"
        )
    return rows


def _tag_rows(rows: Iterable[Row]) -> list[Row]:
    return [(item, t, w) for item, tag, w in rows if (t := clean_surface(tag))]


def evaluate_tagging(
    known_rows: list[Row],
    held_rows: list[Row],
    interaction_rows: list[Row] | None,
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
) -> TaggingReport:
    """Fit on KNOWN (+ interactions), rank missing tags for HELD items, score both rankers."""
    report = progress or (lambda _msg, _frac: None)
    known_rows, held_rows = _tag_rows(known_rows), _tag_rows(held_rows)
    if not known_rows:
        raise InvalidInput("the known item tags are empty: nothing to learn a tag vocabulary from")
    held: dict[str, set[str]] = {}
    for item, tag, _ in held_rows:
        held.setdefault(item, set()).add(tag)
    items = list(
        dict.fromkeys([r[0] for r in known_rows] + list(held) + [r[1] for r in interaction_rows or []])
    )
    known = item_tag_matrix(known_rows, items=items)
    interactions = interaction_matrix(interaction_rows, items) if interaction_rows else None
    item_ix = known.item_index()
    lacking = {i: held[i] - set(known.tags_of(item_ix[i])) for i in held}  # what each item must recover
    held_items = [i for i in held if lacking[i]]
    if not held_items:
        raise InvalidInput(
            f"no item of the held-out file has a tag that KNOWN lacks ({len(held)} items, every tag "
            "already in KNOWN): there is nothing to recover (is HELD the same file as KNOWN?)"
        )
    rng = np.random.default_rng(seed)
    report("tuning blend weights on a validation split of KNOWN", 0.0)
    weights = tune_blend(known, interactions, None, rng, progress=lambda m: report(m, 0.05))
    report("fitting the model on KNOWN", 0.3)
    model = TagModel(known, interactions, None, rng)
    truth = [lacking[i] for i in held_items]
    counts = np.asarray(known.binary().sum(axis=0)).ravel()
    popular_order = [known.tags[j] for j in np.argsort(-counts, kind="stable")]
    popular_ranked: list[list[str]] = []
    ranked: dict[str, list[str]] = {}
    batch = 1000
    for start in range(0, len(held_items), batch):
        chunk = held_items[start : start + batch]
        rows = np.array([item_ix[i] for i in chunk], dtype=np.int64)
        scores = model.blend(rows, model.signals(rows), weights)
        best = top_k(scores, TOP_OUT, prior=model.tag_freq)  # no evidence: popularity decides
        for b, item in enumerate(chunk):
            ranked[item] = [model.tags[j] for j in best[b] if np.isfinite(scores[b, j])]
            have = set(known.tags_of(item_ix[item]))
            popular_ranked.append(
                [t for t in popular_order[: TOP_OUT + len(have)] if t not in have][:TOP_OUT]
            )
        report("ranking tags for held-out items", 0.3 + 0.7 * min(1.0, (start + batch) / len(held_items)))
    p5, r10 = precision_recall([ranked[i] for i in held_items], truth)
    pp5, pr10 = precision_recall(popular_ranked, truth)
    seen = {r[0] for r in known_rows} | {r[1] for r in interaction_rows or []}
    return TaggingReport(
        tagloop={"precision@5": p5, "recall@10": r10},
        popular_tags={"precision@5": pp5, "recall@10": pr10},
        n_items=len(held_items),
        weights=weights,
        ranked=ranked,
        without_evidence=sum(1 for i in held_items if i not in seen),
    )


def _each_tenth(say: Callable[[str], None]) -> Callable[[str, float], None]:
    """`say("MESSAGE (NN%)")` once per change of message or tenth of the way."""
    last: list[tuple[str, int]] = []

    def report(message: str, fraction: float) -> None:
        key = (message, int(fraction * 10))
        if not last or last[-1] != key:
            last[:] = [key]
            say(f"{message} ({fraction:.0%})")

    return report


def tagging_command(
    item_tags: Path = typer.Option(..., "--item-tags", help="KNOWN item tags: item_id,tag[,weight]"),
    holdout: Path = typer.Option(..., "--holdout", help="HELD item tags to recover: item_id,tag[,weight]"),
    interactions: Path | None = typer.Option(None, "--interactions", help="user_id,item_id,weight"),
    tags_out: Path | None = typer.Option(None, "--tags-out", help="write item_id,tag,rank (top 20 per item)"),
    seed: int = typer.Option(0, "--seed", help="seed of the validation split and the SVD"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Hide-and-recover evaluation of auto-tagging against the most-popular-tags baseline."""
    err = Console(stderr=True, markup=False)
    try:
        if tags_out is not None:
            check_writable(tags_out, "--tags-out")  # before the evaluation, not after it
        known = read_rows(item_tags, ("item_id", "tag"), "--item-tags")
        held = read_rows(holdout, ("item_id", "tag"), "--holdout")
        inter = read_rows(interactions, ("user_id", "item_id"), "--interactions") if interactions else None
        if err.is_terminal:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("tagging eval", total=1.0)
                result = evaluate_tagging(
                    known,
                    held,
                    inter,
                    seed,
                    lambda msg, frac: bar.update(task, description=msg, completed=frac),
                )
        else:  # a log file or a pipe: the transient bar would print nothing for the whole run
            with stages(err, "tagging eval") as say:
                result = evaluate_tagging(known, held, inter, seed, _each_tenth(say))
        if tags_out is not None:
            with tags_out.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["item_id", "tag", "rank"])
                for item, tags in result.ranked.items():
                    writer.writerows((item, tag, rank) for rank, tag in enumerate(tags, start=1))
    except TagloopError as exc:
        typer.echo(f"error: {exc}", err=True)  # unwrapped: paths and fields stay on one line
        raise typer.Exit(code=2) from exc
    if result.without_evidence:  # e.g. a HELD file of another data set: the scores mean little
        err.print(
            f"warning: {result.without_evidence:,} of {result.n_items:,} held-out item(s) appear in neither "
            "--item-tags nor --interactions: they are ranked by tag popularity alone"
        )
    if as_json:
        typer.echo(json.dumps(result.as_json()))
        return
    table = Table(title=f"tag recovery on {result.n_items} items")
    for col in ("ranker", "precision@5", "recall@10"):
        table.add_column(col)
    for name, metrics in (("tagloop", result.tagloop), ("popular_tags", result.popular_tags)):
        table.add_row(name, f"{metrics['precision@5']:.4f}", f"{metrics['recall@10']:.4f}")
    Console(markup=False).print(table)
