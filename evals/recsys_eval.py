"""`tagloop eval recsys` (SPEC §6): train the recommender on TRAIN, rank for every TEST user.

Protocol and documented handling of imperfect input:
- catalogue = items of TRAIN plus items named in --item-tags (tag-only items are cold items the
  model can still rank from tags); a test user's TRAIN items are excluded from their ranking;
- a TEST user absent from TRAIN is a cold user: still ranked (zero history → popularity order);
- TEST items unknown to the catalogue stay relevant (they count in recall's denominator) but no
  model can rank them; TEST rows repeating one of the user's TRAIN items are dropped;
- duplicate rows are summed; empty files, missing columns and bad weights are `InvalidInput`;
- coverage@k = distinct items in anyone's top k / n_items, where n_items counts every item the
  model may rank (TRAIN items and --item-tags items) or TEST names (so coverage ≤ 1; on the Last.fm
  split that is 18,022 items, not the 17,632 of artists.dat that bench/recsys.py divides by);
- n_users counts the test users who are scored: a user whose every TEST item is one of their
  TRAIN items has nothing left to find and is skipped (n_users_skipped);
- the popularity baseline ranks by number of TRAIN users per item, with the same exclusions.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import scipy.sparse as sp
import typer
from rich.console import Console
from rich.table import Table

from tagloop.evals.metrics import ranking_report
from tagloop.evals.progress import stages
from tagloop.evals.report import check_writable
from tagloop.tools.errors import InvalidInput, TagloopError
from tagloop.tools.recommender.data import (
    Interactions,
    build_interactions,
    build_item_tags,
    read_item_tags,
    read_triples,
)
from tagloop.tools.recommender.model import RecModel, RecParams, fit

RECS_DEPTH = 50


@dataclass(frozen=True)
class RecsysResult:
    tagloop: dict[str, float]
    popularity: dict[str, float]
    n_users: int  # test users scored (with at least one TEST item not among their TRAIN items)
    n_users_skipped: int  # test users with nothing left to score
    n_items: int  # coverage@k's denominator
    test_user_ids: list[str]
    tagloop_ranked: np.ndarray
    item_ids: np.ndarray

    def as_json(self) -> dict[str, object]:
        return {
            "tagloop": self.tagloop,
            "popularity": self.popularity,
            "n_users": self.n_users,
            "n_users_skipped": self.n_users_skipped,
            "n_items": self.n_items,
        }


def test_targets(
    train: Interactions, test_triples: list[tuple[str, str, float]]
) -> tuple[list[str], sp.csr_matrix, list[np.ndarray]]:
    """Test users in file order, their TRAIN rows (zero rows for cold users), relevant indices
    (items unknown to the catalogue get distinct negative indices so they can never be hit)."""
    users = train.user_index()
    items = train.item_index()
    order: dict[str, list[str]] = {}
    for user, item, _ in test_triples:
        order.setdefault(user, []).append(item)
    test_users = list(order)
    rows = [users.get(u, -1) for u in test_users]
    exclude = sp.vstack(
        [train.matrix[r] if r >= 0 else sp.csr_matrix((1, train.matrix.shape[1])) for r in rows]
    ).tocsr()
    unknown: dict[str, int] = {}
    relevant = []
    for n, user in enumerate(test_users):
        seen = set(exclude.indices[exclude.indptr[n] : exclude.indptr[n + 1]].tolist())
        rel = []
        for item in dict.fromkeys(order[user]):
            idx = items.get(item)
            if idx is None:
                idx = unknown.setdefault(item, -2 - len(unknown))
            if idx not in seen:
                rel.append(idx)
        relevant.append(np.asarray(rel, dtype=np.int64))
    return test_users, exclude, relevant


def popularity_rank(train: Interactions, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Top-k by number of TRAIN users per item, excluding each user's TRAIN items."""
    counts = np.asarray((train.matrix > 0).sum(axis=0)).ravel().astype(np.float64)
    order = np.argsort(-counts, kind="stable")[: k + max(int(np.diff(exclude.indptr).max(initial=0)), 0)]
    ranked = np.full((exclude.shape[0], k), -1, dtype=np.int64)
    for u in range(exclude.shape[0]):
        seen = exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]]
        picks = order[~np.isin(order, seen)][:k]
        ranked[u, : picks.size] = picks
    return ranked


def run_recsys(
    train_path: Path,
    test_path: Path,
    tags_path: Path | None,
    k: int,
    params: RecParams,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> RecsysResult:
    """Load, train, rank and score; the pure core of the command (no printing)."""
    say = progress or (lambda _msg: None)
    train_triples = read_triples(train_path)
    test_triples = read_triples(test_path)
    tag_triples = read_item_tags(tags_path) if tags_path is not None else []
    train_items = list(dict.fromkeys(item for _, item, _ in train_triples))
    tag_only = [i for i in dict.fromkeys(item for item, _, _ in tag_triples) if i not in set(train_items)]
    train = build_interactions(train_triples, train_items + tag_only)
    item_tags = build_item_tags(tag_triples, list(train.item_ids)) if tag_triples else None
    users, exclude, relevant = test_targets(train, test_triples)
    if not any(rel.size for rel in relevant):
        raise InvalidInput(
            f"no user of TEST has an item outside their TRAIN items ({len(users)} users): there is "
            "nothing to score (is TEST the same file as TRAIN?)"
        )
    say(f"training on {train.matrix.shape[0]} users × {train.matrix.shape[1]} items")
    model: RecModel = fit(train, item_tags, params, np.random.default_rng(seed), say)
    say(f"ranking {len(users)} test users")
    depth = max(RECS_DEPTH, 20, k)
    vectors = model.user_vectors(exclude)
    ranked, _ = model.recommend(vectors, depth, exclude)
    # every item the ranking may name (tag-only ones too) or the test set holds: coverage ≤ 1
    catalogue = len(set(train.item_ids) | {item for _, item, _ in test_triples})
    pop_ranked = popularity_rank(train, exclude, max(20, k))
    scored = sum(1 for rel in relevant if rel.size)
    return RecsysResult(
        tagloop=ranking_report(ranked, relevant, catalogue, k),
        popularity=ranking_report(pop_ranked, relevant, catalogue, k),
        n_users=scored,
        n_users_skipped=len(users) - scored,
        n_items=catalogue,
        test_user_ids=users,
        tagloop_ranked=ranked,
        item_ids=model.item_ids,
    )


def write_recs(path: Path, result: RecsysResult) -> None:
    """`user_id,item_id,rank` (rank from 1) for the top 50 of each test user."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")  # quotes an id holding a comma or a quote
        writer.writerow(["user_id", "item_id", "rank"])
        for user, row in zip(result.test_user_ids, result.tagloop_ranked, strict=True):
            ranks = enumerate(row[:RECS_DEPTH], start=1)
            writer.writerows([user, result.item_ids[idx], rank] for rank, idx in ranks if idx >= 0)


def recsys_command(
    train: Annotated[Path, typer.Option("--train", help="TRAIN.csv: user_id,item_id,weight[,ts]")],
    test: Annotated[Path, typer.Option("--test", help="TEST.csv: user_id,item_id,weight[,ts]")],
    item_tags: Annotated[
        Path | None, typer.Option("--item-tags", help="TAGS.csv: item_id,tag[,weight]")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="cut-off of ndcg/hit/coverage")] = 10,
    recs_out: Annotated[Path | None, typer.Option("--recs-out", help="write user_id,item_id,rank")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the randomised SVD")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """Train tagloop's recommender on TRAIN and score every TEST user against popularity."""
    err = Console(stderr=True, markup=False)
    try:
        if k < 1:
            raise TagloopError(f"--k must be >= 1, got {k}")
        if recs_out is not None:
            check_writable(recs_out, "--recs-out")  # before the evaluation, not after it
        with stages(err, "recsys eval") as say:
            result = run_recsys(train, test, item_tags, k, RecParams(), seed, say)
        if recs_out is not None:
            write_recs(recs_out, result)
    except TagloopError as exc:
        typer.echo(f"error: {exc}", err=True)  # unwrapped: paths and fields stay on one line
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    skipped = f" ({result.n_users_skipped} skipped: nothing left to find)" if result.n_users_skipped else ""
    table = Table(title=f"recsys: {result.n_users} test users scored{skipped}, {result.n_items} items")
    table.add_column("model")
    for name in result.tagloop:
        table.add_column(name, justify="right")
    for model_name, metrics in (("tagloop", result.tagloop), ("popularity", result.popularity)):
        table.add_row(model_name, *(f"{v:.4f}" for v in metrics.values()))
    Console(markup=False).print(table)
