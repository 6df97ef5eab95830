"""`tagloop tag items` as one service call: vocabulary sync, auto-tagging, storage, confirmation.

`tag_items(conn, rng=..., llm=..., only_untagged=..., kind=..., progress=...)`:
1. `sync_vocabulary` (spelling variants merged, families written) — the vocabulary proposals use;
2. `autotag` over the items of `kind` (all kinds by default; message templates are items of kind
   `message`, so they are tagged the same way): keyword matching, the LLM when one is given, and
   tags propagated from co-occurring tags, co-consumed items and the same provider — `batch`
   target items at a time (the model scores dense item × tag arrays, so this bounds memory), with
   the keyword statistics (`keyword_stats`) computed once over every item read;
3. `_within_budget`: an item holds at most `k` auto tags, confirmed ones included (the summary's
   counts are taken after this cut, `over_budget` counts items with no budget left);
4. `store_proposals` for the targets (all items, or those without known tags with
   `only_untagged`): their auto rows are replaced, import and confirmed rows never touched;
5. `confirm_by_behaviour` promotes provisional tags that users' behaviour supports.
`progress`, when given, gets one line per step and per batch (the CLI prints them on stderr).
The report carries `AutotagSummary` plus what was stored; a dead LLM, an empty vocabulary or items
without text are counted there, never raised. The caller commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psycopg

from tagloop.tools.errors import InvalidInput
from tagloop.tools.llm import LLM
from tagloop.tools.tagging.autotag import AutotagResult, AutotagSummary, TagProposal, autotag
from tagloop.tools.tagging.sources import keyword_stats
from tagloop.tools.tagging.store import sync_vocabulary
from tagloop.tools.tagging.store_autotag import autotag_inputs, confirm_by_behaviour, store_proposals


@dataclass
class TagItemsReport:
    summary: AutotagSummary
    llm: bool  # an LLM was configured and asked
    vocabulary: int
    merged_variants: int
    stored: int  # proposal rows written
    confirmed: int  # provisional tags promoted by behaviour
    by_source: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.summary),
            "llm": self.llm,
            "vocabulary": self.vocabulary,
            "merged_variants": self.merged_variants,
            "stored": self.stored,
            "confirmed": self.confirmed,
            "by_source": self.by_source,
        }


def _add(total: AutotagSummary, part: AutotagSummary) -> None:
    """Add one batch's counts to the running summary (items and skips are counted once, by the caller)."""
    for name in ("tagged", "without_text", "without_signal", "proposals", "provisional", "llm_batches",
                 "llm_failed_batches", "llm_out_of_vocabulary"):  # fmt: skip
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.problems.extend(p for p in part.problems if p not in total.problems)


def _within_budget(
    conn: psycopg.Connection[Any], targets: list[str], proposals: list[TagProposal], k: int
) -> tuple[list[TagProposal], int]:
    """At most `k` auto tags per item, tags confirmed by earlier runs included: an item keeps its
    best `k − confirmed` proposals. Without the budget every run proposed ten more tags beyond the
    confirmed ones, and confirmed some of them (21,981, then 27,697, then 31,925 on Last.fm).
    Confirmed tags are never removed, so an item confirmed beyond a smaller `k` keeps them and gets
    nothing new. Returns the proposals kept and how many targets have no budget left."""
    rows = conn.execute("select item_id, count(*) as n from item_tags where source = 'confirmed' group by 1")
    confirmed = {r["item_id"]: int(r["n"]) for r in rows}
    if not confirmed:
        return proposals, 0
    over = sum(confirmed.get(item, 0) >= k for item in targets)
    by_item: dict[str, list[TagProposal]] = {}
    for p in proposals:
        by_item.setdefault(p.item_id, []).append(p)
    kept: list[TagProposal] = []
    for item, found in by_item.items():
        budget = k - confirmed.get(item, 0)
        if budget > 0:
            kept += sorted(found, key=lambda p: -p.confidence)[:budget]
    return kept, over


def tag_items(
    conn: psycopg.Connection[Any],
    *,
    rng: np.random.Generator,
    llm: LLM | None = None,
    only_untagged: bool = False,
    kind: str | None = None,
    k: int = 10,
    confirm: bool = True,
    batch: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> TagItemsReport:
    """Propose, store and confirm tags for the catalogue's items (module docstring)."""
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    if batch < 1:
        raise InvalidInput(f"batch must be at least 1, got {batch}")

    def say(line: str) -> None:
        if progress is not None:
            progress(line)

    say("tag items: syncing the tag vocabulary")
    sync = sync_vocabulary(conn)
    say(f"tag items: {len(sync.vocab):,} tags; reading items, known tags and listening")
    inputs = autotag_inputs(conn, kind)
    tagged = {item for item, name, _ in inputs.known if sync.vocab.canonical(name)}
    chosen = [it for it in inputs.items if not (only_untagged and it.item_id in tagged)]
    summary = AutotagSummary(items=len(inputs.items), skipped_already_tagged=len(inputs.items) - len(chosen))
    keywords = keyword_stats(inputs.items, inputs.known, sync.vocab)
    proposals: list[TagProposal] = []
    starts = range(0, len(chosen), batch) if chosen else range(1 if not sync.vocab.tags else 0)
    say(
        f"tag items: proposing tags for {len(chosen):,} of {len(inputs.items):,} item(s)"
        f" ({len(inputs.known):,} known tag rows, {len(inputs.interactions):,} user-item pairs)"
    )
    for start in starts:  # with an empty vocabulary, one call reports it
        part = autotag(
            chosen[start : start + batch],
            sync.vocab,
            inputs.known,
            inputs.interactions,
            rng=rng,
            llm=llm,
            providers=inputs.providers,
            k=k,
            keywords=keywords,
        )
        proposals.extend(part.proposals)
        _add(summary, part.summary)
        if chosen:
            say(f"tag items: {min(start + batch, len(chosen)):,} of {len(chosen):,} item(s) done")
    targets = [it.item_id for it in chosen]
    proposals, summary.over_budget = _within_budget(conn, targets, proposals, k)
    # the counts describe what is stored, not what the budget cut
    summary.proposals, summary.provisional = len(proposals), sum(p.provisional for p in proposals)
    summary.tagged = len({p.item_id for p in proposals})
    result = AutotagResult(proposals, summary)
    if sync.vocab.tags:
        say(f"tag items: storing {len(proposals):,} proposal(s)")
    stored = store_proposals(conn, targets, result.proposals) if sync.vocab.tags else 0
    if not inputs.items:
        result.summary.problems.append("no items to tag" + (f" of kind {kind!r}" if kind else ""))
    if result.summary.without_text:
        result.summary.problems.append(
            f"{result.summary.without_text} item(s) have no title, text or attributes: tags come from "
            "co-consumption and provider only"
        )
    if confirm:
        say("tag items: confirming provisional tags by behaviour")
    confirmed = confirm_by_behaviour(conn) if confirm else 0
    by_source: dict[str, int] = {}
    for p in result.proposals:
        by_source[p.source] = by_source.get(p.source, 0) + 1
    return TagItemsReport(
        result.summary,
        llm is not None,
        len(sync.vocab),
        sum(len(v) for v in sync.merged.values()),
        stored,
        confirmed,
        dict(sorted(by_source.items())),
    )
